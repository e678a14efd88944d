package secure

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/swarmdb/swarmdb/internal/ondemand"
)

// Handlers are the push side of the API, for connections that are idle most
// of their life. A goroutine blocked in Read or AcceptStream costs about 8 KiB
// of stack per connection even when nothing arrives for hours; a handler runs
// on a goroutine that exists only while messages or streams are waiting
// (package ondemand), so an idle session holds none.

// messageHandler delivers one stream's messages to a function
// (Stream.HandleMessages).
type messageHandler struct {
	// immutable after HandleMessages
	s *Stream
	f func(msg []byte, err error)
	w ondemand.Worker

	// owned by w's goroutine
	partial []byte // the start of a message whose rest has not arrived
	ended   bool   // f had its last call
}

// handlerReads lend handlers the room to read into while they run: an idle
// handler holds only the start of a message still arriving, usually nothing.
var handlerReads = sync.Pool{New: func() any { b := make([]byte, streamReadBuffer); return &b }}

// HandleMessages makes the stream deliver each message it reads to f, in order,
// instead of to Read and ReadMessage (which return ErrHandled from then on). f runs
// on a goroutine that exists only while messages are waiting, one call at a time;
// msg is valid only during the call. Once the stream ends, f is called one last
// time with a nil msg and what Read would have returned: io.EOF after the peer's
// FIN, else why it ended (net.ErrClosed after our own Close).
//
// Call it once, before reading or after whole messages only: what a previous Read
// left of a message cannot be framed again, and makes it fail.
func (s *Stream) HandleMessages(f func(msg []byte, err error)) error {
	s.rmu.Lock()
	if s.h != nil {
		s.rmu.Unlock()
		return fmt.Errorf("secure: stream %d: %w", s.ID(), ErrHandled)
	}
	if len(s.pending) > 0 {
		s.rmu.Unlock()
		return fmt.Errorf("secure: stream %d: a message is partly read", s.ID())
	}
	h := &messageHandler{s: s, f: f}
	h.w.Run = h.run
	if s.br != nil {
		// Bytes the reader's buffer already holds (messages that came with the one
		// last read) are the handler's to frame.
		b, _ := s.br.Peek(s.br.Buffered())
		h.partial = append([]byte(nil), b...)
		s.br.Reset(nil)
		readBuffers.Put(s.br)
		s.br = nil
	}
	s.h = h
	s.rmu.Unlock()
	s.st.notifyRead(h.w.Kick)
	return nil
}

// run delivers every whole message that has arrived, and the end of the stream.
func (h *messageHandler) run() {
	if h.ended {
		return
	}
	bp := handlerReads.Get().(*[]byte)
	defer handlerReads.Put(bp)
	for {
		n, err := h.s.st.tryRead(*bp)
		data := (*bp)[:n]
		if len(h.partial) > 0 {
			data = append(h.partial, data...)
		}
		rest, perr := h.deliver(data)
		h.partial = nil
		if len(rest) > 0 {
			h.partial = append([]byte(nil), rest...)
		}
		if perr != nil {
			h.s.st.CancelRead(codeStreamClosed)
			h.end(perr)
			return
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(h.partial) > 0 {
				err = fmt.Errorf("%w: stream %d ends inside a message", ErrProtocol, h.s.ID())
			} else if !errors.Is(err, io.EOF) {
				err = h.s.mapErr(err)
			}
			h.end(err)
			return
		}
		if n == 0 {
			return // nothing more has arrived: the goroutine ends until the next kick
		}
	}
}

// deliver calls f for each whole message at the start of data and returns what
// is left: the start of a message still arriving.
func (h *messageHandler) deliver(data []byte) ([]byte, error) {
	for len(data) > 0 {
		size, k := binary.Uvarint(data)
		if k == 0 {
			return data, nil // the length itself is still arriving
		}
		if k < 0 || size == 0 || size > maxWireMessage {
			return nil, fmt.Errorf("%w: stream %d: bad message length", ErrProtocol, h.s.ID())
		}
		if uint64(len(data)-k) < size {
			return data, nil
		}
		h.f(data[k:k+int(size)], nil)
		data = data[k+int(size):]
	}
	return nil, nil
}

// end gives f its last call.
func (h *messageHandler) end(err error) {
	h.ended = true
	h.partial = nil
	h.s.readFinished()
	h.f(nil, err)
}

// HandleStreams hands every stream the peer opens to f instead of to
// AcceptStream, once its open byte has arrived. f runs on a goroutine that exists
// only while streams are waiting, one call at a time, so a slow f holds up the
// streams behind it. Call it once; streams that were already waiting go to f too.
func (s *Session) HandleStreams(f func(*Stream)) {
	w := &ondemand.Worker{}
	w.Run = func() {
		for {
			ts, _ := s.tr.tryAccept()
			if ts == nil {
				return // none waits, or the session has ended
			}
			if st := s.checkOpened(context.Background(), ts); st != nil {
				f(st)
			}
		}
	}
	s.tr.notifyAccept(w.Kick)
}
