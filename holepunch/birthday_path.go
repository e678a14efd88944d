package holepunch

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/swarmdb/swarmdb/natcheck"
)

// punchRole is this side's part in a birthday punch.
type punchRole int

const (
	roleNone punchRole = iota // ICE alone can connect
	roleHard                  // we are behind the endpoint-dependent mapping
	roleEasy                  // the peer is
)

// birthdayRole decides, from the two signaling payloads, whether this pair
// needs birthday punching and which side we are. ICE cannot connect an
// endpoint-dependent mapping to a port-restricted NAT: each side's checks
// reach the other's filter from a port it never sent to (nat.md, B5).
// Against address-dependent or no filtering ICE's peer-reflexive
// candidates do the job. Unknown filtering on the easy side counts as
// port-restricted, since a wrong guess there only costs probes. A hard side
// whose router forwards a mapped port to it (it states endpoint-independent
// filtering) needs no birthday: the easy side reaches it at that port, see
// awaitsPeer. Both sides compute the same answer from the same two
// payloads.
func birthdayRole(local, peer *signal) punchRole {
	needs := func(hard, easy *signal) bool {
		return hard.Mapping == natcheck.MappingEndpointDependent && hard.Filtering != natcheck.FilteringEndpointIndependent &&
			easy.Mapping == natcheck.MappingEndpointIndependent &&
			(easy.Filtering == natcheck.FilteringAddressAndPortDependent || easy.Filtering == natcheck.FilteringUnknown) &&
			reflexive(easy).IsValid() && reflexive(hard).IsValid()
	}
	switch {
	case local.Mode != ModeAuto, bothIPv6(local, peer):
		// Two peers on IPv6 punch directly there (ipv6.go).
		return roleNone
	case needs(local, peer):
		return roleHard
	case needs(peer, local):
		return roleEasy
	}
	return roleNone
}

// awaitsPeer says whether this side should not send connectivity checks
// to the peer's server-reflexive addresses but wait for the peer's checks,
// which reach it through its router's port mapping: it is behind an
// endpoint-dependent NAT with a mapping (endpoint-dependent mapping,
// endpoint-independent filtering), and the peer filters, so our checks
// could not reach it anyway. Sending them would do harm: our NAT would give
// the 5-tuple toward the peer's reflexive address a new random port, and
// the peer's checks to our mapped port, which the router translates to that
// same 5-tuple, would then clash with it in conntrack and be dropped. Our
// answers to the peer's checks (and ICE's triggered checks) go out through
// the mapping's own conntrack entry, from the mapped port.
func awaitsPeer(local, peer *signal) bool {
	return local.Mode == ModeAuto && local.Mapping == natcheck.MappingEndpointDependent &&
		local.Filtering == natcheck.FilteringEndpointIndependent && peer.Filtering != natcheck.FilteringEndpointIndependent
}

// withoutReflexive returns cands without the IPv4 server-reflexive ones
// (IPv6 has no translation, so no mapping to clash with).
func withoutReflexive(cands []candidate) []candidate {
	var out []candidate
	for _, c := range cands {
		if c.Kind != candSrflx || !c.Addr.Addr().Is4() {
			out = append(out, c)
		}
	}
	return out
}

// reflexive is the IPv4 server-reflexive address a payload names: birthday
// punching beats IPv4 NATs.
func reflexive(s *signal) netip.AddrPort {
	for _, c := range s.Cands {
		if c.Kind == candSrflx && c.Addr.Addr().Is4() {
			return c.Addr
		}
	}
	return netip.AddrPort{}
}

// punchHard opens many sockets toward the easy side's reflexive address and
// returns the one its probe reached.
func (e *Endpoint) punchHard(ctx context.Context, local, peer *signal) (transportPath, error) {
	bind := e.cfg.Link.LocalAddr().Addr()
	start := time.Now()
	pc, easy, err := PunchHard(ctx, HardConfig{
		Net: e.cfg.Net, LocalIP: bind, Easy: reflexive(peer), Secret: peer.Secret, Logger: e.log,
	})
	if err != nil {
		return transportPath{}, fmt.Errorf("%w: birthday (hard side): %w", ErrPunchFailed, err)
	}
	e.log.Debug("birthday punch done", "stage", "hard", "addr", easy, "took", time.Since(start))
	c := &packetConn{PacketConn: pc, remote: net.UDPAddrFromAddrPort(easy)}
	return transportPath{conn: c, path: PathDirect, remote: easy, release: func() { _ = pc.Close() }}, nil
}

// punchEasy probes random ports of the hard side's IP from the shared
// socket and returns a conn to the port that answered.
func (e *Endpoint) punchEasy(ctx context.Context, local, peer *signal) (transportPath, error) {
	ch := make(chan Datagram, 64)
	e.paths.mu.Lock()
	e.paths.birthdays[peer.Secret] = ch
	e.paths.mu.Unlock()
	defer func() {
		e.paths.mu.Lock()
		delete(e.paths.birthdays, peer.Secret)
		e.paths.mu.Unlock()
	}()
	start := time.Now()
	hard, err := PunchEasy(ctx, EasyConfig{
		Send: e.cfg.Link.WritePacket, Packets: ch, HardIP: reflexive(peer).Addr(), Secret: peer.Secret, Logger: e.log,
	})
	if err != nil {
		return transportPath{}, fmt.Errorf("%w: birthday (easy side): %w", ErrPunchFailed, err)
	}
	e.log.Debug("birthday punch done", "stage", "easy", "addr", hard, "took", time.Since(start))
	rc := e.route(hard, nil)
	return transportPath{conn: rc, path: PathDirect, remote: hard, release: func() { _ = rc.Close() }}, nil
}

// handleBirthday hands a birthday packet to the easy-side punch its secret
// names; others are dropped.
func (e *Endpoint) handleBirthday(b []byte, from netip.AddrPort) {
	p, err := ParseBirthday(b)
	if err != nil {
		return
	}
	e.paths.mu.Lock()
	ch := e.paths.birthdays[p.Secret]
	e.paths.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- Datagram{B: append([]byte(nil), b...), From: from}:
	default:
	}
}

// packetConn is a net.Conn over a socket of its own, talking to one remote
// address: the hard side's winning birthday socket. Datagrams from other
// addresses (late probes) are dropped.
type packetConn struct {
	net.PacketConn
	remote *net.UDPAddr
}

var _ net.Conn = (*packetConn)(nil)

func (c *packetConn) Read(p []byte) (int, error) {
	for {
		n, from, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			return n, err
		}
		// Compare unmapped: dual-stack sockets (and pion's vnet) report
		// IPv4 senders as ::ffff:a.b.c.d.
		if ua, ok := from.(*net.UDPAddr); ok && sameAddr(ua.AddrPort(), c.remote.AddrPort()) && !IsBirthday(p[:n]) {
			return n, nil
		}
	}
}

func (c *packetConn) Write(p []byte) (int, error) { return c.PacketConn.WriteTo(p, c.remote) }

func (c *packetConn) RemoteAddr() net.Addr { return c.remote }

// sameAddr compares two addresses with IPv4-mapped IPv6 unmapped.
func sameAddr(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}
