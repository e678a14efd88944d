package secure

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swarmdb/swarmdb/internal/reliable"
)

// Stream is one reliable, ordered stream of a Session. It implements net.Conn.
//
// Message semantics: a Write of at most Config.MaxMessageSize bytes (64 KiB by default)
// is sent as exactly one message, and a Read with a buffer at least that large
// returns exactly one message. Larger writes are split into MaxMessageSize messages. A
// Read with a smaller buffer returns the message in pieces over several Reads (never
// io.ErrShortBuffer), so a Stream also works as a plain byte stream (io.Copy, bufio).
// ReadMessage returns one whole message whatever its size.
//
// On the wire a stream is a byte stream; each message is framed as its length (a
// uvarint) and its bytes.
//
// Close ends both directions: the peer's Read returns io.EOF after the data already
// sent, and its Writes fail. CloseWrite only ends our direction. Streams are safe for
// one reader and one writer at a time, concurrently.
type Stream struct {
	// immutable after newStream
	sess *Session
	st   *tstream

	rmu     sync.Mutex    // guards br, rbuf, pending: held by the reader
	br      *bufio.Reader // borrowed from readBuffers while it holds bytes; nil when idle
	rbuf    []byte
	pending []byte          // rest of a message partly returned by Read
	h       *messageHandler // set by HandleMessages: messages go to it, not to Read

	wmu sync.Mutex // guards hdr: held by the writer
	hdr [binary.MaxVarintLen64]byte

	closed    atomic.Bool
	closeOnce sync.Once
	readOnce  sync.Once // the read side finished: unregistered from the session
}

var _ net.Conn = (*Stream)(nil)

// streamReadBuffer is the bufio size in front of a transport stream: large enough that
// length prefixes cost no extra call, small next to a message.
const streamReadBuffer = 4 << 10

// readBuffers lend streams their read buffers. A stream borrows one when the first
// byte of a message arrives and gives it back at a message boundary where it is empty,
// so an idle stream, blocked on the next message, holds none: 8 KiB less per idle swarm
// connection (stream 0 and the swarm's control stream), twice that in RSS once the
// garbage collector's headroom is counted.
var readBuffers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, streamReadBuffer) }}

func (s *Session) newStream(ts *tstream) *Stream {
	st := &Stream{sess: s, st: ts}
	s.mu.Lock()
	s.streams[st] = struct{}{}
	s.mu.Unlock()
	return st
}

// readFinished unregisters the stream's read side: the session's graceful close waits
// for every registered stream.
func (s *Stream) readFinished() {
	s.readOnce.Do(func() {
		s.st.finishRead()
		s.sess.mu.Lock()
		delete(s.sess.streams, s)
		s.sess.mu.Unlock()
		select {
		case s.sess.streamDone <- struct{}{}:
		default:
		}
	})
}

// ID is the stream's number: 0 for Stream0, even for streams the client opens and odd
// for those the server opens (the transport's stream ids 4n and 4n+1, RFC 9000 §2.1,
// halved).
func (s *Stream) ID() uint64 {
	id := s.st.id
	return id/4*2 + id&1
}

// Read reads the next message, or the rest of one a previous Read left, into p.
func (s *Stream) Read(p []byte) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.h != nil {
		return 0, fmt.Errorf("secure: stream %d: %w", s.ID(), ErrHandled)
	}
	if len(s.pending) > 0 {
		n := copy(p, s.pending)
		s.pending = s.pending[n:]
		return n, nil
	}
	if len(p) == 0 {
		return 0, nil
	}
	size, err := s.readLengthLocked()
	if err != nil {
		return 0, err
	}
	if size <= len(p) {
		if err := s.readFullLocked(p[:size]); err != nil {
			return 0, err
		}
		s.releaseBufferLocked()
		return size, nil
	}
	if cap(s.rbuf) < size {
		s.rbuf = make([]byte, size)
	}
	msg := s.rbuf[:size]
	if err := s.readFullLocked(msg); err != nil {
		return 0, err
	}
	s.releaseBufferLocked()
	k := copy(p, msg)
	s.pending = msg[k:]
	return k, nil
}

// ReadMessage reads one whole message into buf (grown as needed) and returns it. If a
// previous Read returned only part of a message, the rest is returned first.
func (s *Stream) ReadMessage(buf []byte) ([]byte, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.h != nil {
		return nil, fmt.Errorf("secure: stream %d: %w", s.ID(), ErrHandled)
	}
	if len(s.pending) > 0 {
		out := append(buf[:0], s.pending...)
		s.pending = nil
		return out, nil
	}
	size, err := s.readLengthLocked()
	if err != nil {
		return nil, err
	}
	if cap(buf) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if err := s.readFullLocked(buf); err != nil {
		return nil, err
	}
	s.releaseBufferLocked()
	return buf, nil
}

// readByteLocked reads one byte. Without a read buffer it waits for the byte on the
// transport stream itself and borrows a buffer once it has arrived.
func (s *Stream) readByteLocked() (byte, error) {
	if s.br != nil {
		return s.br.ReadByte()
	}
	var b [1]byte
	if _, err := io.ReadFull(s.st, b[:]); err != nil {
		return 0, err
	}
	s.br = readBuffers.Get().(*bufio.Reader)
	s.br.Reset(s.st)
	return b[0], nil
}

// releaseBufferLocked gives the read buffer back if it holds nothing; a message's end
// is the only place to call it.
func (s *Stream) releaseBufferLocked() {
	if s.br == nil || s.br.Buffered() > 0 {
		return
	}
	s.br.Reset(nil)
	readBuffers.Put(s.br)
	s.br = nil
}

// readOpenByte reads the byte that opens a stream (the session hello on stream 0)
// before the stream is handed out.
func (s *Stream) readOpenByte() (byte, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	b, err := s.readByteLocked()
	if err == nil {
		s.releaseBufferLocked()
	}
	return b, err
}

// lockedBytes reads a stream's bytes one at a time for binary.ReadUvarint; the caller
// holds rmu.
type lockedBytes Stream

func (b *lockedBytes) ReadByte() (byte, error) { return (*Stream)(b).readByteLocked() }

// readLengthLocked reads the next message's length prefix. A clean end of the stream
// here is io.EOF.
func (s *Stream) readLengthLocked() (int, error) {
	n, err := binary.ReadUvarint((*lockedBytes)(s))
	if err != nil {
		if errors.Is(err, io.EOF) {
			s.readFinished()
			return 0, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			s.readFinished()
			return 0, fmt.Errorf("%w: stream %d ends inside a length", ErrProtocol, s.ID())
		}
		return 0, s.readErr(err)
	}
	if n == 0 || n > maxWireMessage {
		s.readFinished()
		s.st.CancelRead(codeStreamClosed)
		return 0, fmt.Errorf("%w: stream %d: message of %d bytes", ErrProtocol, s.ID(), n)
	}
	return int(n), nil
}

// readFullLocked reads a message's bytes after readLengthLocked, which left a read
// buffer borrowed.
func (s *Stream) readFullLocked(p []byte) error {
	if _, err := io.ReadFull(s.br, p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			s.readFinished()
			return fmt.Errorf("%w: stream %d ends inside a message", ErrProtocol, s.ID())
		}
		return s.readErr(err)
	}
	return nil
}

// readErr maps a read failure; anything but a deadline finishes the read side.
func (s *Stream) readErr(err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		s.readFinished()
	}
	return s.mapErr(err)
}

// Write sends p: as one message if it fits Config.MaxMessageSize, else split. It blocks
// while the peer's receive window is full (back-pressure). An empty p sends nothing.
func (s *Stream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	maxMsg := int(s.sess.cfg.MaxMessageSize)
	total := 0
	for len(p) > 0 {
		k := min(len(p), maxMsg)
		hdr := binary.AppendUvarint(s.hdr[:0], uint64(k))
		if _, err := s.st.Write(hdr); err != nil {
			return total, s.mapErr(err)
		}
		n, err := s.st.Write(p[:k])
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
// net.ErrClosed, the peer reads io.EOF after what was written, and its Writes fail.
// Idempotent.
func (s *Stream) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.st.CancelRead(codeStreamClosed) // the peer's writes fail
		s.st.Close()                      // FIN after the data written so far
		s.readFinished()
	})
	return nil
}

// reset abandons a stream the peer opened that we will not use (backlog full).
func (s *Stream) reset() {
	s.closed.Store(true)
	s.st.CancelRead(codeStreamClosed)
	s.st.CancelWrite(codeStreamClosed)
	s.readFinished()
}

// mapErr turns the transport's errors into this package's: local close is net.ErrClosed, a
// graceful end of the session or the stream is io.EOF, a stream the peer stopped is
// io.ErrClosedPipe, anything else carries the session's reason.
func (s *Stream) mapErr(err error) error {
	if s.closed.Load() {
		return net.ErrClosed
	}
	if errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	var serr *reliable.StreamResetError
	if errors.As(err, &serr) {
		// The peer stopped the stream: like writing to a closed pipe.
		return fmt.Errorf("secure: stream %d: %w", s.ID(), io.ErrClosedPipe)
	}
	// The connection ended: say why, once the session has recorded it (the supervisor
	// does so promptly after the connection's context ends).
	select {
	case <-s.sess.ctx.Done():
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
