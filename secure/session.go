package secure

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swarmdb/swarmdb/internal/reliable"
)

// Session defaults. Each is a Config field's zero value.
const (
	// DefaultMTU is the transport's first packet size: with PacketOverhead and UDP/IPv6 headers it
	// fits the IPv6 minimum MTU (1280), so no path needs IP fragmentation. Path MTU
	// discovery (Config.PathMTUDiscovery) raises it towards MaxMTU.
	DefaultMTU = 1200
	// MaxMTU is the largest packet path MTU discovery may try.
	// Sealed and with IPv4/UDP headers it is 1505 bytes, just above Ethernet's 1500, so
	// the search ends at what the path carries: 1447 on IPv4, 1427 on IPv6.
	MaxMTU = 1452
	// DefaultMaxReceiveBufferSize is the largest receive window of one stream (the
	// connection's is twice that). Windows start at InitialReceiveWindow and grow
	// while the reader keeps up (internal/reliable/window.go): 32 MiB is a 100 ms
	// path at 320 MB/s, and the bench's 80 ms WAN lab ran 30–44 MiB/s under a
	// fixed 8 MiB window, 44–49 under 32.
	DefaultMaxReceiveBufferSize = 32 << 20
	// InitialReceiveWindow is where a stream's receive window starts (or at
	// MaxReceiveBufferSize, if that is smaller): 8 MiB is a 100 ms path at 80 MB/s.
	// A peer can fill a window that our application does not read, so it only
	// grows for an application that keeps up.
	InitialReceiveWindow = 8 << 20
	// DefaultMaxMessageSize is the largest message one Stream.Write sends unsplit.
	DefaultMaxMessageSize = 64 << 10
	// DefaultKeepaliveInterval: a session that has sent nothing for this long sends a
	// keepalive datagram, so the peer hears from it at least this often.
	DefaultKeepaliveInterval = 2 * time.Second
	// DefaultDeadTimeout: after this much silence the peer is dead. 15 s rides out a
	// Wi-Fi roam or a short outage but is half ICE consent freshness's 30 s (RFC 7675).
	DefaultDeadTimeout = 15 * time.Second
	// DefaultCloseTimeout bounds the graceful close: how long a closing end waits for
	// the peer to read what was sent and close the connection.
	DefaultCloseTimeout = 3 * time.Second
	// DefaultAcceptBacklog is how many streams the peer may open ahead of AcceptStream;
	// further ones are reset.
	DefaultAcceptBacklog = 64
)

// Config configures a Session. The zero value works.
type Config struct {
	// Logger receives session logs. Nil means discard.
	Logger *slog.Logger
	// MTU is the transport's packet size before sealing. Zero means DefaultMTU. It must not
	// exceed Datagram.MaxPayload.
	MTU uint32
	// PathMTUDiscovery lets the session raise its packet size from MTU towards MaxMTU
	// by probing with larger packets (DPLPMTUD, RFC 8899: a probe is a padded PING
	// that counts only when acknowledged, so a lost probe costs nothing but itself).
	// Set it only when the socket below sets the IP Don't Fragment bit, so that a
	// packet too large for the path is lost rather than fragmented; the holepunch
	// endpoint sets it when its link says so. It is ignored when the DatagramConn's
	// MaxPayload is below MaxMTU. Once found, the size is kept: a path whose MTU later
	// shrinks loses the larger packets, and the session ends as a dead peer.
	PathMTUDiscovery bool
	// MaxReceiveBufferSize is the largest receive window of one stream in bytes (the
	// connection's is twice that); windows start at InitialReceiveWindow and grow
	// while the application keeps up. Zero means DefaultMaxReceiveBufferSize.
	MaxReceiveBufferSize uint32
	// MaxMessageSize is the largest message Stream.Write sends as one message; larger
	// writes are split. Zero means DefaultMaxMessageSize. Capped at half the receive
	// buffer so a whole message can always be reassembled.
	MaxMessageSize uint32
	// KeepaliveInterval: send a keepalive after this long without sending. Zero means
	// DefaultKeepaliveInterval. The peer's DeadTimeout must be well above it.
	KeepaliveInterval time.Duration
	// DeadTimeout: close the session with ErrPeerDead after this much silence. Zero
	// means DefaultDeadTimeout. A dead peer is noticed once DeadTimeout has passed
	// (the keepalive timer wakes for it).
	DeadTimeout time.Duration
	// CloseTimeout bounds the graceful shutdown in Close. Zero means DefaultCloseTimeout.
	CloseTimeout time.Duration
	// AcceptBacklog: streams opened by the peer and not yet accepted. Zero means
	// DefaultAcceptBacklog.
	AcceptBacklog int
	// Datagram configures the DatagramConn that Open creates. Not used by Client and
	// Server, which receive one.
	Datagram DatagramConfig
}

func (c *Config) withDefaults() Config {
	out := *c
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	if out.MTU == 0 {
		out.MTU = DefaultMTU
	}
	if out.MaxReceiveBufferSize == 0 {
		out.MaxReceiveBufferSize = DefaultMaxReceiveBufferSize
	}
	if out.MaxMessageSize == 0 {
		out.MaxMessageSize = DefaultMaxMessageSize
	}
	out.MaxMessageSize = min(out.MaxMessageSize, out.MaxReceiveBufferSize/2)
	if out.KeepaliveInterval <= 0 {
		out.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if out.DeadTimeout <= 0 {
		out.DeadTimeout = DefaultDeadTimeout
	}
	// At least two keepalives must be lost before the peer is declared dead.
	out.KeepaliveInterval = min(out.KeepaliveInterval, out.DeadTimeout/3)
	if out.CloseTimeout <= 0 {
		out.CloseTimeout = DefaultCloseTimeout
	}
	if out.AcceptBacklog <= 0 {
		out.AcceptBacklog = DefaultAcceptBacklog
	}
	if out.Datagram.Logger == nil {
		out.Datagram.Logger = out.Logger
	}
	return out
}

// SessionStats is a snapshot of a session's counters.
type SessionStats struct {
	BytesSent, BytesReceived uint64        // transport packet bytes (before sealing)
	LostBytes                uint64        // bytes of packets declared lost (RFC 9002 loss detection)
	StreamsOpened            uint64        // by OpenStream
	StreamsAccepted          uint64        // delivered to AcceptStream
	StreamsRefused           uint64        // reset because the accept backlog was full
	SRTT, MinRTT             time.Duration // the smoothed RTT (RFC 9002); BBR's windowed minimum
	CWND                     uint64        // BBR's congestion window, bytes
	PacingRate, BtlBw        float64       // BBR's pacing rate and bandwidth estimate, bytes/s
	CCState                  string        // BBR's mode: startup, drain, probe_bw, probe_rtt
	PacketSize               uint64        // the packet size now: MTU, raised by path MTU discovery
	LossEvents               uint64        // ACKs that reported loss
	Datagram                 DatagramStats
}

// Session is an authenticated, encrypted connection with one peer over sealed
// datagrams: reliable, ordered, BBR-paced streams (internal/reliable, driven by
// transport.go). Stream 0 exists from the start (Stream0) and belongs to the database
// layer; applications open more with OpenStream/AcceptStream.
//
// A session has no goroutine of its own while it is up: packets are processed on the
// goroutine that receives them, stream calls on their callers', the keepalive and
// dead-peer check on a timer. The teardown runs on the goroutine of what ended it.
// Close stops everything and waits.
type Session struct {
	// immutable after setup
	cfg     Config
	log     *slog.Logger
	dc      *DatagramConn
	tr      *transport
	stream0 *Stream

	closeReq   chan struct{}           // closed by Close
	ctx        context.Context         // canceled, with Err as its cause, when the session is fully torn down
	cancel     context.CancelCauseFunc // called once, by teardown
	closeOnce  sync.Once
	live       liveness
	keepalive  *time.Timer   // runs tick; armed by start
	tearing    atomic.Bool   // teardown has begun
	streamDone chan struct{} // a stream finished reading (capacity 1: a wake-up)

	mu      sync.Mutex // guards err, streams, onEnd, ended
	err     error
	streams map[*Stream]struct{} // streams whose read side is not finished
	onEnd   []func()             // OnEnd's functions, until the session has ended
	ended   bool                 // teardown is over: OnEnd runs its function at once

	opened, acceptedN atomic.Uint64
}

// Open wraps inner (a connected datagram conn, e.g. an ice.Conn) in a DatagramConn with
// the handshake's keys and establishes the session. The handshake initiator is the
// client. inner is owned by the session from now on, also on error.
func Open(ctx context.Context, inner net.Conn, keys Keys, cfg Config) (*Session, error) {
	full := cfg.withDefaults()
	dc := NewDatagramConn(inner, keys, full.Datagram)
	if keys.Initiator {
		return Client(ctx, dc, cfg)
	}
	return Server(ctx, dc, cfg)
}

// Client establishes a session as the client (the handshake initiator) over conn and
// opens stream 0. There is no round trip to wait for: the Noise handshake has done all
// the establishing there is. conn is owned by the session from now on, also on error.
func Client(ctx context.Context, conn *DatagramConn, cfg Config) (*Session, error) {
	cfg = cfg.withDefaults()
	s := newSession(cfg, conn, true)
	st, err := s.tr.openStream(ctx)
	if err == nil {
		s.stream0 = s.newStream(st)
		_, err = st.Write([]byte{sessionVersion})
	}
	if err != nil {
		err = fmt.Errorf("secure: open stream 0: %w", err)
		s.abort(err)
		return nil, err
	}
	s.start()
	s.log.Debug("secure: session established", "stage", "client")
	return s, nil
}

// Server establishes a session as the server (the handshake responder) over conn and
// waits for the client's stream 0. conn is owned by the session from now on, also on
// error.
func Server(ctx context.Context, conn *DatagramConn, cfg Config) (*Session, error) {
	cfg = cfg.withDefaults()
	s := newSession(cfg, conn, false)
	st, err := s.awaitStream0(ctx)
	if err != nil {
		s.abort(err)
		return nil, err
	}
	s.stream0 = st
	s.start()
	s.log.Debug("secure: session established", "stage", "server")
	return s, nil
}

func newSession(cfg Config, dc *DatagramConn, client bool) *Session {
	ctx, cancel := context.WithCancelCause(context.Background())
	s := &Session{
		ctx:        ctx,
		cancel:     cancel,
		cfg:        cfg,
		log:        cfg.Logger.With("peer", hex.EncodeToString(dc.RemotePublicKey())),
		dc:         dc,
		tr:         newTransport(dc, cfg, client),
		closeReq:   make(chan struct{}),
		live:       liveness{interval: cfg.KeepaliveInterval, timeout: cfg.DeadTimeout},
		streamDone: make(chan struct{}, 1),
		streams:    map[*Stream]struct{}{},
	}
	s.tr.start()
	return s
}

// start arms the keepalive and the watch on the transport; the session has no
// goroutine of its own until it ends.
func (s *Session) start() {
	// Armed only once the field is set: tick re-arms it, and may run at once.
	s.keepalive = time.AfterFunc(time.Hour, s.tick)
	s.keepalive.Reset(s.cfg.KeepaliveInterval)
	s.tr.onEnd(func() { s.teardown(causeEnded, nil) })
}

// awaitStream0 waits for the client's stream 0 and checks its hello.
func (s *Session) awaitStream0(ctx context.Context) (*Stream, error) {
	ts, err := s.tr.accept(ctx)
	if err != nil {
		return nil, fmt.Errorf("secure: waiting for stream 0: %w", err)
	}
	st := s.newStream(ts)
	stop := context.AfterFunc(ctx, func() { ts.SetReadDeadline(time.Now()) })
	defer stop()
	hello, err := st.readOpenByte()
	if err != nil {
		return nil, fmt.Errorf("secure: reading session hello: %w", err)
	}
	if ts.id != 0 {
		return nil, fmt.Errorf("%w: first stream is %d", ErrProtocol, ts.id)
	}
	if hello != sessionVersion {
		return nil, fmt.Errorf("%w: session version %d", ErrVersion, hello)
	}
	return st, nil
}

// abort ends a session whose setup failed, at once and without a goodbye.
func (s *Session) abort(err error) {
	s.start()
	s.teardown(causeAbort, err)
}

// tick is the keepalive, on its own timer: it sends an empty sealed datagram when the
// session has sent nothing for a KeepaliveInterval, and tears the session down when
// the peer has been silent for DeadTimeout.
func (s *Session) tick() {
	if s.tearing.Load() {
		return
	}
	now := time.Now()
	sent := s.dc.LastSend()
	ping, dead := s.live.tick(now, sent, s.dc.LastReceive())
	if dead {
		s.teardown(causeDead, fmt.Errorf("%w: silent for %v", ErrPeerDead, now.Sub(s.dc.LastReceive()).Round(time.Millisecond)))
		return
	}
	if ping {
		s.dc.Write(nil) // an empty sealed datagram: a keepalive
		sent = now      // one that failed is tried again an interval later, not at once
	}
	if last := s.dc.LastSend(); last.After(sent) {
		sent = last
	}
	s.keepalive.Reset(s.live.wait(time.Now(), sent, s.dc.LastReceive()))
}

// Why a session ends.
type endCause uint8

const (
	causeClose endCause = iota // local Close
	causeEnded                 // the transport closed: the peer said goodbye or broke off, or broke the protocol
	causeDead                  // the peer went silent
	causeAbort                 // the setup failed: no goodbye, nothing to say it to
)

// teardown ends the session, once, whichever cause comes first; it runs on the
// goroutine of that cause (Close's caller, the keepalive timer's, or one the transport
// starts when it ends) and returns at once on any other. reason is why, for causeDead
// and causeAbort.
func (s *Session) teardown(cause endCause, reason error) {
	if !s.tearing.CompareAndSwap(false, true) {
		return
	}
	s.keepalive.Stop()
	code := codeAbort
	switch cause {
	case causeClose:
		reason, code = ErrSessionClosed, codeClosed
		// A peer silent for longer than a keepalive interval cannot hear
		// or acknowledge a goodbye (the path back is broken: a NAT lost
		// its mapping, ICE failed). Close at once, so the CONNECTION_CLOSE
		// still goes out while the path out may work. (A session younger
		// than that counts as heard: LastReceive starts at its creation.)
		if time.Since(s.dc.LastReceive()) <= s.cfg.KeepaliveInterval {
			s.sayGoodbye()
		}
	case causeDead, causeAbort:
	case causeEnded:
		err := s.tr.err()
		var ce *reliable.CloseError
		switch {
		case errors.As(err, &ce) && ce.Remote && ce.Code == codeClosed:
			// The peer said goodbye: its streams are finished on its side.
			// What it sent stays readable after the close; keep the session
			// until our application has read it (or CloseTimeout, or Close).
			s.setErr(ErrRemoteClosed)
			s.awaitDrained()
			reason = ErrRemoteClosed
		case errors.As(err, &ce) && ce.Remote:
			reason = fmt.Errorf("%w: %w", ErrRemoteClosed, err)
		default:
			reason = fmt.Errorf("%w: %w", ErrProtocol, err) // we closed it: the peer broke the protocol
		}
	}
	s.mu.Lock()
	if s.err == nil || !errors.Is(reason, ErrRemoteClosed) {
		s.err = reason
	}
	s.mu.Unlock()
	s.log.Debug("secure: session closing", "stage", "close", "reason", reason)
	s.tr.close(uint64(code)) // a CONNECTION_CLOSE, unless the Conn has closed already
	s.dc.Close()
	s.cancel(s.Err())
	s.mu.Lock()
	s.ended = true
	fs := s.onEnd
	s.onEnd = nil
	s.mu.Unlock()
	for _, f := range fs {
		go f()
	}
}

// sayGoodbye is the graceful half of Close: finish every stream we write and wait (at
// most CloseTimeout) until the peer has acknowledged all of it. The CONNECTION_CLOSE
// that follows (code codeClosed) is the goodbye: the peer's transport keeps what it
// received, so its application can still read all of it (see awaitDrained).
func (s *Session) sayGoodbye() {
	s.mu.Lock()
	streams := make([]*Stream, 0, len(s.streams)+1)
	for st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	streams = append(streams, s.stream0)
	for _, st := range streams {
		if st != nil {
			st.st.Close() // FIN after the data written so far
		}
	}
	deadline := time.NewTimer(s.cfg.CloseTimeout)
	defer deadline.Stop()
	select {
	case <-s.tr.whenIdle():
	case <-s.tr.ended:
		// the peer closed too, or broke the protocol
	case <-deadline.C:
		s.log.Debug("secure: peer did not acknowledge everything in time")
	}
}

// awaitDrained waits, after the peer's goodbye, until every stream has been read to
// its end or closed, bounded by CloseTimeout or a local Close.
func (s *Session) awaitDrained() {
	t := time.NewTimer(s.cfg.CloseTimeout)
	defer t.Stop()
	for {
		s.mu.Lock()
		n := len(s.streams)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-s.streamDone:
		case <-t.C:
			return
		case <-s.closeReq:
			return
		}
	}
}

func (s *Session) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// Close shuts the session down gracefully: every stream's write side is
// finished, the peer is told, and Close waits (at most Config.CloseTimeout) until
// the peer has acknowledged all of it; the peer's application can still read it
// all. The peer notices the close at once. Close is idempotent and returns once the
// session has ended.
func (s *Session) Close() error {
	s.closeOnce.Do(func() { close(s.closeReq) })
	s.teardown(causeClose, nil) // returns at once if another cause is tearing down
	<-s.ctx.Done()
	return nil
}

// Done is closed when the session has ended, for whatever reason (see Err).
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

// Context is canceled when the session has ended (its Done is Done); its cause
// (context.Cause) is Err. To run a function when the session ends, OnEnd costs less.
func (s *Session) Context() context.Context { return s.ctx }

// OnEnd makes the session call f, on a goroutine of its own, once it has ended (at
// once if it has), as context.AfterFunc on Context would, and like it with no
// goroutine waiting meanwhile. It holds only f: AfterFunc's watcher costs a
// context, a map in the session's context and the context's Done channel, about
// 600 bytes for as long as the session lives.
func (s *Session) OnEnd(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		go f()
		return
	}
	s.onEnd = append(s.onEnd, f)
}

// Err is why the session ended: ErrSessionClosed (local Close), ErrRemoteClosed or
// ErrPeerDead, possibly wrapped. Nil while the session is up; ErrRemoteClosed once
// the peer has said goodbye.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// RemotePublicKey is the peer's authenticated Ed25519 identity.
func (s *Session) RemotePublicKey() ed25519.PublicKey { return s.dc.RemotePublicKey() }

// Cipher is the AEAD that seals the session's datagrams, as the handshake chose it.
func (s *Session) Cipher() Cipher { return s.dc.Cipher() }

// LocalAddr and RemoteAddr are those of the underlying datagram conn.
func (s *Session) LocalAddr() net.Addr  { return s.dc.LocalAddr() }
func (s *Session) RemoteAddr() net.Addr { return s.dc.RemoteAddr() }

// Stream0 is the stream reserved for the database layer, open from the start on both
// sides.
func (s *Session) Stream0() *Stream { return s.stream0 }

// OpenStream opens a new stream. The peer's AcceptStream returns it at once, before any
// data is written. It blocks while the peer allows no more streams (1024 open at a
// time).
func (s *Session) OpenStream(ctx context.Context) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case <-s.ctx.Done():
		return nil, fmt.Errorf("secure: open stream: %w", s.Err())
	case <-s.closeReq:
		return nil, fmt.Errorf("secure: open stream: %w", ErrSessionClosed)
	case <-s.tr.ended:
		return nil, fmt.Errorf("secure: open stream: %w", s.errOr(ErrRemoteClosed))
	default:
	}
	ts, err := s.tr.openStream(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("secure: open stream: %w", s.errOr(err))
	}
	st := s.newStream(ts)
	if _, err := ts.Write([]byte{streamOpen}); err != nil {
		st.Close()
		return nil, fmt.Errorf("secure: open stream %d: %w", st.ID(), st.mapErr(err))
	}
	s.opened.Add(1)
	return st, nil
}

// errOr returns the session's reason once it has ended, else err.
func (s *Session) errOr(err error) error {
	if e := s.Err(); e != nil {
		return e
	}
	return err
}

// openByteWait bounds how long AcceptStream waits for a new stream's first byte,
// which the opener sends with the stream's first frame: a peer that opens streams and
// sends nothing on them cannot hold AcceptStream up for longer.
const openByteWait = 5 * time.Second

// AcceptStream returns the next stream the peer opened. Streams beyond the accept
// backlog were reset as they arrived (SessionStats.StreamsRefused).
func (s *Session) AcceptStream(ctx context.Context) (*Stream, error) {
	for {
		ts, err := s.tr.accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			select {
			case <-s.ctx.Done():
			case <-time.After(time.Second):
			}
			return nil, fmt.Errorf("secure: accept stream: %w", s.errOr(err))
		}
		if st := s.checkOpened(ctx, ts); st != nil {
			return st, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// checkOpened waits (up to openByteWait, or until ctx ends) for the open byte of a
// stream the peer opened and returns the stream, or resets it and returns nil.
func (s *Session) checkOpened(ctx context.Context, ts *tstream) *Stream {
	st := s.newStream(ts)
	ts.SetReadDeadline(time.Now().Add(openByteWait))
	stop := context.AfterFunc(ctx, func() { ts.SetReadDeadline(time.Now()) })
	b, err := st.readOpenByte()
	stop()
	ts.SetReadDeadline(time.Time{})
	if err != nil || b != streamOpen {
		s.log.Debug("secure: stream without its open byte", "stream", st.ID(), "err", err)
		st.reset()
		return nil
	}
	s.acceptedN.Add(1)
	return st
}

// Stats returns a snapshot of the session's counters.
func (s *Session) Stats() SessionStats {
	q, b, refused := s.tr.stats()
	return SessionStats{
		BytesSent:       q.BytesSent,
		BytesReceived:   q.BytesReceived,
		LostBytes:       q.BytesLost,
		StreamsOpened:   s.opened.Load(),
		StreamsAccepted: s.acceptedN.Load(),
		StreamsRefused:  refused,
		SRTT:            q.SRTT,
		MinRTT:          b.MinRTT,
		CWND:            b.CWND,
		PacingRate:      b.PacingRate,
		BtlBw:           b.BtlBw,
		CCState:         b.Mode,
		PacketSize:      uint64(q.PacketSize),
		LossEvents:      b.LossEvents,
		Datagram:        s.dc.Stats(),
	}
}
