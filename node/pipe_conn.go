package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/secure"
)

// pipeEndGrace: once the session has ended and the peer's direction is
// drained, our sending direction gets this long to report that it had
// finished (its CloseWrite returned) before we call the connection lost.
// It only races a channel send, so a second is ample.
const pipeEndGrace = time.Second

// PipeErrorKind sorts pipe failures by what the caller can do about them.
type PipeErrorKind int

const (
	// PipeFailed: it could not be done (local I/O, the DHT, a protocol
	// error).
	PipeFailed PipeErrorKind = iota
	// PipeNotFound: nobody serves the topic.
	PipeNotFound
	// PipeConnectFailed: a server was found but could not be reached.
	PipeConnectFailed
	// PipeLost: the connection ended before the transfer was complete.
	PipeLost
)

// PipeError is a failed pipe: its kind, a reason code ("bootstrap-failed",
// "no-peers", "refused", "connection-lost", ...) and the cause.
type PipeError struct {
	Kind   PipeErrorKind
	Reason string
	Err    error
	// Timeout: PipeConfig.Timeout passed (not the caller's context).
	Timeout bool
}

func (e *PipeError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *PipeError) Unwrap() error { return e.Err }

func pipeFailed(kind PipeErrorKind, reason string, err error) *PipeError {
	return &PipeError{Kind: kind, Reason: reason, Err: err}
}

// PipeConn is a pipe's one connection.
type PipeConn struct {
	conn *holepunch.Conn
	// ConnectTime is how long the connection took: the client's from the
	// lookup on, the server's its hole punching and handshake.
	ConnectTime time.Duration
}

// RemotePublicKey is the peer's identity.
func (c *PipeConn) RemotePublicKey() ed25519.PublicKey { return c.conn.RemotePublicKey() }

// Cipher is the AEAD that seals the connection's datagrams, as the handshake chose it.
func (c *PipeConn) Cipher() secure.Cipher { return c.conn.Cipher() }

// Path is how the connection runs (lan, direct, relay).
func (c *PipeConn) Path() holepunch.Path { return c.conn.Path() }

// RemoteAddr is the peer's end of the path.
func (c *PipeConn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// Close closes the connection.
func (c *PipeConn) Close() error { return c.conn.Close() }

// PipeStats is what a transfer moved.
type PipeStats struct {
	Sent, Received int64 // data bytes
	Duration       time.Duration
}

// Transfer sends in to the peer and writes what the peer sends to out, in
// pipe frames (pipe_frame.go), until both directions are complete: ours
// when in reached EOF and the end frame went out (then CloseWrite, a
// half-close), theirs when their end frame arrived. A peer direction that
// ends without its end frame is a lost connection (a *PipeError of kind
// PipeLost), never a finished transfer. A read of in that never ends is
// left behind when Transfer returns.
func (c *PipeConn) Transfer(ctx context.Context, in io.Reader, out io.Writer) (PipeStats, error) {
	t := &pipeTransfer{conn: c.conn, start: time.Now()}
	st := c.conn.Stream0()
	up, down := make(chan error, 1), make(chan error, 1)
	go func() { up <- sendPipe(st, in, &t.sent) }()
	go func() { down <- receivePipe(st, out, &t.received) }()
	err := t.wait(ctx, up, down)
	return PipeStats{Sent: t.sent.Load(), Received: t.received.Load(), Duration: time.Since(t.start)}, err
}

// pipeTransfer is one Transfer's state.
type pipeTransfer struct {
	conn           *holepunch.Conn
	start          time.Time
	sent, received atomic.Int64
}

// wait waits for both directions, the session's end or ctx.
func (t *pipeTransfer) wait(ctx context.Context, up, down <-chan error) error {
	ended := t.conn.Done()     // nil once the session has ended
	var grace <-chan time.Time // runs once the session ended and only our direction is open
	for up != nil || down != nil {
		if ended == nil && down == nil && grace == nil {
			grace = time.After(pipeEndGrace)
		}
		select {
		case err := <-up:
			if err != nil {
				return t.ioFailure("send", err)
			}
			up = nil
		case err := <-down:
			if err != nil {
				return t.receiveFailure(err)
			}
			down = nil
		case <-ended:
			// Data the peer sent before closing is still queued in the
			// stream: the receiving direction ends by itself, at its end
			// frame or with the session's error.
			ended = nil
		case <-grace:
			return pipeFailed(PipeLost, "connection-lost", fmt.Errorf("peer closed the connection before our input ended (sent %d, received %d bytes): %w",
				t.sent.Load(), t.received.Load(), t.conn.Err()))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// receiveFailure classifies an error of the receiving direction.
func (t *pipeTransfer) receiveFailure(err error) error {
	switch {
	case errors.Is(err, errPipeTruncated):
		return pipeFailed(PipeLost, "connection-lost", fmt.Errorf("%w after %d bytes (sent %d): the sender was stopped or lost before the end of its input",
			err, t.received.Load(), t.sent.Load()))
	case errors.Is(err, errPipeFrame):
		return pipeFailed(PipeFailed, "protocol", fmt.Errorf("receive: %w (is the peer a swarmdb pipe of this version?)", err))
	}
	return t.ioFailure("receive", err)
}

// ioFailure classifies a copy error: the session's end, or local I/O.
// A peer that stopped answering (secure.ErrPeerDead) is a lost connection
// too; the error says so.
func (t *pipeTransfer) ioFailure(dir string, err error) error {
	select {
	case <-t.conn.Done():
		if errors.Is(t.conn.Err(), secure.ErrPeerDead) {
			err = fmt.Errorf("%w (the peer stopped answering)", err)
		}
		return pipeFailed(PipeLost, "connection-lost", fmt.Errorf("%s: %w", dir, err))
	default:
	}
	if errors.Is(err, io.ErrClosedPipe) {
		return pipeFailed(PipeLost, "connection-lost", fmt.Errorf("%s: %w", dir, err))
	}
	return pipeFailed(PipeFailed, "io", fmt.Errorf("%s: %w", dir, err))
}

// errPipeTruncated: the peer's direction ended without its end frame.
var errPipeTruncated = errors.New("the peer's stream ended without an end of input")

// sendPipe copies in to st as data frames; at EOF of in it sends the end
// frame and half-closes. An error reading in is returned as is, so the
// caller can tell local I/O from the connection.
func sendPipe(st *secure.Stream, in io.Reader, sent *atomic.Int64) error {
	// An idle pipe holds its buffer while Read waits, so it starts small
	// and grows to a whole frame once a read fills it: bulk input.
	buf := make([]byte, pipeFrameStart)
	buf[0] = pipeFrameData
	for {
		n, rerr := in.Read(buf[1:])
		if n > 0 {
			if _, err := st.Write(buf[:1+n]); err != nil {
				return err
			}
			sent.Add(int64(n))
			if n == len(buf)-1 && len(buf) < pipeFrameMax {
				buf = make([]byte, pipeFrameMax)
				buf[0] = pipeFrameData
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if _, err := st.Write(appendPipeEnd(nil, uint64(sent.Load()))); err != nil {
		return err
	}
	return st.CloseWrite()
}

// receivePipe writes the data frames arriving on st to out. It returns nil
// at the end frame (when its total matches what arrived), errPipeTruncated
// when the stream ends before it, and errPipeFrame for anything else the
// peer should not have sent.
func receivePipe(st *secure.Stream, out io.Writer, received *atomic.Int64) error {
	var buf []byte // sized by the first message: an idle pipe holds none
	for {
		msg, err := st.ReadMessage(buf)
		if errors.Is(err, io.EOF) {
			return errPipeTruncated
		}
		if err != nil {
			return err
		}
		buf = msg
		f, err := parsePipeFrame(msg)
		if err != nil {
			return err
		}
		if f.end {
			if got := uint64(received.Load()); f.total != got {
				return fmt.Errorf("%w: the peer sent %d bytes, %d arrived", errPipeFrame, f.total, got)
			}
			return nil
		}
		if _, err := out.Write(f.data); err != nil {
			return err
		}
		received.Add(int64(len(f.data)))
	}
}
