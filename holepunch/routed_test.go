package holepunch

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
)

func datagramOf(i int) *[]byte {
	b := []byte(fmt.Sprint(i))
	return &b
}

// The queue hands datagrams out oldest first across bursts that drain it and
// bursts that do not, and refuses one more than socketQueue.
func TestDatagramQueueOrderAndBound(t *testing.T) {
	q := newDatagramQueue()
	next, want := 0, 0
	popN := func(n int) {
		t.Helper()
		for range n {
			bp := q.pop()
			if bp == nil {
				t.Fatalf("queue empty, want datagram %d", want)
			}
			if got := string(*bp); got != fmt.Sprint(want) {
				t.Fatalf("popped %s, want %d", got, want)
			}
			want++
		}
	}
	pushN := func(n int) {
		t.Helper()
		for range n {
			if !q.push(datagramOf(next)) {
				t.Fatalf("push %d refused with %d waiting", next, next-want)
			}
			next++
		}
	}
	// Reads that keep pace without ever draining the queue (it must reuse
	// its read slots, not grow without end), then fall behind, then drain it.
	pushN(1)
	for range 4 * socketQueue {
		pushN(2)
		popN(2)
	}
	if cap(q.items) > keptQueue {
		t.Errorf("queue of 1 to 3 datagrams grew to %d slots", cap(q.items))
	}
	pushN(socketQueue - (next - want))
	if q.push(datagramOf(-1)) {
		t.Fatalf("push beyond socketQueue (%d) accepted", socketQueue)
	}
	if cap(q.items) > 2*socketQueue {
		t.Errorf("queue grew to %d slots for %d datagrams", cap(q.items), socketQueue)
	}
	popN(next - want)
	if q.pop() != nil {
		t.Fatal("drained queue returned a datagram")
	}
	if cap(q.items) > keptQueue {
		t.Errorf("drained queue keeps %d slots, want at most %d", cap(q.items), keptQueue)
	}
}

// A reader that found the queue empty is woken by the next push, and Read
// returns each datagram's bytes.
func TestRoutedConnReadWaitsForDelivery(t *testing.T) {
	c := newRoutedConn(nil, netip.MustParseAddrPort("203.0.113.5:4000"), nil)
	defer c.Close()
	got := make(chan string, 1)
	go func() {
		p := make([]byte, 64)
		n, err := c.Read(p)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(p[:n])
	}()
	c.deliver([]byte("hello"))
	if s := <-got; s != "hello" {
		t.Fatalf("Read = %q, want hello", s)
	}
}

// Close wakes a Read that waits on an empty queue.
func TestRoutedConnCloseWakesRead(t *testing.T) {
	c := newRoutedConn(nil, netip.MustParseAddrPort("203.0.113.5:4000"), nil)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 64))
		errc <- err
	}()
	c.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close = %v, want net.ErrClosed", err)
	}
}
