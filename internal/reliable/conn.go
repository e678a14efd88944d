package reliable

import (
	"fmt"
	"time"
)

// Defaults for Config's zero values.
const (
	// DefaultPacketSize fits a sealed packet in the IPv6 minimum MTU (the
	// secure package's DefaultMTU).
	DefaultPacketSize = 1200
	// DefaultStreamWindow is how far a peer may send ahead of what the
	// application has read on one stream: 8 MiB is a 100 ms path at 80 MB/s.
	DefaultStreamWindow = 8 << 20
	// DefaultMaxIncomingStreams is how many streams the peer may have open
	// at once.
	DefaultMaxIncomingStreams = 1024
)

// Config configures a Conn.
type Config struct {
	// Client is true on the Noise initiator's side: it opens streams 0, 4,
	// 8, …, the other side 1, 5, 9, ….
	Client bool
	// PacketSize is the largest packet, before sealing, until path MTU
	// discovery finds a larger one: every path must carry it. Zero means
	// DefaultPacketSize.
	PacketSize int
	// MaxPacketSize is the largest packet path MTU discovery tries (RFC
	// 9000 §14.3, pmtu.go), before sealing; the packet size grows up to it
	// on a path that carries it. Zero means no discovery: packets stay at
	// PacketSize.
	MaxPacketSize int
	// StreamWindow is each stream's receive window. Zero means
	// DefaultStreamWindow. Windows are limits, not allocations: only data
	// received and not yet read takes memory. A window below
	// InitialMaxStreamData binds only past that offset: the peer starts
	// from the initial limit, and there are no transport parameters to
	// tell it less.
	StreamWindow uint64
	// MaxStreamWindow is how far a stream's window may grow (window.go): it
	// doubles, up to this, while the application reads so fast that the
	// window, not the path, would set the rate. Zero means StreamWindow: the
	// window stays as it is.
	MaxStreamWindow uint64
	// ConnWindow is the connection's receive window over all streams. Zero
	// means twice StreamWindow. Below InitialMaxData it binds only past
	// that, as StreamWindow.
	ConnWindow uint64
	// MaxConnWindow is how far the connection's window may grow, as
	// MaxStreamWindow; it is kept at least twice the largest stream window.
	// Zero means twice MaxStreamWindow when streams may grow, else
	// ConnWindow.
	MaxConnWindow uint64
	// SendBuffer is how many bytes written to one stream and not yet
	// acknowledged Write accepts, at least: the peer's window in flight,
	// plus as much again, so that one loss, which holds back the release of
	// everything after it until it is repaired, does not starve the sender
	// (then BBR sees the application as the limit and never leaves STARTUP;
	// measured in TestConnTransferLossy). The buffer follows the peer's
	// window when that grows past half of it. Zero means twice StreamWindow.
	SendBuffer int
	// MaxIncomingStreams is how many streams the peer may have open at once.
	// Zero means DefaultMaxIncomingStreams. The limit is raised (MAX_STREAMS)
	// each time half of it has ended, so the peer has at least half of it
	// free. Below InitialMaxStreams it binds only once the peer has opened
	// that many, as StreamWindow.
	MaxIncomingStreams uint64
	// InitialRTT is the RTT known before the first sample (the handshake's).
	// Zero means RFC 9002's 333 ms.
	InitialRTT time.Duration
	// Congestion is the congestion controller. Required.
	Congestion Congestion
}

func (c Config) withDefaults() Config {
	if c.PacketSize == 0 {
		c.PacketSize = DefaultPacketSize
	}
	if c.StreamWindow == 0 {
		c.StreamWindow = DefaultStreamWindow
	}
	if c.ConnWindow == 0 {
		c.ConnWindow = 2 * c.StreamWindow
	}
	if c.MaxStreamWindow < c.StreamWindow {
		c.MaxStreamWindow = c.StreamWindow
	}
	if c.MaxConnWindow == 0 && c.MaxStreamWindow > c.StreamWindow {
		c.MaxConnWindow = 2 * c.MaxStreamWindow
	}
	if c.MaxConnWindow < c.ConnWindow {
		c.MaxConnWindow = c.ConnWindow
	}
	if c.SendBuffer == 0 {
		c.SendBuffer = int(min(2*c.StreamWindow, 1<<30))
	}
	if c.MaxIncomingStreams == 0 {
		c.MaxIncomingStreams = DefaultMaxIncomingStreams
	}
	return c
}

// windowUpdateFraction: a receiver raises a window (MAX_DATA,
// MAX_STREAM_DATA) once this fraction of it has been read since the last
// raise. Half, the obvious choice, left a sender 4 MiB of an 8 MiB window,
// less than one round trip of a 50 MB/s path with a queue (a simulated 40 ms
// path stalled on it every round trip); quic-go raises at a quarter too.
const windowUpdateFraction = 4

// ConnStats is a snapshot of a Conn's counters.
type ConnStats struct {
	PacketsSent, PacketsReceived uint64
	BytesSent, BytesReceived     uint64 // packet bytes, before sealing
	PacketsLost, BytesLost       uint64 // declared lost (RFC 9002 §6)
	ProbeTimeouts                uint64
	SRTT, MinRTT, LatestRTT      time.Duration
	BytesInFlight                int
	// PacketSize is the largest packet now: Config.PacketSize, or what path
	// MTU discovery raised it to.
	PacketSize int
	// MTUProbes and MTUProbesLost count path MTU probes (not in the packet
	// counts' losses); MTUBlackHoles counts falls back to Config.PacketSize.
	MTUProbes, MTUProbesLost, MTUBlackHoles uint64
}

// Conn is one connection's transport state: its streams, what it has sent
// and not yet seen acknowledged, what it has received and owes an ACK for.
// It is a pure state machine (see the package comment): the caller feeds it
// packets (Receive) and timer expiries (OnTimer), asks it for packets to
// send (Send) until it has none, and re-arms one timer at Timer. Not safe
// for concurrent use.
type Conn struct {
	cfg Config
	cc  Congestion
	rec *recovery
	ack ackTracker

	nextPN uint64
	probes int // PTO probes owed (RFC 9002 §6.2.4)

	packetSize int        // the largest packet now (pmtu.go)
	pmtu       pmtuSearch // path MTU discovery
	dataSentAt int64      // when the last packet with more than a PING went out

	streams     map[uint64]*stream
	streamsPeak int       // the most streams held since the map was made
	active      []*stream // streams that may have something to send, round-robin
	wake        []uint64  // streams whose application side may proceed (see Wake)
	acceptQueue []uint64  // streams the peer opened, not yet accepted

	// Stream limits (RFC 9000 §4.6), counted in streams of one initiator.
	localOpened    uint64 // streams we opened
	peerMaxStreams uint64 // how many the peer lets us open
	peerOpened     uint64 // streams the peer opened (all below are implied)
	peerClosed     uint64 // of those, forgotten: each frees a slot
	maxStreams     uint64 // how many we let the peer open, as advertised
	maxStreamsOwed bool

	// Connection flow control (RFC 9000 §4.1).
	peerMaxData  uint64 // how far we may send, summed over streams
	sentData     uint64 // highest offsets sent, summed
	maxData      uint64 // how far the peer may send, as advertised
	connWindow   uint64 // the connection's window now: Config.ConnWindow, grown (window.go)
	connTuner    windowTuner
	recvData     uint64 // highest offsets received, summed
	consumedData uint64 // bytes the application has read, summed
	maxDataOwed  bool

	closing  bool        // a CONNECTION_CLOSE is owed
	closed   *CloseError // set once closed either way
	closeErr error       // why, for the application (closed or a protocol error)

	// Scratch, reused so that a packet costs no allocation.
	frame          Frame
	ackedPNs, lost []uint64

	stats ConnStats
}

// stream is one stream's two halves and its place in the Conn's queues.
type stream struct {
	id       uint64
	send     *sendStream
	recv     *recvStream
	consumed uint64 // recv.consumed() as the connection's window last counted it
	active   bool   // in Conn.active
	woken    bool   // in Conn.wake
}

// NewConn returns a connection's transport state. The congestion controller
// is required.
func NewConn(cfg Config) *Conn {
	cfg = cfg.withDefaults()
	if cfg.Congestion == nil {
		panic("reliable: Config.Congestion is nil")
	}
	c := &Conn{
		cfg:            cfg,
		cc:             cfg.Congestion,
		rec:            newRecovery(cfg.InitialRTT),
		streams:        map[uint64]*stream{},
		peerMaxStreams: InitialMaxStreams,
		maxStreams:     InitialMaxStreams,
		peerMaxData:    InitialMaxData,
		maxData:        InitialMaxData,
		connWindow:     cfg.ConnWindow,
		packetSize:     cfg.PacketSize,
		pmtu:           pmtuSearch{ceiling: cfg.MaxPacketSize},
	}
	c.pmtu.restart()
	// No transport parameters: raise the initial limits at once (see the
	// package comment).
	if cfg.ConnWindow > c.maxData {
		c.maxData, c.maxDataOwed = cfg.ConnWindow, true
	}
	if cfg.MaxIncomingStreams > c.maxStreams {
		c.maxStreams, c.maxStreamsOwed = cfg.MaxIncomingStreams, true
	}
	return c
}

// Err is why the connection ended, nil while it is open: a *CloseError, or
// a protocol error that made us close it (wrapping ErrProtocol and its kin).
func (c *Conn) Err() error { return c.closeErr }

// Closed reports whether the connection has ended: a CONNECTION_CLOSE went
// out or came in.
func (c *Conn) Closed() bool { return c.closed != nil && !c.closing }

// Close ends the connection: the next Send returns a CONNECTION_CLOSE with
// code and reason, and nothing is sent after it. Data received and not yet
// read stays readable; writes fail.
func (c *Conn) Close(code uint64, reason string) {
	if c.closed != nil {
		return
	}
	c.closed = &CloseError{Code: code, Reason: reason}
	c.closeErr = c.closed
	c.closing = true
	c.wakeAll()
}

// fail closes the connection because the peer broke the protocol.
func (c *Conn) fail(err error) error {
	if c.closed == nil {
		c.Close(CodeProtocolError, err.Error())
		c.closeErr = err
	}
	return err
}

// isLocal reports whether we opened stream id (RFC 9000 §2.1: bit 0 is the
// initiator, 0 for the client).
func (c *Conn) isLocal(id uint64) bool { return (id&1 == 0) == c.cfg.Client }

// OpenStream opens a stream and returns its ID. The peer learns of it with
// its first frame, so a stream with nothing written is invisible to it.
func (c *Conn) OpenStream() (uint64, error) {
	if c.closed != nil {
		return 0, c.closeErr
	}
	if c.localOpened >= c.peerMaxStreams {
		return 0, ErrStreamLimit
	}
	id := c.localOpened << 2
	if !c.cfg.Client {
		id |= 1
	}
	c.localOpened++
	c.newStream(id)
	return id, nil
}

// newStream adds stream id to the table.
func (c *Conn) newStream(id uint64) *stream {
	st := &stream{
		id:   id,
		send: newSendStream(id, InitialMaxStreamData, c.cfg.SendBuffer),
		recv: newRecvStream(id, c.cfg.StreamWindow),
	}
	st.recv.maxWindow = c.cfg.MaxStreamWindow
	// A send buffer may grow as far as the windows may (the peers' configs
	// match): SendBuffer, times MaxStreamWindow/StreamWindow.
	st.send.bufferMax = int(min(uint64(c.cfg.SendBuffer)*(c.cfg.MaxStreamWindow/c.cfg.StreamWindow), 1<<30))
	c.streams[id] = st
	c.streamsPeak = max(c.streamsPeak, len(c.streams))
	// Its first MAX_STREAM_DATA is owed at once; but a stream of ours
	// sends it with its first frame (Write, CloseWrite, Reset and
	// StopReading queue the stream): sent now, it would make the stream
	// visible to the peer, in its accept queue and counted against its
	// limit, before we use it (see OpenStream).
	if !c.isLocal(id) {
		c.activate(st)
	}
	return st
}

// AcceptStream returns the next stream the peer opened, if any.
func (c *Conn) AcceptStream() (uint64, bool) {
	if len(c.acceptQueue) == 0 {
		return 0, false
	}
	id := c.acceptQueue[0]
	c.acceptQueue = c.acceptQueue[1:]
	if len(c.acceptQueue) == 0 {
		c.acceptQueue = nil // an idle connection keeps no array
	}
	return id, true
}

// Write copies as much of p into stream id's send buffer as fits and
// returns how much; 0 means the buffer is full (wait for Wake). Writing
// after CloseWrite fails with ErrStreamClosed, after a reset (ours, or the
// one that answers the peer's STOP_SENDING) with a *StreamResetError.
func (c *Conn) Write(id uint64, p []byte) (int, error) {
	if c.closed != nil {
		return 0, c.closeErr
	}
	st, ok := c.streams[id]
	if !ok {
		return 0, ErrStreamClosed
	}
	if closed, reset, code := st.send.ended(); reset {
		return 0, &StreamResetError{Code: code}
	} else if closed {
		return 0, ErrStreamClosed
	}
	n := st.send.write(p)
	if n > 0 {
		c.activate(st)
	}
	return n, nil
}

// Writable is how many bytes Write would take on stream id now.
func (c *Conn) Writable(id uint64) int {
	st, ok := c.streams[id]
	if !ok || c.closed != nil {
		return 0
	}
	return st.send.writable()
}

// CloseWrite finishes stream id's sending half: a FIN follows what was
// written.
func (c *Conn) CloseWrite(id uint64) error {
	st, ok := c.streams[id]
	if !ok {
		return ErrStreamClosed
	}
	st.send.close()
	c.activate(st)
	return nil
}

// Reset abandons stream id's sending half with an application error code
// (RESET_STREAM).
func (c *Conn) Reset(id, code uint64) error {
	st, ok := c.streams[id]
	if !ok {
		return ErrStreamClosed
	}
	st.send.reset(code)
	c.activate(st)
	c.forgetIfDone(st)
	return nil
}

// StopReading abandons stream id's receiving half: what is buffered is
// dropped and the peer is asked to stop (STOP_SENDING).
func (c *Conn) StopReading(id, code uint64) error {
	st, ok := c.streams[id]
	if !ok {
		return ErrStreamClosed
	}
	st.recv.stopReading(code)
	c.syncConsumed(st) // what was buffered and dropped frees the connection's window too
	c.activate(st)
	c.forgetIfDone(st)
	return nil
}

// Read reads in-order bytes of stream id: io.EOF after the last, a
// *StreamResetError if the peer reset it, (0, nil) when nothing is there yet
// (wait for Wake). After the connection closed, what was received can still
// be read; then Read returns Err.
func (c *Conn) Read(id uint64, p []byte) (int, error) {
	st, ok := c.streams[id]
	if !ok {
		return 0, ErrStreamClosed
	}
	n, err := st.recv.read(p)
	if c.syncConsumed(st) {
		if _, owed := st.recv.maxDataOwed(); owed {
			c.activate(st)
		}
	}
	if n == 0 && err == nil && c.closed != nil {
		err = c.closeErr
	}
	if err != nil {
		c.forgetIfDone(st)
	}
	return n, err
}

// syncConsumed counts what stream st's application read (or what was
// dropped: a reset or stopped stream gives its bytes back, RFC 9000 §4.5)
// against the connection's window, and owes a MAX_DATA once a
// windowUpdateFraction of it is used. It reports whether anything new was
// counted.
func (c *Conn) syncConsumed(st *stream) bool {
	n := st.recv.consumed() - st.consumed
	if n == 0 {
		return false
	}
	st.consumed += n
	c.consumedData += n
	// Compared as a sum, not a difference: with a ConnWindow below
	// InitialMaxData, the limit the peer started from is above
	// consumedData+ConnWindow, and a limit never goes down (RFC 9000 §4.1:
	// the peer ignores a smaller MAX_DATA, so we would close the
	// connection on data it was allowed to send).
	if next := c.consumedData + c.connWindow; next >= c.maxData+c.connWindow/windowUpdateFraction {
		c.maxData = next
		c.maxDataOwed = true
	}
	return true
}

// Readable reports whether Read on stream id would return something.
func (c *Conn) Readable(id uint64) bool {
	st, ok := c.streams[id]
	return !ok || st.recv.readable() || c.closed != nil
}

// Wake appends to ids the streams whose readers or writers may proceed
// since the last call (data or EOF arrived, room to write opened, the
// stream or the connection ended) and returns it.
func (c *Conn) Wake(ids []uint64) []uint64 {
	for _, id := range c.wake {
		if st, ok := c.streams[id]; ok {
			st.woken = false
		}
		ids = append(ids, id)
	}
	// Many streams woke once, few now: let the large array go, or an idle
	// connection keeps it.
	c.wake = trimScratch(c.wake, len(c.wake) <= scratchIdleCap)
	return ids
}

// scratchIdleCap is the capacity of a reused scratch array (the wake list,
// the packet numbers of an ACK) that is kept however idle the connection:
// enough for a request/response pattern to allocate nothing per exchange.
// A larger one, grown by a burst, is let go once the burst is over.
const scratchIdleCap = 8

// trimScratch empties a scratch array for reuse, or drops it if it is
// larger than scratchIdleCap and idle says the burst that grew it is over.
func trimScratch[T any](s []T, idle bool) []T {
	if idle && cap(s) > scratchIdleCap {
		return nil
	}
	return s[:0]
}

func (c *Conn) wakeStream(st *stream) {
	if !st.woken {
		st.woken = true
		c.wake = append(c.wake, st.id)
	}
}

func (c *Conn) wakeAll() {
	for _, st := range c.streams {
		c.wakeStream(st)
	}
}

// activate puts st in the send queue if it is not there.
func (c *Conn) activate(st *stream) {
	if !st.active {
		st.active = true
		c.active = append(c.active, st)
	}
}

// forgetIfDone drops a stream both of whose halves are over; a peer's
// stream frees a slot for the peer (MAX_STREAMS).
func (c *Conn) forgetIfDone(st *stream) {
	if !st.send.finished() || !st.recv.finished() {
		return
	}
	if _, ok := c.streams[st.id]; !ok {
		return
	}
	delete(c.streams, st.id)
	c.shrinkStreams()
	if !c.isLocal(st.id) {
		c.peerClosed++
		// As a sum, as in syncConsumed: with MaxIncomingStreams below
		// InitialMaxStreams the peer keeps the initial limit until the
		// streams it closed pass it (RFC 9000 §4.6: MAX_STREAMS never
		// lowers a limit).
		if next := c.peerClosed + c.cfg.MaxIncomingStreams; next >= c.maxStreams+c.cfg.MaxIncomingStreams/2 {
			c.maxStreams = next
			c.maxStreamsOwed = true
		}
	}
}

// streamsIdleSlots: a stream table that has held more streams than this is
// rebuilt once it holds a quarter of its peak. A Go map never shrinks, so
// without this a connection that once had thousands of streams open would
// hold their table for as long as it lives; rebuilding at a quarter costs
// one copy of each stream left per three forgotten.
const streamsIdleSlots = 8

func (c *Conn) shrinkStreams() {
	if c.streamsPeak <= streamsIdleSlots || 4*len(c.streams) > c.streamsPeak {
		return
	}
	m := make(map[uint64]*stream, len(c.streams))
	for id, st := range c.streams {
		m[id] = st
	}
	c.streams, c.streamsPeak = m, len(m)
}

// Timer is when OnTimer must run next (ns on the caller's clock); 0 means
// no timer is needed.
func (c *Conn) Timer() int64 {
	if c.closed != nil && !c.closing {
		return 0
	}
	t := c.rec.timer()
	if d := c.ack.deadline(); d != 0 && (t == 0 || d < t) {
		t = d
	}
	return t
}

// OnTimer runs the loss-detection and probe timers (RFC 9002 §6.2) and
// makes an ACK owed once its delay is up; call Send after it.
func (c *Conn) OnTimer(now int64) {
	if c.closed != nil {
		return
	}
	if t := c.rec.timer(); t != 0 && t <= now {
		lost, probes := c.rec.onTimer(now)
		c.lost = c.lost[:0]
		for i := range lost {
			c.onPacketLost(&lost[i])
		}
		if len(c.lost) > 0 { // MTU probes are not the controller's business
			c.cc.OnAck(now, nil, c.lost, 0)
		}
		if probes > 0 {
			c.stats.ProbeTimeouts++
			c.probes = probes
			c.onBlackHole()
		}
	}
}

// PacingDelay is when Send would next have something it is not yet allowed
// to send (pacing); 0 means nothing waits on the pacer. The caller arms its
// timer for the earlier of this and Timer.
func (c *Conn) PacingDelay(now int64) int64 {
	if c.closed != nil || !c.hasData() || int64(c.rec.bytesInFlight()) >= c.cc.Window() {
		return 0
	}
	if t := c.cc.NextSend(now); t > now {
		return t
	}
	return 0
}

// Idle reports whether nothing is in flight or waiting to be sent: every
// byte written and every FIN is acknowledged. A graceful close waits for it.
func (c *Conn) Idle() bool {
	return c.rec.bytesInFlight() == 0 && !c.hasData()
}

// hasData reports whether some stream or the connection has an
// ack-eliciting frame to send.
func (c *Conn) hasData() bool {
	if c.maxDataOwed || c.maxStreamsOwed {
		return true
	}
	for _, st := range c.active {
		if c.streamHasData(st) {
			return true
		}
	}
	return false
}

func (c *Conn) streamHasData(st *stream) bool {
	if _, _, owed := st.send.resetOwed(); owed {
		return true
	}
	if _, owed := st.recv.stopOwed(); owed {
		return true
	}
	if _, owed := st.recv.maxDataOwed(); owed {
		return true
	}
	return st.send.hasData(c.peerMaxData - c.sentData)
}

// Stats returns a snapshot of the counters.
func (c *Conn) Stats() ConnStats {
	s := c.stats
	r := c.rec.rtt()
	s.SRTT, s.MinRTT, s.LatestRTT = r.Smoothed(), r.Min(), r.Latest()
	s.BytesInFlight = c.rec.bytesInFlight()
	s.PacketSize = c.packetSize
	return s
}

// String names the connection's side, for logs.
func (c *Conn) String() string {
	if c.cfg.Client {
		return fmt.Sprintf("reliable.Conn(client, %d streams)", len(c.streams))
	}
	return fmt.Sprintf("reliable.Conn(server, %d streams)", len(c.streams))
}
