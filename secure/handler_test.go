package secure

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

// collector gathers what a message handler is given.
type collector struct {
	mu   sync.Mutex
	msgs [][]byte
	end  error
	done chan struct{} // closed at the last call
}

func newCollector() *collector { return &collector{done: make(chan struct{})} }

func (c *collector) handle(msg []byte, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if msg == nil {
		c.end = err
		close(c.done)
		return
	}
	c.msgs = append(c.msgs, bytes.Clone(msg))
}

// waitFor waits until n messages have arrived and returns them.
func (c *collector) waitFor(t *testing.T, n int) [][]byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		got := len(c.msgs)
		c.mu.Unlock()
		if got >= n {
			break
		}
		time.Sleep(time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.msgs) < n {
		t.Fatalf("the handler got %d messages, want %d", len(c.msgs), n)
	}
	return c.msgs
}

// TestStreamHandleMessages: messages reach the handler whole and in order:
// ones that arrived together with a message read before (already in the read
// buffer), ones larger than the handler's read room, a write split into
// several messages; then the end of the stream, once. Read is refused
// meanwhile, and the stream holds no goroutine while nothing arrives.
func TestStreamHandleMessages(t *testing.T) {
	testutil.CheckLeaks(t)
	p := newPipeSessions(t, pipeOptions{}, Config{})
	w, r := p.client.Stream0(), p.server.Stream0()

	// A first message read the usual way; the two after it were written with
	// it, so they may already sit in the reader's buffer.
	var first bytes.Buffer
	for _, m := range []string{"kind", "one", "two"} {
		first.WriteByte(byte(len(m)))
		first.WriteString(m)
	}
	if _, err := w.st.Write(first.Bytes()); err != nil {
		t.Fatal(err)
	}
	if m, err := r.ReadMessage(nil); err != nil || string(m) != "kind" {
		t.Fatalf("ReadMessage = %q, %v", m, err)
	}
	c := newCollector()
	idle := runtime.NumGoroutine()
	if err := r.HandleMessages(c.handle); err != nil {
		t.Fatal(err)
	}
	if err := r.HandleMessages(c.handle); !errors.Is(err, ErrHandled) {
		t.Errorf("a second HandleMessages: %v, want ErrHandled", err)
	}
	if _, err := r.ReadMessage(nil); !errors.Is(err, ErrHandled) {
		t.Errorf("ReadMessage after HandleMessages: %v, want ErrHandled", err)
	}

	want := [][]byte{[]byte("one"), []byte("two")}
	big := bytes.Repeat([]byte("0123456789abcdef"), 3*streamReadBuffer/16+1)
	want = append(want, big)
	split := make([]byte, DefaultMaxMessageSize+7)
	for i := range split {
		split[i] = byte(i)
	}
	want = append(want, split[:DefaultMaxMessageSize], split[DefaultMaxMessageSize:])
	for _, m := range [][]byte{big, split} {
		if _, err := w.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	got := c.waitFor(t, len(want))
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("message %d: %d bytes, want %d", i, len(got[i]), len(want[i]))
		}
	}

	// Idle: the handler's goroutine has ended.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > idle && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > idle {
		t.Errorf("%d goroutines with the handler idle, %d before it", n, idle)
	}

	if err := w.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("no last call after the peer's FIN")
	}
	if !errors.Is(c.end, io.EOF) {
		t.Errorf("last call with %v, want io.EOF", c.end)
	}
}

// TestStreamHandleMessagesBadLength: a length of zero breaks the framing; the
// handler ends with ErrProtocol.
func TestStreamHandleMessagesBadLength(t *testing.T) {
	testutil.CheckLeaks(t)
	p := newPipeSessions(t, pipeOptions{}, Config{})
	w, r := p.client.Stream0(), p.server.Stream0()
	c := newCollector()
	if err := r.HandleMessages(c.handle); err != nil {
		t.Fatal(err)
	}
	if _, err := w.st.Write([]byte{2, 'o', 'k', 0}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("no last call after a bad length")
	}
	if len(c.msgs) != 1 || string(c.msgs[0]) != "ok" || !errors.Is(c.end, ErrProtocol) {
		t.Errorf("got %q then %v; want \"ok\" then ErrProtocol", c.msgs, c.end)
	}
}

// TestSessionHandleStreams: streams the peer opens go to the handler, in the
// order opened, and their messages can go to handlers of their own; when the
// session ends, each stream handler has its last call.
func TestSessionHandleStreams(t *testing.T) {
	testutil.CheckLeaks(t)
	p := newPipeSessions(t, pipeOptions{}, Config{})
	const streams = 5
	var mu sync.Mutex
	var ids []uint64
	var cols []*collector
	p.server.HandleStreams(func(st *Stream) {
		c := newCollector()
		mu.Lock()
		ids = append(ids, st.ID())
		cols = append(cols, c)
		mu.Unlock()
		if err := st.HandleMessages(c.handle); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var opened []uint64
	for i := range streams {
		st, err := p.client.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		opened = append(opened, st.ID())
		if _, err := st.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; ; i++ {
		mu.Lock()
		n := len(cols)
		mu.Unlock()
		if n == streams {
			break
		}
		if i > 10000 {
			t.Fatalf("the handler got %d of %d streams", n, streams)
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, c := range cols {
		if ids[i] != opened[i] {
			t.Errorf("stream %d handed over as %d, opened as %d", i, ids[i], opened[i])
		}
		if got := c.waitFor(t, 1); got[0][0] != byte(i) {
			t.Errorf("stream %d: message %v", i, got[0])
		}
	}
	p.client.Close()
	for i, c := range cols {
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("stream %d: no last call after the session ended", i)
		}
		if c.end == nil {
			t.Errorf("stream %d: last call without an error", i)
		}
	}
}
