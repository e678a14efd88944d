// Package ondemand runs work on a goroutine that exists only while there is
// work: an idle connection of the swarm holds no goroutine for its control
// stream, which a goroutine blocked in a read would cost about 8 KiB of stack
// for. secure uses it for streams whose messages go to a handler, swarm for
// its control messages. It imports nothing of ours.
package ondemand

import "sync"

// Worker calls Run on a goroutine of its own after every Kick: one is started
// when none is running, and a running one calls Run again if it was kicked
// meanwhile, so every Kick is followed by a call of Run that begins after it.
// Run should do all the work there is and return; the goroutine ends when no
// Kick came during the last call. Run is never called twice at once.
//
// The zero value with Run set is ready to use. Run must not be changed after
// the first Kick.
type Worker struct {
	Run func()

	mu      sync.Mutex // guards the fields below
	running bool
	again   bool          // kicked while running: call Run once more
	idle    chan struct{} // made by Wait while running; closed when the goroutine ends
}

// Kick makes sure Run is called after this point. It never blocks, so it can
// be called with locks held.
func (w *Worker) Kick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.running {
		w.again = true
		return
	}
	w.running = true
	go w.loop()
}

func (w *Worker) loop() {
	for {
		w.Run()
		w.mu.Lock()
		if !w.again {
			w.running = false
			if w.idle != nil {
				close(w.idle)
				w.idle = nil
			}
			w.mu.Unlock()
			return
		}
		w.again = false
		w.mu.Unlock()
	}
}

// Wait returns once no goroutine of the worker is running. A Kick after Wait
// starts one again.
func (w *Worker) Wait() {
	w.mu.Lock()
	if !w.running {
		w.mu.Unlock()
		return
	}
	if w.idle == nil {
		w.idle = make(chan struct{})
	}
	ch := w.idle
	w.mu.Unlock()
	<-ch
}
