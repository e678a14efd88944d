package secure

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/swarmdb/swarmdb/internal/reliable"
)

// transport drives a Session's reliable.Conn, swarmdb's own stream transport
// (internal/reliable: RFC 9000 streams and flow control, RFC 9002 loss
// recovery, BBR; a pure state machine). It owns the lock around the Conn, the
// Conn's one timer, the DatagramConn its packets travel in, and the wake-ups
// of streams blocked in Read or Write.
//
// It starts no goroutine. A packet is processed on the goroutine that
// received it (the endpoint's socket reader, or the DatagramConn's read loop),
// a timer on the timer's, a stream call on its caller's; each sends what the
// Conn then has to send. An idle session therefore costs no goroutine here,
// which is why the transport exists: quic-go ran four per connection.
type transport struct {
	// immutable after newTransport
	dc          *DatagramConn
	cc          *reliable.BBR
	backlog     int
	acceptReady chan struct{} // capacity 1: a stream may wait in pending
	ended       chan struct{} // closed once the Conn has closed, either way

	mu       sync.Mutex // guards everything below
	c        *reliable.Conn
	streams  map[uint64]*tstream // streams a Stream reads or writes, for wake-ups
	pending  []uint64            // streams the peer opened, not yet accepted
	refused  uint64
	timer    *time.Timer
	timerAt  int64 // what the timer is armed for; 0: not armed
	woken    []uint64
	isEnded  bool
	onEnded  func()        // onEnd's f
	onAccept func()        // notifyAccept's f: a stream waits in pending
	idleCh   chan struct{} // whenIdle's, until the Conn is idle
}

// packetBuffers lend the transports a packet's room while they send: a buffer per
// session would be 1.4 KB more for every idle connection.
var packetBuffers = sync.Pool{New: func() any { b := make([]byte, 0, MaxMTU); return &b }}

// monoBase anchors the transport's clock: nanoseconds since it, monotonic.
var monoBase = time.Now()

func monoNow() int64 { return int64(time.Since(monoBase)) }

// maxIncomingStreams is how many streams the peer may have open at once.
const maxIncomingStreams = 1024

func newTransport(dc *DatagramConn, cfg Config, client bool) *transport {
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	cc := reliable.NewBBR(int(cfg.MTU), 0, binary.LittleEndian.Uint64(seed[:]))
	maxPacket := 0 // no path MTU discovery
	// Probes up to MaxMTU, and only where the socket below sets the Don't Fragment
	// bit and the DatagramConn can carry them (Config.PathMTUDiscovery).
	if cfg.PathMTUDiscovery && dc.cfg.MaxPayload >= MaxMTU {
		maxPacket = MaxMTU
	}
	t := &transport{
		dc:          dc,
		cc:          cc,
		backlog:     cfg.AcceptBacklog,
		acceptReady: make(chan struct{}, 1),
		ended:       make(chan struct{}),
		c: reliable.NewConn(reliable.Config{
			Client:             client,
			PacketSize:         int(cfg.MTU),
			MaxPacketSize:      maxPacket,
			StreamWindow:       uint64(min(cfg.MaxReceiveBufferSize, InitialReceiveWindow)),
			MaxStreamWindow:    uint64(cfg.MaxReceiveBufferSize),
			MaxIncomingStreams: maxIncomingStreams,
			Congestion:         cc,
		}),
		streams: map[uint64]*tstream{},
	}
	t.timer = time.AfterFunc(time.Hour, t.onTimer)
	t.timer.Stop()
	return t
}

// onEnd makes the transport call f on a goroutine of its own once the Conn has
// closed (at once if it has).
func (t *transport) onEnd(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.isEnded {
		go f()
		return
	}
	t.onEnded = f
}

// start begins taking packets from the DatagramConn.
func (t *transport) start() { t.dc.receivePayloads(t.receive) }

func (t *transport) receive(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := monoNow()
	_ = t.c.Receive(now, p) // a protocol error closes the Conn; Err says why
	t.afterLocked(now)
}

func (t *transport) onTimer() {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := monoNow()
	t.timerAt = 0
	t.c.OnTimer(now)
	t.afterLocked(now)
}

// afterLocked follows every change to the Conn: it takes in the streams the peer
// opened, sends what may go, wakes the streams that may proceed and re-arms the
// timer.
func (t *transport) afterLocked(now int64) {
	for {
		id, ok := t.c.AcceptStream()
		if !ok {
			break
		}
		if len(t.pending) >= t.backlog {
			t.refused++
			_ = t.c.StopReading(id, uint64(codeStreamClosed))
			_ = t.c.Reset(id, uint64(codeStreamClosed))
			continue
		}
		t.pending = append(t.pending, id)
		signal(t.acceptReady)
		if t.onAccept != nil {
			t.onAccept()
		}
	}
	bp := packetBuffers.Get().(*[]byte)
	for {
		pkt := t.c.Send(now, (*bp)[:0])
		if pkt == nil {
			break
		}
		if _, err := t.dc.Write(pkt); err != nil {
			break // closed: what is left is lost with the session
		}
	}
	packetBuffers.Put(bp)
	t.woken = t.c.Wake(t.woken[:0])
	for _, id := range t.woken {
		if st := t.streams[id]; st != nil {
			st.wakeLocked()
		}
	}
	if t.idleCh != nil && t.c.Idle() {
		close(t.idleCh)
		t.idleCh = nil
	}
	if t.c.Err() != nil && !t.isEnded {
		t.isEnded = true
		close(t.ended)
		for _, st := range t.streams {
			st.wakeLocked()
		}
		if t.onEnded != nil {
			go t.onEnded()
		}
	}
	t.armLocked(now)
}

// armLocked sets the timer for the Conn's next deadline: loss detection, an
// ACK owed, or the pacer.
func (t *transport) armLocked(now int64) {
	next := t.c.Timer()
	if p := t.c.PacingDelay(now); p != 0 && (next == 0 || p < next) {
		next = p
	}
	if next == t.timerAt {
		return
	}
	t.timerAt = next
	if next == 0 {
		t.timer.Stop()
		return
	}
	t.timer.Reset(time.Duration(max(next-now, 0)))
}

// close sends a CONNECTION_CLOSE with code (if the Conn has not closed yet) and
// stops the timer; the DatagramConn stays open for the caller to close.
func (t *transport) close(code uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.c.Close(code, "")
	t.afterLocked(monoNow()) // a closed Conn needs no timer: this stops it
}

// err is why the Conn ended, nil while it is open.
func (t *transport) err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.c.Err()
}

// whenIdle returns a channel that is closed once everything sent has been
// acknowledged and nothing waits to be sent: at once if that is so now, else when an
// ACK makes it so (afterLocked checks only while someone waits).
func (t *transport) whenIdle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.idleCh == nil {
		t.idleCh = make(chan struct{})
	}
	ch := t.idleCh
	if t.c.Idle() {
		close(ch)
		t.idleCh = nil
	}
	return ch
}

func (t *transport) stats() (reliable.ConnStats, reliable.BBRStats, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.c.Stats(), t.cc.Stats(), t.refused
}

// openStream opens a stream. While the peer allows no more (1024 open), it waits,
// looking again every streamLimitPoll: running into the limit is rare enough that a
// wake-up of its own is not worth its keep.
func (t *transport) openStream(ctx context.Context) (*tstream, error) {
	for {
		t.mu.Lock()
		id, err := t.c.OpenStream()
		if err == nil {
			st := t.addLocked(id)
			t.mu.Unlock()
			return st, nil
		}
		t.mu.Unlock()
		if !errors.Is(err, reliable.ErrStreamLimit) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.ended:
		case <-time.After(streamLimitPoll):
		}
	}
}

const streamLimitPoll = 10 * time.Millisecond

// accept returns the next stream the peer opened.
func (t *transport) accept(ctx context.Context) (*tstream, error) {
	for {
		st, err := t.tryAccept()
		if st != nil || err != nil {
			return st, err
		}
		select {
		case <-t.acceptReady:
		case <-t.ended:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// tryAccept returns the next stream the peer opened without waiting: nil and no
// error when none waits, the Conn's error once it has ended.
func (t *transport) tryAccept() (*tstream, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.pending) > 0 {
		id := t.pending[0]
		t.pending = t.pending[1:]
		if len(t.pending) == 0 {
			t.pending = nil
		} else {
			signal(t.acceptReady)
		}
		return t.addLocked(id), nil
	}
	return nil, t.c.Err()
}

// notifyAccept makes the transport call f (with its lock held: f must not block)
// whenever a stream the peer opened starts waiting to be accepted, and once now.
func (t *transport) notifyAccept(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.onAccept = f
	f()
}

func (t *transport) addLocked(id uint64) *tstream {
	st := &tstream{t: t, id: id}
	t.streams[id] = st
	return st
}

// tstream is one stream of the transport with blocking reads and writes: what a
// Stream frames its messages on.
type tstream struct {
	t  *transport
	id uint64

	// Guarded by t.mu. The channels are made by the first Read or Write that has
	// to wait: a stream read through notifyRead, as an idle connection's are, has
	// none.
	readReady  chan struct{} // capacity 1: a reader may proceed
	writeReady chan struct{} // capacity 1: a writer may proceed
	notify     func()        // notifyRead's f

	dmu       sync.Mutex // guards the deadlines and done flags; taken before a deadline's mu
	rdl, wdl  *deadline  // nil until set
	readDone  bool
	writeDone bool
}

// signalLocked wakes the stream's waiting Read and Write, if any.
func (s *tstream) signalLocked() {
	signal(s.readReady)
	signal(s.writeReady)
}

// wakeLocked wakes the stream's callers and its notify function, if it has one.
func (s *tstream) wakeLocked() {
	s.signalLocked()
	if s.notify != nil {
		s.notify()
	}
}

// notifyRead makes the transport call f (with its lock held: f must not block)
// whenever the stream may have become readable or has ended, and once now.
func (s *tstream) notifyRead(f func()) {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	s.notify = f
	f()
}

// tryRead reads what has arrived without waiting: 0 and no error when nothing has.
// Its errors are Read's.
func (s *tstream) tryRead(p []byte) (int, error) {
	t := s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.c.Read(s.id, p)
	if n > 0 || err != nil {
		t.afterLocked(monoNow()) // a window update may be owed
	}
	return n, err
}

// signal readies ch without blocking; a nil ch (nobody has waited yet) is left alone.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Read reads what has arrived, waiting until something has: io.EOF after the last
// byte, a *reliable.StreamResetError if the peer reset the stream, the Conn's error
// once it has ended and nothing is left.
func (s *tstream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	t := s.t
	for {
		t.mu.Lock()
		n, err := t.c.Read(s.id, p)
		if n > 0 || err != nil {
			t.afterLocked(monoNow()) // a window update may be owed
			t.mu.Unlock()
			return n, err
		}
		if s.readReady == nil {
			s.readReady = make(chan struct{}, 1)
		}
		ready := s.readReady
		t.mu.Unlock()
		select {
		case <-ready:
		case <-s.deadline(&s.rdl):
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// Write writes all of p, waiting while the send buffer is full (back-pressure).
func (s *tstream) Write(p []byte) (int, error) {
	t := s.t
	total := 0
	for {
		t.mu.Lock()
		n, err := t.c.Write(s.id, p)
		if n > 0 {
			t.afterLocked(monoNow())
		}
		if n == 0 && len(p) > 0 && err == nil && s.writeReady == nil {
			s.writeReady = make(chan struct{}, 1)
		}
		ready := s.writeReady
		t.mu.Unlock()
		total += n
		p = p[n:]
		if err != nil || len(p) == 0 {
			return total, err
		}
		if n == 0 {
			select {
			case <-ready:
			case <-s.deadline(&s.wdl):
				return total, os.ErrDeadlineExceeded
			}
		}
	}
}

// Close ends the sending half: a FIN follows what was written.
func (s *tstream) Close() error {
	return s.op(func(c *reliable.Conn) error { return c.CloseWrite(s.id) }, false, true)
}

// CancelRead stops reading: the peer is asked to stop sending (STOP_SENDING).
func (s *tstream) CancelRead(code uint64) {
	_ = s.op(func(c *reliable.Conn) error { return c.StopReading(s.id, code) }, true, false)
}

// CancelWrite abandons the sending half (RESET_STREAM).
func (s *tstream) CancelWrite(code uint64) {
	_ = s.op(func(c *reliable.Conn) error { return c.Reset(s.id, code) }, false, true)
}

// finishRead marks the reading half as done with (EOF or reset seen).
func (s *tstream) finishRead() { _ = s.op(nil, true, false) }

// op runs f on the Conn and records which halves are now done with; once both are,
// the stream leaves the wake-up table.
func (s *tstream) op(f func(*reliable.Conn) error, read, write bool) error {
	t := s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	var err error
	if f != nil {
		err = f(t.c)
		t.afterLocked(monoNow())
		// A Read or Write waiting on this stream must see what changed: the Conn's
		// Wake reports what the peer did, not what we did.
		s.signalLocked()
	}
	s.dmu.Lock()
	s.readDone = s.readDone || read
	s.writeDone = s.writeDone || write
	done := s.readDone && s.writeDone
	s.dmu.Unlock()
	if done {
		delete(t.streams, s.id)
	}
	if errors.Is(err, reliable.ErrStreamClosed) {
		err = nil // already over
	}
	return err
}

// deadline returns the channel of the deadline in *d, nil (never ready) if none is set.
func (s *tstream) deadline(d **deadline) <-chan struct{} {
	s.dmu.Lock()
	dl := *d
	s.dmu.Unlock()
	if dl == nil {
		return nil
	}
	return dl.done()
}

// setDeadline sets the deadline in *d; the zero time drops it, so that a stream whose
// deadline was set for one exchange and cleared holds none. A call waiting on a
// dropped deadline is woken and finds none.
func (s *tstream) setDeadline(d **deadline, at time.Time) {
	s.dmu.Lock()
	switch {
	case at.IsZero() && *d == nil:
		s.dmu.Unlock()
		return
	case at.IsZero():
		(*d).stop()
		*d = nil
	default:
		if *d == nil {
			*d = newDeadline()
		}
		(*d).set(at)
	}
	s.dmu.Unlock()
	s.t.mu.Lock()
	s.signalLocked() // a waiting call picks up the new deadline
	s.t.mu.Unlock()
}

func (s *tstream) SetReadDeadline(t time.Time) error  { s.setDeadline(&s.rdl, t); return nil }
func (s *tstream) SetWriteDeadline(t time.Time) error { s.setDeadline(&s.wdl, t); return nil }
func (s *tstream) SetDeadline(t time.Time) error {
	s.setDeadline(&s.rdl, t)
	s.setDeadline(&s.wdl, t)
	return nil
}
