package holepunch

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swarmdb/swarmdb/internal/fifo"
	"github.com/swarmdb/swarmdb/secure"
)

// routedConn is a net.Conn to one remote address over the node's shared
// socket, for birthday paths (on the easy side) and ICE pairs (routeICE,
// dialICE). The endpoint's packet demux hands it every session datagram from
// that address. The address can move once (Endpoint.reroute): an early ICE
// path follows the pair ICE nominates.
type routedConn struct {
	link   Link
	remote atomic.Pointer[netip.AddrPort]
	in     *fifo.Queue[*[]byte] // copies from datagramPool, for Read
	// receiver, once set (SetReceiver), takes every datagram as it arrives
	// in place of in and Read.
	receiver atomic.Pointer[func([]byte)]
	done     chan struct{}
	once     sync.Once
	onDone   func()

	dropped atomic.Uint64
}

var (
	_ net.Conn             = (*routedConn)(nil)
	_ secure.SegmentWriter = (*routedConn)(nil)
	_ secure.PacketSource  = (*routedConn)(nil)
)

// route returns a routedConn that gets the session datagrams from remote
// from now on, in place of any path that had them. Closing it removes the
// route (unless a newer path has taken the address) and then calls onClose.
func (e *Endpoint) route(remote netip.AddrPort, onClose func()) *routedConn {
	var rc *routedConn
	rc = newRoutedConn(e.cfg.Link, remote, func() {
		e.paths.mu.Lock()
		if at := rc.addr(); e.paths.routes[at] == rc {
			delete(e.paths.routes, at)
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

// reroute moves rc to remote: its datagrams go there, and the datagrams from
// there come to it, in place of its old address's.
func (e *Endpoint) reroute(rc *routedConn, remote netip.AddrPort) {
	e.paths.mu.Lock()
	defer e.paths.mu.Unlock()
	if old := rc.addr(); e.paths.routes[old] == rc {
		delete(e.paths.routes, old)
	}
	rc.remote.Store(&remote)
	e.paths.routes[remote] = rc
}

func newRoutedConn(link Link, remote netip.AddrPort, onDone func()) *routedConn {
	c := &routedConn{link: link, in: fifo.New[*[]byte](socketQueue), done: make(chan struct{}), onDone: onDone}
	c.remote.Store(&remote)
	return c
}

// addr is the remote address now.
func (c *routedConn) addr() netip.AddrPort { return *c.remote.Load() }

// datagramPool recycles the copies deliver hands to Read: a bulk transfer
// delivers a hundred thousand datagrams a second, and allocating each cost
// the receiving node a tenth of its CPU in garbage collection.
var datagramPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

func copyDatagram(b []byte) *[]byte {
	bp := datagramPool.Get().(*[]byte)
	*bp = append((*bp)[:0], b...)
	return bp
}

// deliver hands b (the caller's; not kept) to the receiver, or queues a
// copy for Read.
func (c *routedConn) deliver(b []byte) {
	if f := c.receiver.Load(); f != nil {
		(*f)(b)
		return
	}
	bp := copyDatagram(b)
	if !c.in.Push(bp) {
		datagramPool.Put(bp)
		c.dropped.Add(1)
	}
	if f := c.receiver.Load(); f != nil {
		c.drain(*f) // set while we queued: it must not miss this one
	}
}

// SetReceiver implements secure.PacketSource: f gets every datagram from
// now on, on the goroutine that received it (the node's read loop), and
// first whatever waited for Read. f must not keep b.
func (c *routedConn) SetReceiver(f func(b []byte)) {
	c.receiver.Store(&f)
	c.drain(f)
}

func (c *routedConn) drain(f func([]byte)) {
	for {
		bp, ok := c.in.Pop()
		if !ok {
			return
		}
		f(*bp)
		datagramPool.Put(bp)
	}
}

func (c *routedConn) Read(p []byte) (int, error) {
	for {
		if bp, ok := c.in.Pop(); ok {
			n := copy(p, *bp)
			datagramPool.Put(bp)
			return n, nil
		}
		select {
		case <-c.in.Ready():
		case <-c.done:
			return 0, net.ErrClosed
		}
	}
}

func (c *routedConn) Write(p []byte) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	if err := c.link.WritePacket(p, c.addr()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteSegments implements secure.SegmentWriter: a burst of the session's
// datagrams in one system call where the link can.
func (c *routedConn) WriteSegments(b []byte, segSize int) error {
	select {
	case <-c.done:
		return net.ErrClosed
	default:
	}
	to := c.addr()
	if sl, ok := c.link.(SegmentLink); ok {
		return sl.WriteSegments(b, segSize, to)
	}
	for off := 0; off < len(b); off += segSize {
		if err := c.link.WritePacket(b[off:min(off+segSize, len(b))], to); err != nil {
			return err
		}
	}
	return nil
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
func (c *routedConn) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(c.addr()) }

// Deadlines are kept by the secure layer above (secure.DatagramConn).
func (c *routedConn) SetDeadline(time.Time) error      { return nil }
func (c *routedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *routedConn) SetWriteDeadline(time.Time) error { return nil }
