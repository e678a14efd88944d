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

	"github.com/pion/sctp"

	"github.com/swarmdb/swarmdb/internal/pionlog"
)

// Session defaults. Each is a Config field's zero value.
const (
	// DefaultMTU is SCTP's packet size: with PacketOverhead and UDP/IPv6 headers it fits
	// the IPv6 minimum MTU (1280), so no path needs IP fragmentation.
	DefaultMTU = 1200
	// DefaultMaxReceiveBufferSize is SCTP's receive window. pion's 1 MiB default caps a
	// 40 ms path at about 19 MB/s; 8 MiB measured about 45 MB/s there (go-deps.md §4.1).
	DefaultMaxReceiveBufferSize = 8 << 20
	// DefaultMaxMessageSize is the largest message one Stream.Write sends unsplit.
	DefaultMaxMessageSize = 64 << 10
	// DefaultKeepaliveInterval: a session that has sent nothing for this long sends a
	// keepalive datagram, so the peer hears from it at least this often.
	DefaultKeepaliveInterval = 2 * time.Second
	// DefaultDeadTimeout: after this much silence the peer is dead. 15 s rides out a
	// Wi-Fi roam or a short outage but is half ICE consent freshness's 30 s (RFC 7675).
	DefaultDeadTimeout = 15 * time.Second
	// DefaultCloseTimeout bounds the graceful SCTP SHUTDOWN (which first waits for
	// unacknowledged data) before Close falls back to ABORT.
	DefaultCloseTimeout = 3 * time.Second
	// DefaultAcceptBacklog is how many streams the peer may open ahead of AcceptStream;
	// further ones are reset.
	DefaultAcceptBacklog = 64
)

// Config configures a Session. The zero value works.
type Config struct {
	// Logger receives session and pion/sctp logs. Nil means discard.
	Logger *slog.Logger
	// MTU is the SCTP packet size before sealing. Zero means DefaultMTU. It must not
	// exceed Datagram.MaxPayload.
	MTU uint32
	// MaxReceiveBufferSize is the SCTP receive window in bytes. Zero means
	// DefaultMaxReceiveBufferSize.
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

// Session protocol constants, carried in SCTP payload protocol identifiers (PPI) so they
// never mix with application bytes.
const (
	// sessionVersion is the first message on stream 0, from client to server.
	sessionVersion = 1
	// ppiData marks application messages.
	ppiData = sctp.PayloadTypeWebRTCBinary
	// ppiControl marks control messages: the hello on stream 0 and the one-byte "open"
	// message that makes a new stream appear at the peer's AcceptStream at once (pion
	// only surfaces a stream when its first DATA arrives). Never returned by Read.
	ppiControl sctp.PayloadProtocolIdentifier = 0x53444201 // "SDB\x01"
)

// SessionStats is a snapshot of a session's counters.
type SessionStats struct {
	BytesSent, BytesReceived uint64        // SCTP bytes (before sealing)
	StreamsOpened            uint64        // by OpenStream
	StreamsAccepted          uint64        // delivered to AcceptStream
	StreamsRefused           uint64        // reset: backlog full or a stream id of the wrong parity
	SRTT                     time.Duration // SCTP's smoothed round-trip time
	CWND, RWND               uint32        // SCTP congestion and peer receive windows
	Datagram                 DatagramStats
}

// Session is an authenticated, encrypted SCTP association with one peer: reliable,
// ordered, congestion-controlled streams. Stream 0 exists from the start (Stream0) and
// belongs to the database layer; applications open more with OpenStream/AcceptStream.
//
// Client and Server start the session's goroutines (the supervisor, which also runs the
// keepalive, and the stream acceptor, plus pion's); Close stops them all and waits.
type Session struct {
	// immutable after setup
	cfg     Config
	log     *slog.Logger
	dc      *DatagramConn
	assoc   *sctp.Association
	client  bool
	stream0 *Stream

	accepted   chan *Stream  // backlog, fed by the accept loop
	stream0Ch  chan *Stream  // server: stream 0 from the accept loop
	acceptDone chan struct{} // closed when the accept loop exits
	closeReq   chan struct{} // closed by Close
	done       chan struct{} // closed when the session is fully torn down
	closeOnce  sync.Once

	mu     sync.Mutex // guards err, nextID, inUse
	err    error
	nextID uint16
	inUse  map[uint16]bool

	opened, acceptedN, refused atomic.Uint64
}

// Open wraps inner (a connected datagram conn, e.g. an ice.Conn) in a DatagramConn with
// the handshake's keys and establishes the session. The handshake initiator is the SCTP
// client. inner is owned by the session from now on, also on error.
func Open(ctx context.Context, inner net.Conn, keys Keys, cfg Config) (*Session, error) {
	full := cfg.withDefaults()
	dc := NewDatagramConn(inner, keys, full.Datagram)
	if keys.Initiator {
		return Client(ctx, dc, cfg)
	}
	return Server(ctx, dc, cfg)
}

func (c *Config) sctpOptions() []sctp.AssociationOption {
	return []sctp.AssociationOption{
		sctp.WithLoggerFactory(pionlog.Factory(c.Logger)),
		sctp.WithBlockWrite(true), // back-pressure; pion otherwise buffers without bound
		sctp.WithMaxReceiveBufferSize(c.MaxReceiveBufferSize),
		sctp.WithMaxMessageSize(c.MaxMessageSize),
		sctp.WithMTU(c.MTU),
		// Every datagram is already authenticated by Poly1305, so SCTP's CRC32c adds
		// nothing (RFC 9653 allows a zero checksum when the lower layer has integrity).
		sctp.WithEnableZeroChecksum(true),
	}
}

// Client establishes a session as the SCTP client (the handshake initiator) over conn
// and opens stream 0. conn is owned by the session from now on, also on error.
func Client(ctx context.Context, conn *DatagramConn, cfg Config) (*Session, error) {
	cfg = cfg.withDefaults()
	opts := []sctp.ClientOption{sctp.WithNetConn(conn)}
	for _, o := range cfg.sctpOptions() {
		opts = append(opts, o)
	}
	assoc, err := sctp.ClientContext(ctx, opts...)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("secure: sctp client: %w", err)
	}
	s := newSession(cfg, conn, assoc, true)
	s.start()
	st, err := s.openStream(0)
	if err == nil {
		_, err = st.st.WriteSCTP([]byte{sessionVersion}, ppiControl)
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("secure: open stream 0: %w", err)
	}
	s.stream0 = st
	s.log.Debug("secure: session established", "stage", "client")
	return s, nil
}

// Server establishes a session as the SCTP server (the handshake responder) over conn
// and accepts stream 0. conn is owned by the session from now on, also on error.
func Server(ctx context.Context, conn *DatagramConn, cfg Config) (*Session, error) {
	cfg = cfg.withDefaults()
	opts := []sctp.ServerOption{sctp.WithNetConn(conn)}
	for _, o := range cfg.sctpOptions() {
		opts = append(opts, o)
	}
	// pion's ServerWithOptions takes no context: closing conn makes it return.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	assoc, err := sctp.ServerWithOptions(opts...)
	if !stop() || err != nil {
		if err == nil {
			assoc.Close()
		}
		if ctx.Err() != nil {
			err = ctx.Err() // the association failed because we closed conn
		}
		conn.Close()
		return nil, fmt.Errorf("secure: sctp server: %w", err)
	}
	s := newSession(cfg, conn, assoc, false)
	s.start()
	st, err := s.awaitStream0(ctx)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.stream0 = st
	s.log.Debug("secure: session established", "stage", "server")
	return s, nil
}

func newSession(cfg Config, dc *DatagramConn, assoc *sctp.Association, client bool) *Session {
	s := &Session{
		cfg:        cfg,
		log:        cfg.Logger.With("peer", hex.EncodeToString(dc.RemotePublicKey())),
		dc:         dc,
		assoc:      assoc,
		client:     client,
		accepted:   make(chan *Stream, cfg.AcceptBacklog),
		stream0Ch:  make(chan *Stream, 1),
		acceptDone: make(chan struct{}),
		closeReq:   make(chan struct{}),
		done:       make(chan struct{}),
		inUse:      map[uint16]bool{},
	}
	// Client streams are even, server streams odd (as in WebRTC data channels), so the
	// two sides never pick the same id. 0 is stream 0.
	s.nextID = 1
	if client {
		s.nextID = 2
	}
	return s
}

func (s *Session) start() {
	go s.acceptLoop()
	go s.supervise()
}

// awaitStream0 waits for the client's stream 0 and checks its hello.
func (s *Session) awaitStream0(ctx context.Context) (*Stream, error) {
	var st *Stream
	select {
	case st = <-s.stream0Ch:
	case <-ctx.Done():
		return nil, fmt.Errorf("secure: waiting for stream 0: %w", ctx.Err())
	case <-s.done:
		return nil, fmt.Errorf("secure: waiting for stream 0: %w", s.Err())
	}
	stop := context.AfterFunc(ctx, func() { st.st.SetReadDeadline(time.Now()) })
	defer stop()
	var hello [16]byte
	n, ppi, err := st.st.ReadSCTP(hello[:])
	if err != nil {
		return nil, fmt.Errorf("secure: reading session hello: %w", err)
	}
	if ppi != ppiControl || n != 1 {
		return nil, fmt.Errorf("%w: first message on stream 0 (ppi %d, %d bytes)", ErrProtocol, ppi, n)
	}
	if hello[0] != sessionVersion {
		return nil, fmt.Errorf("%w: session version %d", ErrVersion, hello[0])
	}
	return st, nil
}

// acceptLoop moves the streams the peer opens into the backlog until the association
// ends.
func (s *Session) acceptLoop() {
	defer close(s.acceptDone)
	for {
		raw, err := s.assoc.AcceptStream()
		if err != nil {
			return
		}
		id := raw.StreamIdentifier()
		if id == 0 && !s.client {
			select {
			case s.stream0Ch <- newStream(s, raw):
			default:
				raw.Close() // cannot happen: pion surfaces each id once
			}
			continue
		}
		// The peer must use its own parity; a stream in ours could later collide with
		// one we open.
		if id == 0 || (id%2 == 0) == s.client {
			s.refused.Add(1)
			raw.Close()
			s.log.Debug("secure: refused stream of wrong parity", "stream", id)
			continue
		}
		st := newStream(s, raw)
		select {
		case s.accepted <- st:
			s.acceptedN.Add(1)
		default:
			s.refused.Add(1)
			raw.Close()
			s.log.Debug("secure: accept backlog full, stream reset", "stream", id)
		}
	}
}

// supervise runs the keepalive and tears the session down when it is closed locally,
// by the peer, or found dead.
func (s *Session) supervise() {
	defer close(s.done)
	live := liveness{interval: s.cfg.KeepaliveInterval, timeout: s.cfg.DeadTimeout}
	tick := time.NewTicker(max(s.cfg.KeepaliveInterval/2, 5*time.Millisecond))
	defer tick.Stop()

	var reason error
	graceful := false
loop:
	for {
		select {
		case <-s.closeReq:
			reason, graceful = ErrSessionClosed, true
			break loop
		case <-s.acceptDone:
			// The association ended under us: SHUTDOWN or ABORT from the peer, or the
			// datagram conn failed.
			reason = ErrRemoteClosed
			if err := s.dc.readError(); err != nil && !errors.Is(err, net.ErrClosed) {
				reason = fmt.Errorf("%w: %w", ErrRemoteClosed, err)
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
	s.err = reason
	s.mu.Unlock()
	s.log.Debug("secure: session closing", "stage", "close", "reason", reason)

	if graceful {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CloseTimeout)
		err := s.assoc.Shutdown(ctx)
		cancel()
		if err != nil {
			s.log.Debug("secure: graceful shutdown failed, aborting", "err", err)
			s.assoc.Abort("close")
		}
	}
	s.assoc.Close() // also closes the DatagramConn
	s.dc.Close()
	<-s.acceptDone
}

// Close shuts the session down: a graceful SCTP SHUTDOWN (data already written is
// delivered first) bounded by Config.CloseTimeout, then ABORT. The peer notices either
// at once. Close is idempotent and waits for every goroutine of the session.
func (s *Session) Close() error {
	s.closeOnce.Do(func() { close(s.closeReq) })
	<-s.done
	return nil
}

// Done is closed when the session has ended, for whatever reason (see Err).
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the session ended: ErrSessionClosed (local Close), ErrRemoteClosed or
// ErrPeerDead, possibly wrapped. Nil while the session is up.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// RemotePublicKey is the peer's authenticated Ed25519 identity.
func (s *Session) RemotePublicKey() ed25519.PublicKey { return s.dc.RemotePublicKey() }

// LocalAddr and RemoteAddr are those of the underlying datagram conn.
func (s *Session) LocalAddr() net.Addr  { return s.dc.LocalAddr() }
func (s *Session) RemoteAddr() net.Addr { return s.dc.RemoteAddr() }

// Stream0 is the stream reserved for the database layer, open from the start on both
// sides.
func (s *Session) Stream0() *Stream { return s.stream0 }

// OpenStream opens a new stream. The peer's AcceptStream returns it at once, before any
// data is written.
func (s *Session) OpenStream(ctx context.Context) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case <-s.done:
		return nil, fmt.Errorf("secure: open stream: %w", s.Err())
	default:
	}
	id, err := s.allocID()
	if err != nil {
		return nil, err
	}
	st, err := s.openStream(id)
	if err != nil {
		s.releaseID(id)
		return nil, err
	}
	if _, err := st.st.WriteSCTP([]byte{0}, ppiControl); err != nil {
		st.Close()
		return nil, fmt.Errorf("secure: open stream %d: %w", id, st.mapErr(err))
	}
	s.opened.Add(1)
	return st, nil
}

func (s *Session) openStream(id uint16) (*Stream, error) {
	raw, err := s.assoc.OpenStream(id, ppiData)
	if err != nil {
		return nil, fmt.Errorf("secure: open stream %d: %w", id, err)
	}
	st := newStream(s, raw)
	st.owned = true
	return st, nil
}

// allocID picks the next free stream id of this side's parity. Ids are reused only after
// wrapping around (32767 opens), long after the old stream's reset has completed.
func (s *Session) allocID() (uint16, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range 1 << 15 {
		id := s.nextID
		s.nextID += 2 // wraps to 0 (client; skipped below) or 1 (server)
		if s.nextID == 0 {
			s.nextID = 2
		}
		if !s.inUse[id] {
			s.inUse[id] = true
			return id, nil
		}
	}
	return 0, ErrStreamIDsExhausted
}

func (s *Session) releaseID(id uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inUse, id)
}

// AcceptStream returns the next stream the peer opened.
func (s *Session) AcceptStream(ctx context.Context) (*Stream, error) {
	select {
	case st := <-s.accepted:
		return st, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, fmt.Errorf("secure: accept stream: %w", s.Err())
	}
}

// Stats returns a snapshot of the session's counters.
func (s *Session) Stats() SessionStats {
	return SessionStats{
		BytesSent:       s.assoc.BytesSent(),
		BytesReceived:   s.assoc.BytesReceived(),
		StreamsOpened:   s.opened.Load(),
		StreamsAccepted: s.acceptedN.Load(),
		StreamsRefused:  s.refused.Load(),
		SRTT:            time.Duration(s.assoc.SRTT() * float64(time.Millisecond)),
		CWND:            s.assoc.CWND(),
		RWND:            s.assoc.RWND(),
		Datagram:        s.dc.Stats(),
	}
}
