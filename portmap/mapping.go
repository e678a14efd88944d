package portmap

import (
	"context"
	"encoding/json"
	"net/netip"
	"time"
)

// Protocol names a port-mapping protocol.
type Protocol string

// The protocols, in the order the client tries them.
const (
	// PCP is the Port Control Protocol, RFC 6887 (our own client).
	PCP Protocol = "pcp"
	// NATPMP is NAT Port Mapping Protocol, RFC 6886 (jackpal/go-nat-pmp).
	NATPMP Protocol = "nat-pmp"
	// UPnP is UPnP Internet Gateway Device, WANIPConnection:1/2 and
	// WANPPPConnection:1 (huin/goupnp).
	UPnP Protocol = "upnp"
)

// Transport is what a mapping carries.
type Transport string

// Transports.
const (
	UDP Transport = "udp"
	TCP Transport = "tcp"
)

func (t Transport) ianaProto() byte {
	if t == TCP {
		return ProtoTCP
	}
	return ProtoUDP
}

// Mapping is one port mapping a gateway granted: packets to External reach
// Internal.
type Mapping struct {
	Protocol  Protocol
	Transport Transport
	Gateway   netip.Addr
	Internal  netip.AddrPort
	External  netip.AddrPort
	// Lifetime is how long the gateway keeps the mapping from Obtained;
	// zero means until it is deleted (UPnP routers that grant no other).
	Lifetime time.Duration
	Obtained time.Time
}

// Expires is when the mapping ends unless renewed (zero for a permanent
// one).
func (m Mapping) Expires() time.Time {
	if m.Lifetime == 0 {
		return time.Time{}
	}
	return m.Obtained.Add(m.Lifetime)
}

// MarshalJSON writes the mapping for status pages and events: protocol,
// transport, addresses and the lifetime in seconds.
func (m Mapping) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Protocol  Protocol       `json:"protocol"`
		Transport Transport      `json:"transport"`
		Gateway   netip.Addr     `json:"gateway"`
		Internal  netip.AddrPort `json:"internal"`
		External  netip.AddrPort `json:"external"`
		LifetimeS float64        `json:"lifetime_s"`
		Expires   *time.Time     `json:"expires,omitempty"`
	}{m.Protocol, m.Transport, m.Gateway, m.Internal, m.External, m.Lifetime.Seconds(), timePtr(m.Expires())})
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// request is one mapping the client wants.
type request struct {
	transport Transport
	internal  netip.AddrPort
	lifetime  time.Duration
	desc      string
}

// mapper is one protocol's session with one gateway. The client calls its
// methods from its loop only, one at a time.
type mapper interface {
	protocol() Protocol
	// add asks for a mapping. prev, when set, is the mapping being renewed
	// (its external port is asked for again).
	add(ctx context.Context, req request, prev *Mapping) (Mapping, error)
	// check asks whether the gateway still holds ms. ErrServerRestarted
	// or ErrLost mean it does not; other errors say nothing either way.
	check(ctx context.Context, ms []Mapping) error
	// remove deletes a mapping.
	remove(ctx context.Context, m Mapping) error
}
