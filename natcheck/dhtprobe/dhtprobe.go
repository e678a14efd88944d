// Package dhtprobe implements natcheck.Prober over a *dht.Node, so NAT
// classification measures the node's one shared socket, and Measure, the
// check of every address family a node has. It is the only place where
// natcheck meets package dht; natcheck itself must not import dht. Users:
// holepunch/dhtlink, node and cmd/swarmdb (netcheck).
package dhtprobe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v2"
	"github.com/pion/transport/v2"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/natcheck"
)

// ErrNoResponse means a Binding request got no response in time.
var ErrNoResponse = errors.New("dhtprobe: no binding response")

// Binding retransmission, after RFC 5389 §7.2.1 but shorter: a netcheck
// wants an answer in about a second, not 39.5 s. Sends at 0, 100, 300 and
// 700 ms (the RTO doubling) survive three lost packets; a server silent for
// 1 s is reported dead. A lost packet costs 100 ms, the DHT's resend floor
// (dht/rto.go); at 250 ms apart it cost the NAT check a quarter second at
// every loss.
const (
	bindingRTO     = 100 * time.Millisecond
	bindingTimeout = time.Second
)

// Node is the part of *dht.Node a Prober uses.
type Node interface {
	WritePacket(b []byte, addr netip.AddrPort) error
	NATProbe(ctx context.Context, addr netip.AddrPort, mode dht.ProbeMode, wait func(rtt time.Duration, isolated bool) time.Duration) (dht.ProbeResult, error)
}

var (
	_ natcheck.Prober = (*Prober)(nil)
	_ Node            = (*dht.Node)(nil)
)

// Prober sends STUN Binding requests through the node's socket and matches
// responses, which the node hands to its STUN handler, by transaction id.
//
// Wire it before the node starts:
//
//	p := dhtprobe.New()
//	node := dht.New(cfg)
//	node.Handle(demux.STUN, p.HandlePacket) // or call p.Handle from yours
//	p.Attach(node)
type Prober struct {
	// Guarded by mu.
	mu      sync.Mutex
	node    Node
	pending map[[stun.TransactionIDSize]byte]chan netip.AddrPort
}

// New returns a Prober with no node attached.
func New() *Prober {
	return &Prober{pending: map[[stun.TransactionIDSize]byte]chan netip.AddrPort{}}
}

// Attach sets the node whose socket the Prober uses.
func (p *Prober) Attach(n Node) {
	p.mu.Lock()
	p.node = n
	p.mu.Unlock()
}

// HandlePacket is a demux.Handler for the STUN class: it consumes Binding
// responses to our requests and ignores everything else.
func (p *Prober) HandlePacket(b []byte, from netip.AddrPort) { p.Handle(b, from) }

// Handle consumes a STUN Binding success response that answers one of our
// requests and reports whether it did, for a STUN handler that offers the
// rest to another protocol (holepunch/dhtlink: ICE). It runs on the read
// loop and does not block.
func (p *Prober) Handle(b []byte, from netip.AddrPort) bool {
	if !stun.IsMessage(b) {
		return false
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil || m.Type != stun.BindingSuccess {
		return false
	}
	p.mu.Lock()
	ch := p.pending[m.TransactionID]
	p.mu.Unlock()
	if ch == nil {
		return false
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(m); err != nil {
		return true
	}
	ip, ok := netip.AddrFromSlice(xor.IP)
	if !ok {
		return true
	}
	select {
	case ch <- netip.AddrPortFrom(ip.Unmap(), uint16(xor.Port)):
	default:
	}
	return true
}

// Binding implements natcheck.Prober.
func (p *Prober) Binding(ctx context.Context, server netip.AddrPort) (netip.AddrPort, time.Duration, error) {
	p.mu.Lock()
	n := p.node
	p.mu.Unlock()
	if n == nil {
		return netip.AddrPort{}, 0, fmt.Errorf("dhtprobe: binding %s: %w", server, dht.ErrNotStarted)
	}
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		return netip.AddrPort{}, 0, err
	}
	ch := make(chan netip.AddrPort, 1)
	p.mu.Lock()
	p.pending[req.TransactionID] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pending, req.TransactionID)
		p.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, bindingTimeout)
	defer cancel()
	rto := bindingRTO
	resend := time.NewTimer(rto)
	defer resend.Stop()
	start := time.Now()
	for {
		// A retransmission reuses the transaction id (RFC 5389 §7.2.1), so
		// the RTT is measured from the first send: an upper bound.
		if err := n.WritePacket(req.Raw, server); err != nil {
			if errors.Is(err, dht.ErrHeldForProbe) {
				err = fmt.Errorf("%w: %w", natcheck.ErrHeld, err)
			}
			return netip.AddrPort{}, 0, fmt.Errorf("dhtprobe: binding %s: %w", server, err)
		}
		select {
		case mapped := <-ch:
			return mapped, time.Since(start), nil
		case <-resend.C:
			rto *= 2
			resend.Reset(rto)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return netip.AddrPort{}, 0, fmt.Errorf("dhtprobe: binding %s: %w", server, ErrNoResponse)
			}
			return netip.AddrPort{}, 0, ctx.Err()
		}
	}
}

// Probe implements natcheck.Prober with the DHT's NAT_PROBE command.
func (p *Prober) Probe(ctx context.Context, server netip.AddrPort, kind natcheck.ProbeKind, wait func(rtt time.Duration, isolated bool) time.Duration) (bool, bool, error) {
	p.mu.Lock()
	n := p.node
	p.mu.Unlock()
	if n == nil {
		return false, false, fmt.Errorf("dhtprobe: probe %s: %w", server, dht.ErrNotStarted)
	}
	mode := dht.ProbeOtherPort
	if kind == natcheck.ProbeOtherNode {
		mode = dht.ProbeOtherNode
	}
	res, err := n.NATProbe(ctx, server, mode, wait)
	if err != nil {
		return false, false, err
	}
	return res.Arrived, res.Unsolicited, nil
}

// LocalIPs returns the IPv4 and IPv6 addresses of tn's interfaces (not
// IPv6 link-local ones), for natcheck.CheckConfig.LocalIPs when the node
// listens on 0.0.0.0 or [::].
func LocalIPs(tn transport.Net) []netip.Addr {
	ifaces, err := tn.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ifc := range ifaces {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			var ip net.IP
			switch v := a.(type) {
			case *net.IPNet:
				ip = v.IP
			case *net.IPAddr:
				ip = v.IP
			}
			if na, ok := netip.AddrFromSlice(ip); ok && !na.Unmap().IsLinkLocalUnicast() {
				out = append(out, na.Unmap())
			}
		}
	}
	return out
}
