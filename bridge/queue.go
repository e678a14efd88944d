package bridge

import (
	"context"
	"sync"
)

// outQueue is a peer's outbound queue: encoded messages in order, bounded both in count and in
// bytes (4,096 relayed puts are 6 MB, 4,096 large answers could be 256 MB). Its memory follows
// what it holds: an idle peer costs a few words, not a fixed buffer of maxMsgs slots.
//
// A queue holding more than behindBytes, or half its messages, is behind: patient (bulk)
// senders wait, and the bridge stops relaying puts to a swarmdb peer (see behindBytes). A
// few hundred KiB keep the writer busy; more would only hold memory.
type outQueue struct {
	maxMsgs, maxBytes, behindBytes int
	ready                          chan struct{} // capacity 1: a message was pushed
	drained                        chan struct{} // capacity 1: a message was popped

	mu    sync.Mutex // guards the fields below
	msgs  [][]byte
	bytes int
}

func newOutQueue(maxMsgs, maxBytes, behindBytes int) *outQueue {
	return &outQueue{maxMsgs: maxMsgs, maxBytes: maxBytes, behindBytes: min(behindBytes, maxBytes/2),
		ready: make(chan struct{}, 1), drained: make(chan struct{}, 1)}
}

// push appends msg unless it would take the queue over either bound; it never blocks.
func (q *outQueue) push(msg []byte) bool {
	q.mu.Lock()
	ok := len(q.msgs) < q.maxMsgs && q.bytes+len(msg) <= q.maxBytes
	if ok {
		q.msgs = append(q.msgs, msg)
		q.bytes += len(msg)
	}
	q.mu.Unlock()
	if ok {
		signal(q.ready)
	}
	return ok
}

// pushPatient waits until the queue is not behind, then appends msg. It reports false if ctx
// ends first.
func (q *outQueue) pushPatient(ctx context.Context, msg []byte) bool {
	for {
		q.mu.Lock()
		if !q.behindLocked() {
			q.msgs = append(q.msgs, msg)
			q.bytes += len(msg)
			q.mu.Unlock()
			signal(q.ready)
			return true
		}
		q.mu.Unlock()
		select {
		case <-q.drained:
		case <-ctx.Done():
			return false
		}
	}
}

// behind reports whether the queue holds more than behindBytes or half its messages.
func (q *outQueue) behind() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.behindLocked()
}

func (q *outQueue) behindLocked() bool {
	return q.bytes > q.behindBytes || len(q.msgs) >= q.maxMsgs/2
}

// pop waits for the oldest message and removes it. It reports false if ctx ends first.
func (q *outQueue) pop(ctx context.Context) ([]byte, bool) {
	for {
		q.mu.Lock()
		if len(q.msgs) > 0 {
			msg := q.msgs[0]
			q.msgs[0] = nil
			q.msgs = q.msgs[1:]
			if len(q.msgs) == 0 {
				q.msgs = nil // let the backing array go
			}
			q.bytes -= len(msg)
			q.mu.Unlock()
			signal(q.drained)
			return msg, true
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-ctx.Done():
			return nil, false
		}
	}
}

// size returns how many messages and bytes are queued.
func (q *outQueue) size() (msgs, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.msgs), q.bytes
}

// signal wakes one waiter on a capacity-1 channel without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
