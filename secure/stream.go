package secure

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/sctp"
)

// Stream is one reliable, ordered stream of a Session. It implements net.Conn.
//
// Message semantics: a Write of at most Config.MaxMessageSize bytes (64 KiB by default)
// is sent as exactly one SCTP message, and a Read with a buffer at least that large
// returns exactly one message. Larger writes are split into MaxMessageSize messages. A
// Read with a smaller buffer returns the message in pieces over several Reads (never
// io.ErrShortBuffer), so a Stream also works as a plain byte stream (io.Copy, bufio).
// ReadMessage returns one whole message whatever its size.
//
// Close resets the stream both ways: the peer's Read returns io.EOF after the data
// already sent. CloseWrite only ends our direction. Streams are safe for one reader and
// one writer at a time, concurrently.
type Stream struct {
	// immutable after newStream
	sess  *Session
	st    *sctp.Stream
	owned bool // opened by us: release the id on Close

	rmu     sync.Mutex // guards rbuf, pending: held by the reader
	rbuf    []byte
	pending []byte // rest of a message partly returned by Read

	closed    atomic.Bool
	closeOnce sync.Once
}

var _ net.Conn = (*Stream)(nil)

func newStream(s *Session, st *sctp.Stream) *Stream {
	return &Stream{sess: s, st: st}
}

// ID is the SCTP stream identifier (0 for Stream0; even ones are opened by the client,
// odd ones by the server).
func (s *Stream) ID() uint16 { return s.st.StreamIdentifier() }

// Read reads the next message, or the rest of one a previous Read left, into p.
func (s *Stream) Read(p []byte) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if len(s.pending) > 0 {
		n := copy(p, s.pending)
		s.pending = s.pending[n:]
		return n, nil
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, ppi, err := s.st.ReadSCTP(p)
		if errors.Is(err, io.ErrShortBuffer) {
			// The message (n bytes) is still queued; take it whole into our buffer.
			msg, err := s.readWholeLocked(n)
			if err != nil {
				return 0, err
			}
			if msg == nil {
				continue // a control message
			}
			k := copy(p, msg)
			s.pending = msg[k:]
			return k, nil
		}
		if err != nil {
			return 0, s.mapErr(err)
		}
		if ppi == ppiControl {
			continue
		}
		return n, nil
	}
}

// readWholeLocked reads the queued message of size n into s.rbuf. It returns nil for a
// control message.
func (s *Stream) readWholeLocked(n int) ([]byte, error) {
	for {
		if cap(s.rbuf) < n {
			s.rbuf = make([]byte, n)
		}
		m, ppi, err := s.st.ReadSCTP(s.rbuf[:cap(s.rbuf)])
		if errors.Is(err, io.ErrShortBuffer) {
			n = m
			continue
		}
		if err != nil {
			return nil, s.mapErr(err)
		}
		if ppi == ppiControl {
			return nil, nil
		}
		return s.rbuf[:m], nil
	}
}

// ReadMessage reads one whole message into buf (grown as needed) and returns it. If a
// previous Read returned only part of a message, the rest is returned first.
func (s *Stream) ReadMessage(buf []byte) ([]byte, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if len(s.pending) > 0 {
		out := append(buf[:0], s.pending...)
		s.pending = nil
		return out, nil
	}
	buf = buf[:cap(buf)]
	if len(buf) == 0 {
		buf = make([]byte, 4096)
	}
	for {
		n, ppi, err := s.st.ReadSCTP(buf)
		if errors.Is(err, io.ErrShortBuffer) {
			buf = make([]byte, n)
			continue
		}
		if err != nil {
			return nil, s.mapErr(err)
		}
		if ppi == ppiControl {
			continue
		}
		return buf[:n], nil
	}
}

// Write sends p: as one message if it fits Config.MaxMessageSize, else split. It blocks
// while SCTP's send buffer is full (back-pressure). An empty p sends nothing.
func (s *Stream) Write(p []byte) (int, error) {
	maxMsg := int(s.sess.cfg.MaxMessageSize)
	total := 0
	for len(p) > 0 {
		k := min(len(p), maxMsg)
		n, err := s.st.WriteSCTP(p[:k], ppiData)
		total += n
		if err != nil {
			return total, s.mapErr(err)
		}
		p = p[k:]
	}
	return total, nil
}

// CloseWrite ends our direction of the stream; the peer's Read returns io.EOF after the
// data already written. Reading continues until the peer closes its direction.
func (s *Stream) CloseWrite() error {
	if err := s.st.Close(); err != nil {
		return s.mapErr(err)
	}
	return nil
}

// Close closes both directions: pending and later Reads and Writes return
// net.ErrClosed, and the peer reads io.EOF. Idempotent.
func (s *Stream) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		err = s.st.Close()
		s.st.SetReadDeadline(time.Now()) // unblock a pending Read
		if s.owned {
			s.sess.releaseID(s.ID())
		}
	})
	if err != nil && !errors.Is(err, sctp.ErrStreamClosed) {
		return s.mapErr(err)
	}
	return nil
}

// mapErr turns pion's errors into this package's: local close is net.ErrClosed, a
// graceful end of the session or the stream is io.EOF, anything else carries the
// session's reason.
func (s *Stream) mapErr(err error) error {
	if s.closed.Load() {
		return net.ErrClosed
	}
	if errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if errors.Is(err, sctp.ErrStreamClosed) {
		// The peer reset the stream: like writing to a closed pipe.
		return fmt.Errorf("secure: stream %d: %w", s.ID(), io.ErrClosedPipe)
	}
	// The association ended: say why, once the session has recorded it (the supervisor
	// does so promptly after pion's read loop ends).
	select {
	case <-s.sess.done:
	case <-time.After(time.Second):
		return fmt.Errorf("secure: stream %d: %w", s.ID(), err)
	}
	reason := s.sess.Err()
	if errors.Is(reason, ErrRemoteClosed) && !errors.Is(reason, ErrPeerDead) {
		return io.EOF
	}
	return fmt.Errorf("secure: stream %d: %w", s.ID(), reason)
}

// LocalAddr and RemoteAddr are those of the session's datagram conn.
func (s *Stream) LocalAddr() net.Addr  { return s.sess.LocalAddr() }
func (s *Stream) RemoteAddr() net.Addr { return s.sess.RemoteAddr() }

// SetDeadline sets both deadlines; see net.Conn.
func (s *Stream) SetDeadline(t time.Time) error { return s.st.SetDeadline(t) }

// SetReadDeadline sets the read deadline; see net.Conn.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.st.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline (honoured because writes block); see net.Conn.
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.st.SetWriteDeadline(t) }
