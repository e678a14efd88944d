package testutil

import (
	"net"
	"sync/atomic"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"
)

// FilterNet is a transport.Net whose sockets pass only what its filters let
// through: a lost datagram, or a host that lost power, on real sockets. Set
// the filters before the first socket opens; they run on every datagram.
type FilterNet struct {
	transport.Net
	// Send says whether a datagram to `to` leaves; a refused one is reported
	// sent and is lost. Nil sends everything.
	Send func(to net.Addr) bool
	// Receive says whether a datagram from `from` is delivered; a refused
	// one is dropped and the read goes on. Nil delivers everything.
	Receive func(from net.Addr) bool
}

// ListenPacket opens a socket of the network under n, behind n's filters.
func (n *FilterNet) ListenPacket(network, address string) (net.PacketConn, error) {
	pc, err := n.Net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	return &filterConn{PacketConn: pc, n: n}, nil
}

type filterConn struct {
	net.PacketConn
	n *FilterNet
}

func (c *filterConn) WriteTo(b []byte, to net.Addr) (int, error) {
	if c.n.Send != nil && !c.n.Send(to) {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, to)
}

func (c *filterConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.PacketConn.ReadFrom(b)
		if err != nil || c.n.Receive == nil || c.n.Receive(from) {
			return n, from, err
		}
	}
}

// CrashNet is the real network with a switch, Dead, that silences every
// socket it opened, as if the host lost power: nothing is sent, nothing is
// received, no goodbye reaches the peers.
type CrashNet struct {
	FilterNet
	Dead atomic.Bool
}

// NewCrashNet returns a live CrashNet over the real network.
func NewCrashNet() (*CrashNet, error) {
	std, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	n := &CrashNet{FilterNet: FilterNet{Net: std}}
	alive := func(net.Addr) bool { return !n.Dead.Load() }
	n.Send, n.Receive = alive, alive
	return n, nil
}
