package portmap

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/pion/transport/v2"
)

// PCP timing. RFC 6887 §8.1.1 starts retransmissions at 3 s for a server
// that may be far away; ours is the default gateway one LAN hop off, so
// NAT-PMP's 250 ms (RFC 6886 §3.1) is the better first wait, doubling.
const (
	pcpFirstWait = 250 * time.Millisecond
	// pcpTimeout bounds one transaction (4 sends: 0, 0.25, 0.75, 1.75 s).
	pcpTimeout = 2500 * time.Millisecond
)

// pcpMapper is a PCP client for one gateway (RFC 6887 MAP and ANNOUNCE).
// Every transaction uses a fresh UDP socket connected to the server, so an
// ICMP port unreachable surfaces as an error at once: nothing listens.
type pcpMapper struct {
	net    transport.Net
	server netip.AddrPort // gateway:5351
	client netip.Addr     // our address on the gateway's LAN
	now    func() time.Time

	epoch  epochClock
	nonces map[Transport][pcpNonceSize]byte // one per mapping, kept for renewals and deletion
}

func newPCPMapper(n transport.Net, server netip.AddrPort, client netip.Addr, now func() time.Time) *pcpMapper {
	return &pcpMapper{net: n, server: server, client: client, now: now, nonces: map[Transport][pcpNonceSize]byte{}}
}

func (p *pcpMapper) protocol() Protocol { return PCP }

// nonce returns the mapping nonce for t, making one on first use: a
// renewal or deletion must carry the nonce that created the mapping (RFC
// 6887 §11.1), and a random one keeps other hosts from changing it.
func (p *pcpMapper) nonce(t Transport) [pcpNonceSize]byte {
	n, ok := p.nonces[t]
	if !ok {
		_, _ = rand.Read(n[:])
		p.nonces[t] = n
	}
	return n
}

func (p *pcpMapper) add(ctx context.Context, req request, prev *Mapping) (Mapping, error) {
	suggest := netip.AddrPortFrom(netip.IPv4Unspecified(), req.internal.Port())
	if prev != nil {
		suggest = prev.External
	}
	m := &MapPayload{Nonce: p.nonce(req.transport), Protocol: req.transport.ianaProto(),
		InternalPort: req.internal.Port(), ExternalPort: suggest.Port(), ExternalIP: suggest.Addr()}
	resp, at, err := p.transact(ctx, &PCPRequest{Opcode: OpMap, Lifetime: seconds(req.lifetime), ClientIP: p.client, Map: m})
	if err != nil {
		return Mapping{}, err
	}
	p.epoch.observe(resp.Epoch, at) // a fresh grant needs no epoch check; later checks compare with it
	if resp.Result != ResultSuccess {
		return Mapping{}, fmt.Errorf("%w: PCP %s", ErrRefused, resp.Result)
	}
	ext := netip.AddrPortFrom(resp.Map.ExternalIP, resp.Map.ExternalPort)
	if resp.Lifetime == 0 || ext.Port() == 0 || !ext.Addr().Is4() || ext.Addr().IsUnspecified() {
		return Mapping{}, fmt.Errorf("%w: PCP granted %s for %d s", ErrMalformed, ext, resp.Lifetime)
	}
	return Mapping{Protocol: PCP, Transport: req.transport, Gateway: p.server.Addr(), Internal: req.internal,
		External: ext, Lifetime: time.Duration(resp.Lifetime) * time.Second, Obtained: at}, nil
}

// check sends an ANNOUNCE request, whose only answer is the server's
// epoch: an epoch that went backwards means the server restarted and lost
// our mappings (RFC 6887 §8.5, §14.1).
func (p *pcpMapper) check(ctx context.Context, _ []Mapping) error {
	resp, at, err := p.transact(ctx, &PCPRequest{Opcode: OpAnnounce, ClientIP: p.client})
	if err != nil {
		return err
	}
	if !p.epoch.observe(resp.Epoch, at) {
		return fmt.Errorf("%w: PCP epoch %d", ErrServerRestarted, resp.Epoch)
	}
	if resp.Result != ResultSuccess && resp.Result != ResultUnsuppOpcode {
		return fmt.Errorf("%w: PCP ANNOUNCE: %s", ErrRefused, resp.Result)
	}
	return nil
}

// remove deletes a mapping: MAP with the mapping's nonce and lifetime 0
// (RFC 6887 §15).
func (p *pcpMapper) remove(ctx context.Context, m Mapping) error {
	pl := &MapPayload{Nonce: p.nonce(m.Transport), Protocol: m.Transport.ianaProto(),
		InternalPort: m.Internal.Port(), ExternalPort: m.External.Port(), ExternalIP: m.External.Addr()}
	resp, _, err := p.transact(ctx, &PCPRequest{Opcode: OpMap, ClientIP: p.client, Map: pl})
	if err != nil {
		return err
	}
	if resp.Result != ResultSuccess {
		return fmt.Errorf("%w: PCP delete: %s", ErrRefused, resp.Result)
	}
	return nil
}

// transact sends req and waits for the matching response, resending after
// pcpFirstWait, then twice as long each time, within pcpTimeout. It
// returns when the response arrived.
func (p *pcpMapper) transact(ctx context.Context, req *PCPRequest) (*PCPResponse, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, pcpTimeout)
	defer cancel()
	laddr := &net.UDPAddr{IP: p.client.AsSlice()}
	conn, err := p.net.DialUDP("udp4", laddr, net.UDPAddrFromAddrPort(p.server))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("portmap: PCP socket: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	msg := AppendPCPRequest(nil, req)
	buf := make([]byte, pcpMaxSize+4)
	wait := pcpFirstWait
	for {
		if _, err := conn.Write(msg); err != nil {
			return nil, time.Time{}, p.ioError(err)
		}
		deadline := time.Now().Add(wait)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		_ = conn.SetReadDeadline(deadline)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				if ctx.Err() != nil {
					return nil, time.Time{}, fmt.Errorf("%w: PCP at %s", ErrTimeout, p.server)
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // resend
				}
				return nil, time.Time{}, p.ioError(err)
			}
			at := p.now()
			resp, err := ParsePCPResponse(buf[:n])
			if errors.Is(err, ErrNATPMPServer) {
				return nil, time.Time{}, err
			}
			if err != nil || !matches(req, resp) {
				continue // a stray or stale datagram; keep waiting
			}
			return resp, at, nil
		}
		wait *= 2
	}
}

// ioError classifies a socket error: an ICMP port unreachable on the
// connected socket means no server.
func (p *pcpMapper) ioError(err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w: PCP at %s", ErrUnreachable, p.server)
	}
	return fmt.Errorf("portmap: PCP at %s: %w", p.server, err)
}

// matches says whether resp answers req: same opcode and, for MAP, the same
// nonce, protocol and internal port (RFC 6887 §11.3).
func matches(req *PCPRequest, resp *PCPResponse) bool {
	if resp.Opcode != req.Opcode {
		return false
	}
	if req.Opcode != OpMap || resp.Map == nil {
		// An error response may come without the MAP payload.
		return req.Opcode != OpMap || resp.Result != ResultSuccess
	}
	return resp.Map.Nonce == req.Map.Nonce && resp.Map.Protocol == req.Map.Protocol &&
		resp.Map.InternalPort == req.Map.InternalPort
}

// seconds converts a lifetime to the protocols' whole seconds, rounding up
// so that a short positive lifetime never becomes a deletion.
func seconds(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32(min((d+time.Second-1)/time.Second, 1<<32-1))
}
