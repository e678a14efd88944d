package reliable

import (
	"io"
	"slices"
	"testing"
	"time"
)

// Wake reports exactly the streams whose application side may proceed: a
// reader with data, EOF or a reset to read, a writer whose full buffer has
// room again or whose stream the peer stopped, every stream when the
// connection ends; and nothing twice, nothing else.
func TestConnWake(t *testing.T) {
	n := newConnPair(t, netPath{delay: 5 * time.Millisecond}, 1, Config{SendBuffer: 32 << 10})
	a, b := n.conns[0], n.conns[1]
	s1, _ := a.OpenStream()
	s2, _ := a.OpenStream()
	s3, _ := a.OpenStream()
	check := func(what string, c *Conn, want ...uint64) {
		t.Helper()
		got := c.Wake(nil)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: woke %v, want %v", what, got, want)
		}
		if again := c.Wake(nil); len(again) != 0 {
			t.Errorf("%s: woke %v again", what, again)
		}
	}

	// Data on s1 only: its reader, and no writer (its buffer never filled).
	a.Write(s1, []byte("hello"))
	n.settle(time.Second)
	check("data on s1", b, s1)
	check("data on s1 acknowledged", a)
	for range 3 {
		b.AcceptStream()
	}
	if got, _ := readAll(b, s1); string(got) != "hello" {
		t.Fatalf("read %q", got)
	}

	// s2's writer fills its buffer: it is woken when the ACKs make room.
	if k, _ := a.Write(s2, make([]byte, 64<<10)); k != 32<<10 {
		t.Fatalf("wrote %d into a 32 KiB buffer", k)
	}
	n.settle(time.Second)
	check("s2 full, then acknowledged", a, s2)
	check("data on s2", b, s2)
	readAll(b, s2)

	// s3 ends: its reader sees EOF; its closed writer is not woken by the
	// ACK of the FIN.
	a.Write(s3, []byte("bye"))
	a.CloseWrite(s3)
	n.settle(time.Second)
	check("s3 FIN acknowledged", a)
	check("s3 FIN", b, s3)
	if _, err := readAll(b, s3); err != io.EOF {
		t.Fatalf("s3: %v", err)
	}

	// The peer resets its half of s1 and stops reading s2: the reader of
	// one and the writer of the other may proceed (to their errors).
	b.Reset(s1, 5)
	b.StopReading(s2, 6)
	n.settle(time.Second)
	check("s1 reset, s2 stopped", a, s1, s2)
	check("the peer's reset and STOP_SENDING acknowledged", b)
	if _, err := readAll(a, s1); !isReset(err, 5) {
		t.Errorf("s1: %v", err)
	}
	if _, err := a.Write(s2, []byte("x")); !isReset(err, 6) {
		t.Errorf("s2: %v", err)
	}

	// The connection ends: every stream still held is woken, on both sides.
	a.Close(0, "")
	n.settle(time.Second)
	check("closed", a, heldStreams(a)...)
	check("closed by the peer", b, heldStreams(b)...)
}

func heldStreams(c *Conn) []uint64 {
	var ids []uint64
	for id := range c.streams {
		ids = append(ids, id)
	}
	return ids
}
