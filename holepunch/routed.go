package holepunch

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// routedConn is a net.Conn to one remote address over the node's shared
// socket, for birthday paths (on the easy side) and ICE pairs (routeICE).
// The endpoint's packet demux hands it every session datagram from that
// address.
type routedConn struct {
	link   Link
	remote netip.AddrPort
	in     chan []byte
	done   chan struct{}
	once   sync.Once
	onDone func()

	dropped atomic.Uint64
}

var _ net.Conn = (*routedConn)(nil)

// route returns a routedConn that gets the session datagrams from remote
// from now on, in place of any path that had them. Closing it removes the
// route (unless a newer path has taken the address) and then calls onClose.
func (e *Endpoint) route(remote netip.AddrPort, onClose func()) *routedConn {
	var rc *routedConn
	rc = newRoutedConn(e.cfg.Link, remote, func() {
		e.paths.mu.Lock()
		if e.paths.routes[remote] == rc {
			delete(e.paths.routes, remote)
		}
		e.paths.mu.Unlock()
		if onClose != nil {
			onClose()
		}
	})
	e.paths.mu.Lock()
	e.paths.routes[remote] = rc
	e.paths.mu.Unlock()
	return rc
}

func newRoutedConn(link Link, remote netip.AddrPort, onDone func()) *routedConn {
	return &routedConn{link: link, remote: remote, in: make(chan []byte, socketQueue), done: make(chan struct{}), onDone: onDone}
}

func (c *routedConn) deliver(b []byte) {
	select {
	case c.in <- append([]byte(nil), b...):
	default:
		c.dropped.Add(1)
	}
}

func (c *routedConn) Read(p []byte) (int, error) {
	select {
	case b := <-c.in:
		return copy(p, b), nil
	case <-c.done:
		return 0, net.ErrClosed
	}
}

func (c *routedConn) Write(p []byte) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	if err := c.link.WritePacket(p, c.remote); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *routedConn) Close() error {
	c.once.Do(func() {
		close(c.done)
		if c.onDone != nil {
			c.onDone()
		}
	})
	return nil
}

func (c *routedConn) LocalAddr() net.Addr  { return net.UDPAddrFromAddrPort(c.link.LocalAddr()) }
func (c *routedConn) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(c.remote) }

// Deadlines are kept by the secure layer above (secure.DatagramConn).
func (c *routedConn) SetDeadline(time.Time) error      { return nil }
func (c *routedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *routedConn) SetWriteDeadline(time.Time) error { return nil }
