package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	natpmp "github.com/jackpal/go-nat-pmp"
	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"
)

// natpmpTimeout bounds one NAT-PMP call (go-nat-pmp retransmits after 250
// ms, doubling, until it; an ICMP port unreachable ends it at once).
const natpmpTimeout = 2 * time.Second

// natpmpMapper is a NAT-PMP client (RFC 6886) for one gateway, over
// jackpal/go-nat-pmp. That library opens its own sockets with the net
// package (it has no hook for another network), so the client uses it only
// on the system network (see systemNet); on any other transport.Net,
// NAT-PMP is skipped and PCP, which is a superset, is our own code there.
// go-nat-pmp calls take no context: each is bounded by natpmpTimeout.
type natpmpMapper struct {
	client *natpmp.Client
	gw     netip.Addr
	local  netip.Addr
	now    func() time.Time

	epoch    epochClock
	external netip.Addr // the gateway's external address, asked once per session
}

func newNATPMPMapper(gw, local netip.Addr, now func() time.Time) *natpmpMapper {
	return &natpmpMapper{client: natpmp.NewClientWithLocalAndTimeout(gw.AsSlice(), local.AsSlice(), natpmpTimeout), gw: gw, local: local, now: now}
}

// systemNet reports whether n is the system network, the only one
// go-nat-pmp's sockets (and /proc/net/route) belong to.
func systemNet(n transport.Net) bool {
	_, ok := n.(*stdnet.Net)
	return ok
}

func (p *natpmpMapper) protocol() Protocol { return NATPMP }

func (p *natpmpMapper) add(ctx context.Context, req request, prev *Mapping) (Mapping, error) {
	if err := ctx.Err(); err != nil {
		return Mapping{}, err
	}
	if !p.external.IsValid() {
		if err := p.askExternal(); err != nil {
			return Mapping{}, err
		}
	}
	suggest := req.internal.Port()
	if prev != nil {
		suggest = prev.External.Port()
	}
	res, err := p.client.AddPortMapping(string(req.transport), int(req.internal.Port()), int(suggest), int(seconds(req.lifetime)))
	if err != nil {
		return Mapping{}, p.classify(err)
	}
	at := p.now()
	p.epoch.observe(res.SecondsSinceStartOfEpoc, at)
	if res.MappedExternalPort == 0 || res.PortMappingLifetimeInSeconds == 0 {
		return Mapping{}, fmt.Errorf("%w: NAT-PMP granted port %d for %d s", ErrMalformed, res.MappedExternalPort, res.PortMappingLifetimeInSeconds)
	}
	return Mapping{Protocol: NATPMP, Transport: req.transport, Gateway: p.gw, Internal: req.internal,
		External: netip.AddrPortFrom(p.external, res.MappedExternalPort),
		Lifetime: time.Duration(res.PortMappingLifetimeInSeconds) * time.Second, Obtained: at}, nil
}

// check asks for the external address, whose answer carries the epoch
// (RFC 6886 §3.6) and tells whether that address changed.
func (p *natpmpMapper) check(ctx context.Context, ms []Mapping) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	old := p.external
	if err := p.askExternal(); err != nil {
		return err
	}
	if old.IsValid() && p.external != old {
		return fmt.Errorf("%w: NAT-PMP external address changed from %s to %s", ErrLost, old, p.external)
	}
	return nil
}

// askExternal reads the external address and checks the epoch.
func (p *natpmpMapper) askExternal() error {
	res, err := p.client.GetExternalAddress()
	if err != nil {
		return p.classify(err)
	}
	restarted := !p.epoch.observe(res.SecondsSinceStartOfEpoc, p.now())
	ip := netip.AddrFrom4(res.ExternalIPAddress)
	if ip.IsUnspecified() {
		return fmt.Errorf("%w: NAT-PMP gateway has no external address", ErrRefused)
	}
	p.external = ip
	if restarted {
		return fmt.Errorf("%w: NAT-PMP epoch %d", ErrServerRestarted, res.SecondsSinceStartOfEpoc)
	}
	return nil
}

// remove deletes a mapping: the same request with lifetime 0 and external
// port 0 (RFC 6886 §3.4).
func (p *natpmpMapper) remove(_ context.Context, m Mapping) error {
	if _, err := p.client.AddPortMapping(string(m.Transport), int(m.Internal.Port()), 0, 0); err != nil {
		return p.classify(err)
	}
	return nil
}

// classify maps go-nat-pmp's errors (plain strings for protocol failures)
// onto ours.
func (p *natpmpMapper) classify(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: NAT-PMP at %s", ErrUnreachable, p.gw)
	case errors.As(err, &ne) && ne.Timeout(), strings.Contains(err.Error(), "Timed out"):
		return fmt.Errorf("%w: NAT-PMP at %s", ErrTimeout, p.gw)
	case strings.Contains(err.Error(), "result code"):
		return fmt.Errorf("%w: NAT-PMP: %w", ErrRefused, err)
	}
	return fmt.Errorf("portmap: NAT-PMP at %s: %w", p.gw, err)
}
