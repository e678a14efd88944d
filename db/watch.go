package db

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
)

// Event is one accepted change, delivered to every watcher of its key, in commit order.
type Event struct {
	Outcome Outcome // Stored or Merged
	Record  Record  // the record that was accepted
	// Merged is the key's merged change list after a CRDT merge; nil for plain records.
	Merged json.RawMessage
}

// Watcher receives the events of one key or one key prefix. Its queue is unbounded up to the
// store's WatchQueue; a watcher that falls further behind is ended with ErrWatchOverflow rather
// than silently missing events.
type Watcher struct {
	store  *Store
	key    string
	prefix bool
	signal chan struct{} // capacity 1: "the queue may be non-empty"

	mu     sync.Mutex // guards the fields below
	queue  []Event
	err    error // set once: ErrClosed or ErrWatchOverflow
	limit  int
	closed bool
}

// Watch returns a watcher for every accepted change of key.
func (s *Store) Watch(key string) *Watcher { return s.addWatcher(key, false) }

// WatchPrefix returns a watcher for every accepted change of keys starting with prefix.
func (s *Store) WatchPrefix(prefix string) *Watcher { return s.addWatcher(prefix, true) }

func (s *Store) addWatcher(key string, prefix bool) *Watcher {
	w := &Watcher{store: s, key: key, prefix: prefix, signal: make(chan struct{}, 1), limit: s.cfg.WatchQueue}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		w.err = ErrClosed
		return w
	}
	s.watchers[w] = struct{}{}
	return w
}

// Next returns the next event, blocking until there is one, ctx ends, or the watcher ends.
func (w *Watcher) Next(ctx context.Context) (Event, error) {
	for {
		w.mu.Lock()
		if len(w.queue) > 0 {
			ev := w.queue[0]
			w.queue[0] = Event{}
			w.queue = w.queue[1:]
			w.mu.Unlock()
			return ev, nil
		}
		err := w.err
		w.mu.Unlock()
		if err != nil {
			return Event{}, err
		}
		select {
		case <-w.signal:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

// Close stops the watcher; Next then returns ErrClosed once the queue is drained.
func (w *Watcher) Close() {
	w.store.mu.Lock()
	delete(w.store.watchers, w)
	w.store.mu.Unlock()
	w.end(ErrClosed)
}

func (w *Watcher) matches(key string) bool {
	if w.prefix {
		return strings.HasPrefix(key, w.key)
	}
	return key == w.key
}

func (w *Watcher) end(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
	w.wake()
}

func (w *Watcher) wake() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// push queues ev, ending the watcher if it is too far behind. It reports false when ended.
func (w *Watcher) push(ev Event) bool {
	w.mu.Lock()
	if w.err != nil {
		w.mu.Unlock()
		return false
	}
	if len(w.queue) >= w.limit {
		w.err = ErrWatchOverflow
		w.queue = nil
		w.mu.Unlock()
		w.wake()
		return false
	}
	w.queue = append(w.queue, ev)
	w.mu.Unlock()
	w.wake()
	return true
}

// publish delivers events in order. Called only by the writer goroutine, so delivery order is
// commit order.
func (s *Store) publish(events []Event) {
	if len(events) == 0 {
		return
	}
	s.mu.Lock()
	ws := make([]*Watcher, 0, len(s.watchers))
	for w := range s.watchers {
		ws = append(ws, w)
	}
	s.mu.Unlock()
	for _, w := range ws {
		for i := range events {
			if w.matches(events[i].Record.Key) && !w.push(events[i]) {
				s.mu.Lock()
				delete(s.watchers, w)
				s.mu.Unlock()
				break
			}
		}
	}
}
