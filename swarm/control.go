package swarm

import (
	"context"
	"fmt"
	"time"

	"github.com/swarmdb/swarmdb/secure"
)

// Every connection carries one control stream for the membership protocol
// (overlay.go), opened by the side that dialled. Streams on a swarm
// connection start with one message naming their kind, so the swarm finds
// its control stream and hands every other stream to the application
// (Conn.AcceptStream); Stream0 is left alone (the message layer, or
// whatever the application sends on it).
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
	out      chan []byte         // encoded messages to write
	accepted chan *secure.Stream // the peer's control stream, found by acceptStreams; buffered 1
	demote   chan struct{}       // closed when the connection is demoted: flush, then close
	apps     chan *secure.Stream // application streams for Conn.AcceptStream
	demoted  bool                // demote is closed; guarded by Swarm.mu
}

func newControl() *control {
	return &control{
		out:      make(chan []byte, controlQueue),
		accepted: make(chan *secure.Stream, 1),
		demote:   make(chan struct{}),
		apps:     make(chan *secure.Stream, appStreamBacklog),
	}
}

// send queues m without blocking; it reports false when the queue is full.
func (ctl *control) send(m *memberMsg) bool {
	select {
	case ctl.out <- appendMember(nil, m):
		return true
	default:
		return false
	}
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
	case st := <-c.ctl.apps:
		return st, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.Done():
		return nil, fmt.Errorf("swarm: accept stream: %w", c.Err())
	}
}

// serveControl runs c's control stream until the connection ends: it opens
// it (we dialled) or waits for the peer's, then reads messages into the
// overlay while a writer sends ours. A demoted connection is closed once
// its disconnect message is written.
func (s *Swarm) serveControl(c *Conn) {
	defer s.wg.Done()
	ctl := c.ctl
	var st *secure.Stream
	if c.Initiator {
		ctx, cancel := context.WithTimeout(s.ctx, streamKindWait)
		var err error
		st, err = c.Session.OpenStream(ctx)
		cancel()
		if err == nil {
			if _, err = st.Write([]byte(streamKindControl)); err != nil {
				st.Close()
				st = nil
			}
		}
		if err != nil {
			s.log.Debug("swarm: no control stream", "peer", shortKey(c.RemotePublicKey()), "err", err)
		}
	} else {
		select {
		case st = <-ctl.accepted:
		case <-c.Done():
		case <-s.ctx.Done():
		case <-ctl.demote:
			c.Conn.Close()
		}
	}
	if st == nil {
		s.waitDemoteOrEnd(c)
		return
	}
	s.wg.Add(1)
	go s.readControl(c, st)
	s.writeControl(c, st)
}

// waitDemoteOrEnd is the writer of a connection without a control stream:
// it only closes the connection when it is demoted.
func (s *Swarm) waitDemoteOrEnd(c *Conn) {
	select {
	case <-c.ctl.demote:
		c.Conn.Close()
	case <-c.Done():
	case <-s.ctx.Done():
	}
}

// writeControl writes queued control messages until the connection ends;
// once demoted it writes what is queued (the disconnect) and closes the
// connection.
func (s *Swarm) writeControl(c *Conn, st *secure.Stream) {
	ctl := c.ctl
	for {
		select {
		case msg := <-ctl.out:
			if _, err := st.Write(msg); err != nil {
				s.waitDemoteOrEnd(c)
				return
			}
		case <-ctl.demote:
			_ = st.SetWriteDeadline(time.Now().Add(demoteFlushWait))
			for len(ctl.out) > 0 {
				if _, err := st.Write(<-ctl.out); err != nil {
					break
				}
			}
			c.Conn.Close()
			return
		case <-c.Done():
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// readControl reads the peer's control messages into the overlay.
func (s *Swarm) readControl(c *Conn, st *secure.Stream) {
	defer s.wg.Done()
	var buf []byte
	for {
		msg, err := st.ReadMessage(buf)
		if err != nil {
			return
		}
		buf = msg[:0]
		m, err := parseMember(msg)
		if err != nil {
			s.log.Debug("swarm: bad control message", "peer", shortKey(c.RemotePublicKey()), "err", err)
			continue
		}
		s.mu.Lock()
		if s.conns[peerKey(c.RemotePublicKey())] == c {
			s.overlay.receive(c.RemotePublicKey(), m, time.Now())
			s.applyLocked()
		}
		s.mu.Unlock()
	}
}

// acceptStreams takes every stream the peer opens: the first control
// stream goes to serveControl, application streams to Conn.AcceptStream.
func (s *Swarm) acceptStreams(c *Conn) {
	defer s.wg.Done()
	haveControl := false
	for {
		st, err := c.Session.AcceptStream(s.ctx)
		if err != nil {
			return
		}
		_ = st.SetReadDeadline(time.Now().Add(streamKindWait))
		kind, err := st.ReadMessage(nil)
		_ = st.SetReadDeadline(time.Time{})
		switch {
		case err != nil:
			st.Close()
		case string(kind) == streamKindControl && !haveControl && !c.Initiator:
			haveControl = true
			c.ctl.accepted <- st
		case string(kind) == streamKindApp:
			select {
			case c.ctl.apps <- st:
			default:
				st.Close()
			}
		default:
			st.Close()
		}
	}
}
