package swarm

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/swarmdb/swarmdb/internal/ondemand"
	"github.com/swarmdb/swarmdb/secure"
)

// Every connection carries one control stream for the membership protocol
// (overlay.go), opened by the side that dialled. Streams on a swarm
// connection start with one message naming their kind, so the swarm finds
// its control stream and hands every other stream to the application
// (Conn.AcceptStream); Stream0 is left alone (the message layer, or
// whatever the application sends on it).
//
// An idle connection holds no goroutine of the swarm's: the session hands
// new streams and control messages to handlers (secure.Session.HandleStreams,
// secure.Stream.HandleMessages), and queued control messages are written by a
// worker that runs only while the queue is not empty (package ondemand). Three
// goroutines blocked in reads and a channel receive cost about 25 KiB of
// stack per connection; a swarm server holds dozens.
const (
	streamKindControl = "swarmdb/control/1"
	streamKindApp     = "swarmdb/app/1"
)

const (
	// controlQueue bounds the control messages waiting to be written to one
	// peer; membership messages are best effort, and beyond it they are
	// dropped (a peer that does not read them is probed and redialled).
	controlQueue = 64
	// appStreamBacklog bounds the application streams accepted but not yet
	// taken by Conn.AcceptStream; a further one is closed.
	appStreamBacklog = 16
	// streamKindWait bounds the wait for a new stream's kind message.
	streamKindWait = 10 * time.Second
	// demoteFlushWait bounds how long a demoted connection waits for its
	// disconnect message to be written before it closes.
	demoteFlushWait = time.Second
)

// control is one connection's control stream.
type control struct {
	// immutable after newControl
	writer ondemand.Worker // writes out; Run is Swarm.writeControl

	mu       sync.Mutex          // guards the fields below
	apps     chan *secure.Stream // application streams for Conn.AcceptStream; see appStreams
	st       *secure.Stream
	out      [][]byte // encoded messages waiting for st
	claimed  bool     // the peer's control stream was accepted (we did not dial)
	broken   bool     // there is no control stream, or writing to it failed: out is dropped
	demoted  bool     // close the connection once out is written
	flushing bool     // demoted and the write deadline is set
}

// newControl returns a control whose writer runs write (Swarm.writeControl).
func newControl(write func()) *control {
	ctl := &control{}
	ctl.writer.Run = write
	return ctl
}

// appStreams returns the queue of application streams, made on first use: most
// connections carry none, and the queue is 224 bytes.
func (ctl *control) appStreams() chan *secure.Stream {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	if ctl.apps == nil {
		ctl.apps = make(chan *secure.Stream, appStreamBacklog)
	}
	return ctl.apps
}

// send queues m without blocking; it reports false when it is dropped (the
// queue is full, or the stream broken).
func (ctl *control) send(m *memberMsg) bool {
	ctl.mu.Lock()
	if ctl.broken || len(ctl.out) >= controlQueue {
		ctl.mu.Unlock()
		return false
	}
	ctl.out = append(ctl.out, appendMember(nil, m))
	ctl.mu.Unlock()
	ctl.writer.Kick()
	return true
}

// demote makes the writer close the connection once what is queued (the
// disconnect) is written; at once if there is no control stream.
func (ctl *control) demote() {
	ctl.mu.Lock()
	ctl.demoted = true
	ctl.mu.Unlock()
	ctl.writer.Kick()
}

// OpenStream opens a new stream to the peer for the application; the
// peer's Conn.AcceptStream returns it. Use it rather than the session's own
// OpenStream, whose streams the peer's swarm would not recognise.
func (c *Conn) OpenStream(ctx context.Context) (*secure.Stream, error) {
	st, err := c.Session.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := st.Write([]byte(streamKindApp)); err != nil {
		st.Close()
		return nil, fmt.Errorf("swarm: open stream: %w", err)
	}
	return st, nil
}

// AcceptStream returns the next stream the peer opened with
// Conn.OpenStream.
func (c *Conn) AcceptStream(ctx context.Context) (*secure.Stream, error) {
	select {
	case st := <-c.ctl.appStreams():
		return st, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.Done():
		return nil, fmt.Errorf("swarm: accept stream: %w", c.Err())
	}
}

// startControl sets up c's control stream: the streams the peer opens go to
// acceptStream, and the side that dialled opens the control stream (a local
// step: it waits for no round trip). It returns at once.
func (s *Swarm) startControl(c *Conn) {
	c.Session.HandleStreams(func(st *secure.Stream) { s.acceptStream(c, st) })
	if !c.Initiator {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, streamKindWait)
	st, err := c.Session.OpenStream(ctx)
	cancel()
	if err == nil {
		if _, err = st.Write([]byte(streamKindControl)); err != nil {
			st.Close()
		}
	}
	if err != nil {
		s.log.Debug("swarm: no control stream", "peer", shortKey(c.RemotePublicKey()), "err", err)
		s.attachControl(c, nil)
		return
	}
	s.attachControl(c, st)
}

// attachControl makes st c's control stream: its messages go to the overlay
// and the queue is written to it. A nil st marks the connection as having
// none, so a demotion closes it at once.
func (s *Swarm) attachControl(c *Conn, st *secure.Stream) {
	if st != nil {
		err := st.HandleMessages(func(msg []byte, err error) {
			if err == nil {
				s.controlMessage(c, msg)
			}
		})
		if err != nil {
			st.Close()
			st = nil
		}
	}
	c.ctl.mu.Lock()
	c.ctl.st = st
	if st == nil {
		c.ctl.broken = true
		c.ctl.out = nil
	}
	c.ctl.mu.Unlock()
	c.ctl.writer.Kick()
}

// writeControl is c's writer: it writes the queued messages and returns once
// none is left; a demoted connection is then closed. It may block in a Write
// while the peer's window is full, as any writer does.
func (s *Swarm) writeControl(c *Conn) {
	ctl := c.ctl
	for {
		ctl.mu.Lock()
		st, demoted := ctl.st, ctl.demoted
		if st == nil || len(ctl.out) == 0 {
			// Written, or nowhere to write it (no control stream yet, or a
			// broken one): a demoted connection closes now.
			ctl.mu.Unlock()
			if demoted {
				c.Conn.Close()
			}
			return
		}
		msg := ctl.out[0]
		ctl.out[0] = nil
		ctl.out = ctl.out[1:]
		if len(ctl.out) == 0 {
			ctl.out = nil // an idle connection keeps no queue
		}
		setDeadline := demoted && !ctl.flushing
		ctl.flushing = ctl.flushing || demoted
		ctl.mu.Unlock()
		if setDeadline {
			_ = st.SetWriteDeadline(time.Now().Add(demoteFlushWait))
		}
		if _, err := st.Write(msg); err != nil {
			ctl.mu.Lock()
			ctl.st, ctl.broken, ctl.out = nil, true, nil
			ctl.mu.Unlock()
			if demoted {
				c.Conn.Close()
			}
			return
		}
	}
}

// controlMessage takes one of the peer's control messages into the overlay.
func (s *Swarm) controlMessage(c *Conn, msg []byte) {
	m, err := parseMember(msg)
	if err != nil {
		s.log.Debug("swarm: bad control message", "peer", shortKey(c.RemotePublicKey()), "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns[peerKey(c.RemotePublicKey())] == c {
		s.overlay.receive(c.RemotePublicKey(), m, time.Now())
		s.applyLocked()
	}
}

// acceptStream sorts a stream the peer opened by its kind message: the
// first control stream (the peer dialled) becomes c's, application streams
// go to Conn.AcceptStream, anything else is closed.
func (s *Swarm) acceptStream(c *Conn, st *secure.Stream) {
	_ = st.SetReadDeadline(time.Now().Add(streamKindWait))
	kind, err := st.ReadMessage(nil)
	_ = st.SetReadDeadline(time.Time{})
	switch {
	case err != nil:
		st.Close()
	case string(kind) == streamKindControl && !c.Initiator && c.ctl.claim():
		s.attachControl(c, st)
	case string(kind) == streamKindApp:
		select {
		case c.ctl.appStreams() <- st:
		default:
			st.Close()
		}
	default:
		st.Close()
	}
}

// claim reports whether this is the first control stream the peer opened.
func (ctl *control) claim() bool {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	first := !ctl.claimed
	ctl.claimed = true
	return first
}
