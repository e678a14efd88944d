package secure

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// An in-memory datagram pipe for tests: each Write is one datagram delivered to the
// other end's Read, optionally lost, reordered, tampered with, or black-holed. Like
// pion ice/v2's Conn, its deadlines do nothing, so tests prove DatagramConn does not
// depend on them.

type pipeOptions struct {
	loss    float64 // probability a datagram is dropped
	reorder float64 // probability a datagram is held back and sent after the next one
	seed    uint64
	delay   time.Duration // one-way delay of every datagram (both directions)
	// tamper, if set, sees every datagram (a copy) going from end dir (0 = a→b, 1 = b→a)
	// and returns what is delivered instead: nothing, the datagram, changed bytes, or
	// several datagrams (replays).
	tamper func(dir int, b []byte) [][]byte
	// push: the ends hand datagrams over (PacketSource) instead of being read.
	push bool
	// queueLen is the DatagramConns' QueueLen (newDatagramPair); zero: the default.
	queueLen int
}

type pipeLink struct {
	opts pipeOptions
	mu   sync.Mutex // guards rng and held
	rng  *rand.Rand
	held [2][]byte
}

type pipeEnd struct {
	link      *pipeLink
	dir       int
	in        chan []byte
	peer      *pipeEnd
	closed    chan struct{}
	closeOnce sync.Once
	blackhole atomic.Bool // drop everything this end sends
	sent      atomic.Uint64
	full      atomic.Uint64 // dropped because the receiver queue was full
	delayed   chan delayedDatagram
	delayDone chan struct{} // closed when the delay loop has exited
}

// delayedDatagram waits in a pipe end's delay line until due.
type delayedDatagram struct {
	p   []byte
	due time.Time
}

var _ net.Conn = (*pipeEnd)(nil)

func newPipe(opts pipeOptions) (*pipeEnd, *pipeEnd) {
	l := &pipeLink{opts: opts, rng: rand.New(rand.NewPCG(opts.seed, 42))}
	a := &pipeEnd{link: l, dir: 0, in: make(chan []byte, 8192), closed: make(chan struct{})}
	b := &pipeEnd{link: l, dir: 1, in: make(chan []byte, 8192), closed: make(chan struct{})}
	a.peer, b.peer = b, a
	if opts.delay > 0 {
		for _, e := range []*pipeEnd{a, b} {
			e.delayed = make(chan delayedDatagram, 1<<16)
			e.delayDone = make(chan struct{})
			go e.delayLoop()
		}
	}
	return a, b
}

// delayLoop delivers this end's incoming datagrams once they are due, in order,
// until the end is closed.
func (e *pipeEnd) delayLoop() {
	defer close(e.delayDone)
	for {
		select {
		case d := <-e.delayed:
			if wait := time.Until(d.due); wait > 0 {
				select {
				case <-time.After(wait):
				case <-e.closed:
					return
				}
			}
			e.deliver(d.p)
		case <-e.closed:
			return
		}
	}
}

func (e *pipeEnd) Write(p []byte) (int, error) {
	select {
	case <-e.closed:
		return 0, net.ErrClosed
	default:
	}
	if e.blackhole.Load() {
		return len(p), nil
	}
	e.sent.Add(1)
	pkts := [][]byte{append([]byte(nil), p...)}
	if t := e.link.opts.tamper; t != nil {
		pkts = t(e.dir, pkts[0])
	}
	for _, pkt := range pkts {
		for _, out := range e.link.shape(e.dir, pkt) {
			if e.peer.delayed == nil {
				e.peer.deliver(out)
				continue
			}
			select {
			case e.peer.delayed <- delayedDatagram{out, time.Now().Add(e.link.opts.delay)}:
			default:
				e.peer.full.Add(1)
			}
		}
	}
	return len(p), nil
}

// shape applies loss and reordering.
func (l *pipeLink) shape(dir int, p []byte) [][]byte {
	if l.opts.loss == 0 && l.opts.reorder == 0 {
		return [][]byte{p}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rng.Float64() < l.opts.loss {
		return nil
	}
	if h := l.held[dir]; h != nil {
		l.held[dir] = nil
		return [][]byte{p, h}
	}
	if l.rng.Float64() < l.opts.reorder {
		l.held[dir] = p
		return nil
	}
	return [][]byte{p}
}

// inject delivers raw bytes to this end, as an attacker on the path would.
func (e *pipeEnd) inject(p []byte) { e.deliver(append([]byte(nil), p...)) }

func (e *pipeEnd) deliver(p []byte) {
	select {
	case <-e.closed:
	case e.in <- p:
	default:
		e.full.Add(1) // like a full socket buffer
	}
}

func (e *pipeEnd) Read(p []byte) (int, error) {
	select {
	case b := <-e.in:
		return copy(p, b), nil
	case <-e.closed:
		return 0, net.ErrClosed
	}
}

func (e *pipeEnd) Close() error {
	e.closeOnce.Do(func() { close(e.closed) })
	if e.delayDone != nil {
		<-e.delayDone
	}
	return nil
}

type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }
func (a pipeAddr) String() string  { return string(a) }

func (e *pipeEnd) LocalAddr() net.Addr              { return pipeAddr([]string{"a", "b"}[e.dir]) }
func (e *pipeEnd) RemoteAddr() net.Addr             { return pipeAddr([]string{"b", "a"}[e.dir]) }
func (e *pipeEnd) SetDeadline(time.Time) error      { return nil }
func (e *pipeEnd) SetReadDeadline(time.Time) error  { return nil }
func (e *pipeEnd) SetWriteDeadline(time.Time) error { return nil }
