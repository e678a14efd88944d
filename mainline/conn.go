package mainline

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swarmdb/swarmdb/internal/udpopt"
)

// inboxSize bounds the KRPC datagrams waiting for the library's read loop.
// The socket's read loop must never block on us, so a full inbox drops
// (counted): mainline peers resend, as UDP peers must.
const inboxSize = 256

// packetConn is the net.PacketConn the anacrolix server reads and writes:
// the KRPC share of a socket someone else owns. Datagrams arrive through
// deliver (copied); writes go to write. Close ends the reader and never
// closes the real socket.
//
// The library panics when ReadFrom fails while the server is open, and
// closes its conn from Server.Close, so ReadFrom blocks until a datagram
// arrives or this conn is closed, and the owner closes the server, never the
// conn.
type packetConn struct {
	// Immutable after newPacketConn.
	local  net.Addr
	write  func(b []byte, to netip.AddrPort) error
	inbox  chan datagram
	closed chan struct{}
	// readerGone is closed when ReadFrom has returned the close error: the
	// library's read loop is over.
	readerGone chan struct{}

	closeOnce  sync.Once
	readerOnce sync.Once
	dropped    atomic.Uint64 // inbox full
}

type datagram struct {
	b    []byte
	from netip.AddrPort
}

var _ net.PacketConn = (*packetConn)(nil)

func newPacketConn(local netip.AddrPort, write func([]byte, netip.AddrPort) error) *packetConn {
	return &packetConn{
		local:      net.UDPAddrFromAddrPort(local),
		write:      write,
		inbox:      make(chan datagram, inboxSize),
		closed:     make(chan struct{}),
		readerGone: make(chan struct{}),
	}
}

// deliver queues a copy of b for the reader. It never blocks.
func (c *packetConn) deliver(b []byte, from netip.AddrPort) {
	select {
	case <-c.closed:
		return
	default:
	}
	select {
	case c.inbox <- datagram{b: append([]byte(nil), b...), from: from}:
	default:
		c.dropped.Add(1)
	}
}

func (c *packetConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case d := <-c.inbox:
		return copy(p, d.b), net.UDPAddrFromAddrPort(d.from), nil
	case <-c.closed:
		c.readerOnce.Do(func() { close(c.readerGone) })
		return 0, nil, net.ErrClosed
	}
}

func (c *packetConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	to := udpopt.AddrPortOf(addr)
	if !to.IsValid() {
		return 0, &net.AddrError{Err: "not a udp address", Addr: addr.String()}
	}
	if err := c.write(p, to); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close ends ReadFrom. The socket behind write stays open.
func (c *packetConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

func (c *packetConn) LocalAddr() net.Addr              { return c.local }
func (c *packetConn) SetDeadline(time.Time) error      { return nil }
func (c *packetConn) SetReadDeadline(time.Time) error  { return nil }
func (c *packetConn) SetWriteDeadline(time.Time) error { return nil }
