package secure

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	quic "github.com/apernet/quic-go"
)

// Session defaults. Each is a Config field's zero value.
const (
	// DefaultMTU is QUIC's first packet size: with PacketOverhead and UDP/IPv6 headers it
	// fits the IPv6 minimum MTU (1280), so no path needs IP fragmentation. Path MTU
	// discovery (Config.PathMTUDiscovery) raises it towards MaxMTU.
	DefaultMTU = 1200
	// MaxMTU is the largest QUIC packet path MTU discovery may try (quic-go's limit).
	// Sealed and with IPv4/UDP headers it is 1505 bytes, just above Ethernet's 1500, so
	// the search ends at what the path carries: 1447 on IPv4, 1427 on IPv6.
	MaxMTU = 1452
	// DefaultMaxReceiveBufferSize is the largest receive window of one stream (the
	// connection's is twice that). Windows start at 1 MiB and grow while the reader
	// keeps up; 8 MiB is a 100 ms path at 80 MB/s.
	DefaultMaxReceiveBufferSize = 8 << 20
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
	// MTU is the QUIC packet size before sealing. Zero means DefaultMTU. It must not
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
	// connection's is twice that). Zero means DefaultMaxReceiveBufferSize.
	MaxReceiveBufferSize uint32
	// MaxMessageSize is the largest message Stream.Write sends as one message; larger
	// writes are split. Zero means DefaultMaxMessageSize. Capped at half the receive
	// buffer so a whole message can always be reassembled.
	MaxMessageSize uint32
	// KeepaliveInterval: send a keepalive after this long without sending. Zero means
	// DefaultKeepaliveInterval. The peer's DeadTimeout must be well above it.
	KeepaliveInterval time.Duration
	// DeadTimeout: close the session with ErrPeerDead after this much silence. Zero
	// means DefaultDeadTimeout. A dead peer is noticed within DeadTimeout plus half a
	// KeepaliveInterval.
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
	BytesSent, BytesReceived uint64        // QUIC bytes (before sealing)
	LostBytes                uint64        // bytes of packets declared lost (RFC 9002 loss detection)
	StreamsOpened            uint64        // by OpenStream
	StreamsAccepted          uint64        // delivered to AcceptStream
	StreamsRefused           uint64        // reset because the accept backlog was full
	SRTT, MinRTT             time.Duration // QUIC's smoothed RTT; BBR's windowed minimum
	CWND                     uint64        // BBR's congestion window, bytes
	PacingRate, BtlBw        float64       // BBR's pacing rate and bandwidth estimate, bytes/s
	CCState                  string        // BBR's mode: startup, drain, probe_bw, probe_rtt
	PacketSize               uint64        // QUIC's packet size now: MTU, raised by path MTU discovery
	LossEvents               uint64        // ACKs that reported loss
	Datagram                 DatagramStats
}

// Session is an authenticated, encrypted QUIC connection with one peer over
// sealed datagrams: reliable, ordered, BBR-paced streams. Stream 0 exists
// from the start (Stream0) and belongs to the database layer; applications
// open more with OpenStream/AcceptStream.
//
// Client and Server start the session's goroutines (the supervisor, which
// also runs the keepalive, the stream acceptor and the goodbye listener, plus
// quic-go's and the DatagramConn's); Close stops them all and waits.
type Session struct {
	// immutable after setup
	cfg     Config
	log     *slog.Logger
	dc      *DatagramConn
	tr      *quic.Transport
	conn    *quic.Conn
	cc      *bbrSender
	client  bool
	stream0 *Stream

	accepted   chan *Stream            // backlog, fed by the accept loop
	loopsDone  sync.WaitGroup          // the accept loop and the goodbye listener
	closeReq   chan struct{}           // closed by Close
	goodbye    chan struct{}           // closed when the peer's goodbye arrives
	ctx        context.Context         // canceled, with Err as its cause, when the session is fully torn down
	cancel     context.CancelCauseFunc // called once, by supervise
	closeOnce  sync.Once
	byeOnce    sync.Once
	streamDone chan struct{} // a stream finished reading (capacity 1: a wake-up)

	mu      sync.Mutex // guards err, streams
	err     error
	streams map[*Stream]struct{} // streams whose read side is not finished

	opened, acceptedN, refused atomic.Uint64
	writers                    atomic.Int64 // Stream.Writes in progress: BBR's app-limited signal
	lastWrite                  atomic.Int64 // unix nanos when a Stream.Write last started or ended
}

// appIdleAfter: the application counts as idle (BBR's app-limited signal) when no
// Stream.Write is in progress and none has been for this long. A bulk writer's gaps
// between writes are microseconds; without the grace they would mark whole rounds
// app-limited and keep BBR in STARTUP.
const appIdleAfter = time.Millisecond

func (s *Session) appIdle() bool {
	return s.writers.Load() == 0 && time.Now().UnixNano()-s.lastWrite.Load() > int64(appIdleAfter)
}

// Open wraps inner (a connected datagram conn, e.g. an ice.Conn) in a DatagramConn with
// the handshake's keys and establishes the session. The handshake initiator is the QUIC
// client. inner is owned by the session from now on, also on error.
func Open(ctx context.Context, inner net.Conn, keys Keys, cfg Config) (*Session, error) {
	full := cfg.withDefaults()
	dc := NewDatagramConn(inner, keys, full.Datagram)
	if keys.Initiator {
		return Client(ctx, dc, cfg)
	}
	return Server(ctx, dc, cfg)
}

// Client establishes a session as the QUIC client (the handshake initiator) over conn
// and opens stream 0. conn is owned by the session from now on, also on error.
func Client(ctx context.Context, conn *DatagramConn, cfg Config) (*Session, error) {
	cfg = cfg.withDefaults()
	pc := newSealedPacketConn(conn)
	tr := &quic.Transport{Conn: pc}
	qc, err := tr.Dial(ctx, pc.peer, clientTLS(), cfg.quicConfig(conn))
	if err != nil {
		tr.Close()
		conn.Close()
		return nil, fmt.Errorf("secure: quic client: %w", err)
	}
	pc.attach(qc)
	s := newSession(cfg, conn, tr, qc, true)
	st, err := qc.OpenStream()
	if err == nil {
		s.stream0 = s.newStream(st)
		_, err = st.Write([]byte{sessionVersion})
	}
	if err != nil {
		s.start()
		s.Close()
		return nil, fmt.Errorf("secure: open stream 0: %w", err)
	}
	s.start()
	s.log.Debug("secure: session established", "stage", "client")
	return s, nil
}

// Server establishes a session as the QUIC server (the handshake responder) over conn
// and accepts stream 0. conn is owned by the session from now on, also on error.
func Server(ctx context.Context, conn *DatagramConn, cfg Config) (*Session, error) {
	cfg = cfg.withDefaults()
	pc := newSealedPacketConn(conn)
	tr := &quic.Transport{Conn: pc}
	fail := func(err error) (*Session, error) {
		tr.Close()
		conn.Close()
		return nil, err
	}
	ln, err := tr.Listen(serverTLS(), cfg.quicConfig(conn))
	if err != nil {
		return fail(fmt.Errorf("secure: quic server: %w", err))
	}
	qc, err := ln.Accept(ctx)
	ln.Close() // one connection per session; the accepted one lives on
	if err != nil {
		return fail(fmt.Errorf("secure: quic server: %w", err))
	}
	pc.attach(qc)
	s := newSession(cfg, conn, tr, qc, false)
	st, err := s.awaitStream0(ctx)
	if err != nil {
		s.start()
		s.Close()
		return nil, err
	}
	s.stream0 = st
	s.start()
	s.log.Debug("secure: session established", "stage", "server")
	return s, nil
}

func newSession(cfg Config, dc *DatagramConn, tr *quic.Transport, qc *quic.Conn, client bool) *Session {
	st := qc.ConnectionStats()
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	ctx, cancel := context.WithCancelCause(context.Background())
	s := &Session{
		ctx:        ctx,
		cancel:     cancel,
		cfg:        cfg,
		log:        cfg.Logger.With("peer", hex.EncodeToString(dc.RemotePublicKey())),
		dc:         dc,
		tr:         tr,
		conn:       qc,
		cc:         newBBRSender(int64(cfg.MTU), st.SmoothedRTT, binary.LittleEndian.Uint64(seed[:])),
		client:     client,
		accepted:   make(chan *Stream, cfg.AcceptBacklog),
		closeReq:   make(chan struct{}),
		goodbye:    make(chan struct{}),
		streamDone: make(chan struct{}, 1),
		streams:    map[*Stream]struct{}{},
	}
	s.cc.appIdle = s.appIdle
	qc.SetCongestionControl(s.cc)
	return s
}

func (s *Session) start() {
	s.loopsDone.Add(2)
	go s.acceptLoop()
	go s.goodbyeLoop()
	go s.supervise()
}

// awaitStream0 waits for the client's stream 0 and checks its hello.
func (s *Session) awaitStream0(ctx context.Context) (*Stream, error) {
	qs, err := s.conn.AcceptStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("secure: waiting for stream 0: %w", err)
	}
	st := s.newStream(qs)
	stop := context.AfterFunc(ctx, func() { qs.SetReadDeadline(time.Now()) })
	defer stop()
	hello, err := st.readOpenByte()
	if err != nil {
		return nil, fmt.Errorf("secure: reading session hello: %w", err)
	}
	if qs.StreamID() != 0 {
		return nil, fmt.Errorf("%w: first stream is %d", ErrProtocol, qs.StreamID())
	}
	if hello != sessionVersion {
		return nil, fmt.Errorf("%w: session version %d", ErrVersion, hello)
	}
	return st, nil
}

// acceptLoop moves the streams the peer opens into the backlog until the
// connection ends. QUIC hands them over in stream-id order.
func (s *Session) acceptLoop() {
	defer s.loopsDone.Done()
	for {
		qs, err := s.conn.AcceptStream(context.Background())
		if err != nil {
			return
		}
		st := s.newStream(qs)
		// The opener's first byte; it is already on its way with the frame
		// that made the stream visible.
		if b, err := st.readOpenByte(); err != nil || b != streamOpen {
			s.log.Debug("secure: stream without its open byte", "stream", st.ID(), "err", err)
			st.reset()
			continue
		}
		select {
		case s.accepted <- st:
			s.acceptedN.Add(1)
		default:
			s.refused.Add(1)
			st.reset()
			s.log.Debug("secure: accept backlog full, stream reset", "stream", st.ID())
		}
	}
}

// goodbyeLoop waits for the peer's goodbye on a unidirectional stream.
func (s *Session) goodbyeLoop() {
	defer s.loopsDone.Done()
	for {
		u, err := s.conn.AcceptUniStream(context.Background())
		if err != nil {
			return
		}
		var b [1]byte
		if _, err := io.ReadFull(u, b[:]); err == nil && b[0] == goodbye {
			s.byeOnce.Do(func() { close(s.goodbye) })
		}
		u.CancelRead(codeStreamClosed)
	}
}

// supervise runs the keepalive and tears the session down when it is closed locally,
// by the peer, or found dead.
func (s *Session) supervise() {
	defer func() { s.cancel(s.Err()) }()
	live := liveness{interval: s.cfg.KeepaliveInterval, timeout: s.cfg.DeadTimeout}
	tick := time.NewTicker(max(s.cfg.KeepaliveInterval/2, 5*time.Millisecond))
	defer tick.Stop()

	var reason error
	code := codeAbort
	silent := false // leave without a CONNECTION_CLOSE (see sayGoodbye)
	var byeFromPeer <-chan struct{} = s.goodbye
loop:
	for {
		select {
		case <-s.closeReq:
			reason, code = ErrSessionClosed, codeClosed
			// A peer silent for longer than a keepalive interval cannot hear
			// or acknowledge a goodbye (the path back is broken: a NAT lost
			// its mapping, ICE failed). Close at once, so the CONNECTION_CLOSE
			// still goes out while the path out may work.
			if time.Since(s.dc.LastReceive()) <= s.cfg.KeepaliveInterval {
				silent = s.sayGoodbye()
			}
			break loop
		case <-byeFromPeer:
			// The peer is closing. Its streams are finished on its side;
			// keep the connection until our application has read what it
			// sent (or CloseTimeout), since closing a QUIC connection throws
			// away data that is received but not yet read.
			s.setErr(ErrRemoteClosed)
			byeFromPeer = nil
			code = codeClosed
			if s.awaitDrained() {
				reason = ErrRemoteClosed
				break loop
			}
		case <-s.conn.Context().Done():
			reason = ErrRemoteClosed
			var appErr *quic.ApplicationError
			if cause := context.Cause(s.conn.Context()); !errors.As(cause, &appErr) || appErr.ErrorCode != codeClosed {
				if err := s.dc.readError(); err != nil && !errors.Is(err, net.ErrClosed) {
					cause = err
				}
				reason = fmt.Errorf("%w: %w", ErrRemoteClosed, cause)
			}
			break loop
		case now := <-tick.C:
			ping, dead := live.tick(now, s.dc.LastSend(), s.dc.LastReceive())
			if dead {
				reason = fmt.Errorf("%w: silent for %v", ErrPeerDead, now.Sub(s.dc.LastReceive()).Round(time.Millisecond))
				break loop
			}
			if ping {
				s.dc.Write(nil) // an empty sealed datagram: a keepalive
			}
		}
	}
	s.mu.Lock()
	if s.err == nil || !errors.Is(reason, ErrRemoteClosed) {
		s.err = reason
	}
	s.mu.Unlock()
	s.log.Debug("secure: session closing", "stage", "close", "reason", reason)
	if !silent {
		s.conn.CloseWithError(code, "")
	}
	s.tr.Close() // also closes the DatagramConn; a connection still open is dropped silently
	s.dc.Close()
	s.loopsDone.Wait()
}

// sayGoodbye is the graceful half of Close: finish every stream we write, tell the
// peer, and wait (at most CloseTimeout) until the peer has acknowledged all of it. It
// reports whether it did; the connection may then vanish without a CONNECTION_CLOSE,
// which would make the peer's QUIC discard data it holds but its application has not
// read yet. The peer keeps its end until its application has read everything (see
// awaitDrained).
func (s *Session) sayGoodbye() bool {
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
	u, err := s.conn.OpenUniStream()
	if err != nil {
		return false
	}
	if _, err := u.Write([]byte{goodbye}); err != nil {
		return false
	}
	u.Close()
	deadline := time.NewTimer(s.cfg.CloseTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(closePoll)
	defer poll.Stop()
	quiet := 0
	for quiet < 2 {
		select {
		case <-s.conn.Context().Done():
			return false
		case <-s.goodbye:
			// Both ends are closing: neither application reads any more,
			// and the peer may leave before it acknowledges us.
			return false
		case <-deadline.C:
			s.log.Debug("secure: peer did not acknowledge everything in time")
			return false
		case <-poll.C:
		}
		// Nothing in flight twice in a row: the peer has every byte, FIN and the
		// goodbye (a frame still queued would be in flight by the second poll).
		if s.cc.stats().Inflight == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	return true
}

// closePoll is how often a closing session checks whether the peer has acknowledged
// everything.
const closePoll = 2 * time.Millisecond

// awaitDrained waits, after the peer's goodbye, until every stream has been
// read to its end or closed, bounded by CloseTimeout or a local Close. It
// returns false if the connection ended first (the caller's select sees it).
func (s *Session) awaitDrained() bool {
	t := time.NewTimer(s.cfg.CloseTimeout)
	defer t.Stop()
	for {
		s.mu.Lock()
		n := len(s.streams)
		s.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-s.streamDone:
		case <-t.C:
			return true
		case <-s.closeReq:
			return true
		case <-s.conn.Context().Done():
			return false
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
// all. The peer notices the close at once. Close is idempotent and waits for every goroutine
// of the session.
func (s *Session) Close() error {
	s.closeOnce.Do(func() { close(s.closeReq) })
	<-s.ctx.Done()
	return nil
}

// Done is closed when the session has ended, for whatever reason (see Err).
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

// Context is canceled when the session has ended (its Done is Done); its cause
// (context.Cause) is Err. context.AfterFunc on it watches a session without a
// goroutine of its own.
func (s *Session) Context() context.Context { return s.ctx }

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
// data is written. It blocks while the peer allows no more streams (QUIC's stream
// limit, 1024 open at a time).
func (s *Session) OpenStream(ctx context.Context) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case <-s.ctx.Done():
		return nil, fmt.Errorf("secure: open stream: %w", s.Err())
	case <-s.closeReq:
		return nil, fmt.Errorf("secure: open stream: %w", ErrSessionClosed)
	case <-s.goodbye:
		return nil, fmt.Errorf("secure: open stream: %w", ErrRemoteClosed)
	default:
	}
	qs, err := s.conn.OpenStreamSync(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("secure: open stream: %w", s.errOr(err))
	}
	st := s.newStream(qs)
	if _, err := qs.Write([]byte{streamOpen}); err != nil {
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

// AcceptStream returns the next stream the peer opened.
func (s *Session) AcceptStream(ctx context.Context) (*Stream, error) {
	select {
	case st := <-s.accepted:
		return st, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.ctx.Done():
		return nil, fmt.Errorf("secure: accept stream: %w", s.Err())
	}
}

// Stats returns a snapshot of the session's counters.
func (s *Session) Stats() SessionStats {
	q := s.conn.ConnectionStats()
	b := s.cc.stats()
	return SessionStats{
		BytesSent:       q.BytesSent,
		BytesReceived:   q.BytesReceived,
		LostBytes:       b.LostBytes,
		StreamsOpened:   s.opened.Load(),
		StreamsAccepted: s.acceptedN.Load(),
		StreamsRefused:  s.refused.Load(),
		SRTT:            q.SmoothedRTT,
		MinRTT:          b.MinRTT,
		CWND:            b.CWND,
		PacingRate:      b.PacingRate,
		BtlBw:           b.BtlBw,
		CCState:         b.Mode,
		PacketSize:      b.PacketSize,
		LossEvents:      b.LossEvents,
		Datagram:        s.dc.Stats(),
	}
}
