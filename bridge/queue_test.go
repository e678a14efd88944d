package bridge

import (
	"bytes"
	"context"
	"testing"
	"time"
)

func TestOutQueueBounds(t *testing.T) {
	q := newOutQueue(4, 100, 100)
	for i, m := range [][]byte{make([]byte, 40), make([]byte, 40)} {
		if !q.push(m) {
			t.Fatalf("message %d refused", i)
		}
	}
	if q.push(make([]byte, 21)) {
		t.Error("a message over the byte bound was queued")
	}
	if !q.push(make([]byte, 20)) {
		t.Error("a message that fits the byte bound was refused")
	}
	if !q.push(nil) || q.push(nil) {
		t.Error("the count bound of 4 does not hold")
	}
	if n, size := q.size(); n != 4 || size != 100 {
		t.Errorf("size %d messages, %d bytes; want 4, 100", n, size)
	}
}

func TestOutQueueBehind(t *testing.T) {
	q := newOutQueue(10, 200, 60)
	q.push(make([]byte, 60))
	if q.behind() {
		t.Error("behind with no more than behindBytes queued")
	}
	q.push(make([]byte, 1))
	if !q.behind() {
		t.Error("not behind with more than behindBytes queued")
	}
	q = newOutQueue(10, 1000, 1000)
	for range 5 {
		q.push(nil)
	}
	if !q.behind() {
		t.Error("not behind with half of the messages queued")
	}
}

func TestOutQueueOrderAndPatience(t *testing.T) {
	q := newOutQueue(100, 100, 50)
	ctx := context.Background()
	for _, s := range []string{"a", "b"} {
		q.push(bytes.Repeat([]byte(s), 30))
	}
	// 60 bytes are over behindBytes: a patient sender waits for a pop.
	pushed := make(chan struct{})
	go func() {
		q.pushPatient(ctx, []byte("c"))
		close(pushed)
	}()
	select {
	case <-pushed:
		t.Fatal("pushPatient did not wait while the queue was over half full")
	case <-time.After(50 * time.Millisecond):
	}
	for _, want := range []string{"a", "b", "c"} {
		msg, ok := q.pop(ctx)
		if !ok || msg[0] != want[0] {
			t.Fatalf("popped %q, want %q first", msg, want)
		}
		if want == "a" {
			<-pushed // one pop brought it under behindBytes
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, ok := q.pop(cancelled); ok {
		t.Error("pop on an empty queue returned with its context done")
	}
}
