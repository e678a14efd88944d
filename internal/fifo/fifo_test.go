package fifo

import "testing"

// The queue hands values out oldest first across bursts that drain it and
// bursts that do not, refuses one more than its bound, and keeps no more
// than Kept slots once drained.
func TestOrderAndBound(t *testing.T) {
	const bound = 4096
	q := New[int](bound)
	next, want := 0, 0
	popN := func(n int) {
		t.Helper()
		for range n {
			v, ok := q.Pop()
			if !ok {
				t.Fatalf("queue empty, want %d", want)
			}
			if v != want {
				t.Fatalf("popped %d, want %d", v, want)
			}
			want++
		}
	}
	pushN := func(n int) {
		t.Helper()
		for range n {
			if !q.Push(next) {
				t.Fatalf("push %d refused with %d waiting", next, next-want)
			}
			next++
		}
	}
	// Reads that keep pace without ever draining the queue (it must reuse
	// its read slots, not grow without end), then fall behind, then drain it.
	pushN(1)
	for range 4 * bound {
		pushN(2)
		popN(2)
	}
	if s := q.slots(); s > Kept {
		t.Errorf("queue of 1 to 3 values grew to %d slots", s)
	}
	pushN(bound - (next - want))
	if q.Push(-1) {
		t.Fatalf("push beyond the bound (%d) accepted", bound)
	}
	if q.Len() != bound {
		t.Errorf("Len = %d, want %d", q.Len(), bound)
	}
	if s := q.slots(); s > 2*bound {
		t.Errorf("queue grew to %d slots for %d values", s, bound)
	}
	popN(next - want)
	if _, ok := q.Pop(); ok {
		t.Fatal("drained queue returned a value")
	}
	if s := q.slots(); s > Kept {
		t.Errorf("drained queue keeps %d slots, want at most %d", s, Kept)
	}
}

// A reader that found the queue empty is woken by the next Push.
func TestReadyAfterPush(t *testing.T) {
	q := New[string](4)
	got := make(chan string, 1)
	go func() {
		for {
			if v, ok := q.Pop(); ok {
				got <- v
				return
			}
			<-q.Ready()
		}
	}()
	q.Push("hello")
	if v := <-got; v != "hello" {
		t.Fatalf("got %q, want hello", v)
	}
}

// slots is the queue's capacity in slots now.
func (q *Queue[T]) slots() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return cap(q.items)
}
