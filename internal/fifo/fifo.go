// Package fifo is a bounded first-in, first-out queue whose memory follows
// what waits in it. A buffered channel of the same bound allocates all of it
// up front: a connection's datagram queue of 4096 cost 32 KiB or more per
// connection, idle or not. This queue grows with a burst, reuses the slots
// already read before it grows again, and lets go of more than Kept slots
// once it drains.
package fifo

import "sync"

// Kept is the most slots a drained queue keeps for the next burst: a few
// batches of a bulk transfer, which usually drain between bursts.
const Kept = 256

// Queue holds at most its bound of values, oldest first. Push and Pop are
// safe for concurrent use; a reader that finds it empty waits on Ready.
type Queue[T any] struct {
	mu    sync.Mutex
	items []T // items[head:] wait
	head  int
	max   int
	ready chan struct{}
}

// New returns an empty queue that holds at most max values.
func New[T any](max int) *Queue[T] {
	return &Queue[T]{max: max, ready: make(chan struct{}, 1)}
}

// Push appends v, or reports false when the queue holds its bound already.
func (q *Queue[T]) Push(v T) bool {
	q.mu.Lock()
	n := len(q.items) - q.head
	if n >= q.max {
		q.mu.Unlock()
		return false
	}
	if len(q.items) == cap(q.items) && q.head > 0 {
		// Reuse the slots already read before growing.
		copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, v)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// Pop removes and returns the oldest value; false when none waits.
func (q *Queue[T]) Pop() (T, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var zero T
	if q.head == len(q.items) {
		return zero, false
	}
	v := q.items[q.head]
	q.items[q.head] = zero
	q.head++
	if q.head == len(q.items) {
		q.head = 0
		if cap(q.items) > Kept {
			q.items = nil
		} else {
			q.items = q.items[:0]
		}
	}
	return v, true
}

// Len is how many values wait.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head
}

// Ready receives a token after a Push: a reader whose Pop found the queue
// empty waits on it and pops again. A token may be stale (the value was
// popped already); Pop then finds nothing and the reader waits again.
func (q *Queue[T]) Ready() <-chan struct{} { return q.ready }
