package bridge

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Conn is a connection that carries whole messages, one JSON object each. The bridge calls
// ReadMessage from one goroutine and WriteMessage from another, so implementations must allow
// one reader and one writer at a time, concurrently. Close must unblock both.
type Conn interface {
	// ReadMessage returns the next message. The slice is only valid until the next call. A
	// message over the connection's size limit is skipped (drained) and reported as
	// ErrMessageTooLarge, after which the connection is still usable; any other error ends it.
	ReadMessage(ctx context.Context) ([]byte, error)
	// WriteMessage sends msg as one message. It may block (back-pressure); ctx bounds the wait.
	WriteMessage(ctx context.Context, msg []byte) error
	// Close closes the connection; pending and later reads and writes fail. Idempotent.
	Close() error
	// RemoteID names the other end for logs and stats: for a swarm stream the peer's public
	// key, for a WebSocket its remote address. It is not the ToolDb client id.
	RemoteID() string
}

// MessageStream is a message-preserving stream such as *secure.Stream (a swarm connection's
// stream 0): ReadMessage returns one whole message, one Write sends one message.
type MessageStream interface {
	ReadMessage(buf []byte) ([]byte, error)
	Write(p []byte) (int, error)
	Close() error
}

// deadliner is what StreamConn uses, when the stream has it, to honour contexts.
type deadliner interface {
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// StreamConn adapts a MessageStream to Conn: one JSON message per stream message. The stream
// must deliver messages of up to maxSize bytes unsplit (for *secure.Stream: its
// Config.MaxMessageSize must be at least the bridge's Limits.MaxMessageSize); a larger write is
// refused with ErrMessageTooLarge instead of being split into pieces the peer could not parse.
type StreamConn struct {
	s       MessageStream
	remote  string
	maxSize int

	rbuf []byte // owned by the reader
}

var _ Conn = (*StreamConn)(nil)

// NewStreamConn wraps s; remote is what RemoteID returns, maxSize zero means
// DefaultMaxMessageSize.
func NewStreamConn(s MessageStream, remote string, maxSize int) *StreamConn {
	if maxSize <= 0 {
		maxSize = DefaultMaxMessageSize
	}
	return &StreamConn{s: s, remote: remote, maxSize: maxSize}
}

// ReadMessage reads one stream message. If ctx can end and the stream has deadlines, ending
// ctx interrupts the read.
func (c *StreamConn) ReadMessage(ctx context.Context) ([]byte, error) {
	if d, ok := c.s.(deadliner); ok && ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { _ = d.SetReadDeadline(time.Now()) })
		defer func() {
			if !stop() {
				_ = d.SetReadDeadline(time.Time{}) // the stream stays usable with another ctx
			}
		}()
	}
	msg, err := c.s.ReadMessage(c.rbuf)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if cap(msg) <= 1<<20 {
		c.rbuf = msg[:0] // keep a moderate buffer for the next read
	}
	if len(msg) > c.maxSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrMessageTooLarge, len(msg))
	}
	return msg, nil
}

// WriteMessage writes msg as one stream message.
func (c *StreamConn) WriteMessage(ctx context.Context, msg []byte) error {
	if len(msg) > c.maxSize {
		return fmt.Errorf("%w: %d bytes", ErrMessageTooLarge, len(msg))
	}
	if d, ok := c.s.(deadliner); ok {
		if dl, has := ctx.Deadline(); has {
			_ = d.SetWriteDeadline(dl)
			defer d.SetWriteDeadline(time.Time{})
		}
	}
	_, err := c.s.Write(msg)
	return err
}

// Close closes the stream.
func (c *StreamConn) Close() error { return c.s.Close() }

// RemoteID returns the name given to NewStreamConn.
func (c *StreamConn) RemoteID() string { return c.remote }

// Pipe returns two connected in-memory Conns, for tests and for bridging two bridges in one
// process. Each direction buffers up to queue messages (zero means 64); a writer blocks while
// the buffer is full, like a real stream under back-pressure.
func Pipe(queue int) (Conn, Conn) {
	if queue <= 0 {
		queue = 64
	}
	ab := make(chan []byte, queue)
	ba := make(chan []byte, queue)
	done := make(chan struct{})
	once := new(sync.Once)
	a := &pipeConn{in: ba, out: ab, done: done, once: once, name: "pipe-a"}
	b := &pipeConn{in: ab, out: ba, done: done, once: once, name: "pipe-b"}
	return a, b
}

type pipeConn struct {
	in, out chan []byte
	done    chan struct{} // shared: closing either end closes both
	once    *sync.Once
	name    string
}

func (p *pipeConn) ReadMessage(ctx context.Context) ([]byte, error) {
	select {
	case m := <-p.in:
		return m, nil
	case <-p.done:
		// Deliver what was sent before the close, as a stream would.
		select {
		case m := <-p.in:
			return m, nil
		default:
			return nil, io.EOF
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *pipeConn) WriteMessage(ctx context.Context, msg []byte) error {
	cp := append([]byte(nil), msg...)
	select {
	case <-p.done:
		return net.ErrClosed
	default:
	}
	select {
	case p.out <- cp:
		return nil
	case <-p.done:
		return net.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pipeConn) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

func (p *pipeConn) RemoteID() string { return p.name }
