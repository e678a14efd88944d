package secure

import (
	"sync"
	"time"
)

// deadline is a settable read deadline whose expiry is a channel, so a blocked Read can
// select on it. Setting a new deadline affects Reads already waiting (net.Conn's rule):
// the channel is only replaced once it has fired.
type deadline struct {
	mu    sync.Mutex // guards everything below
	ch    chan struct{}
	fired bool
	timer *time.Timer
	gen   uint64 // invalidates timers of earlier deadlines
}

func newDeadline() *deadline { return &deadline{ch: make(chan struct{})} }

// done returns a channel that is closed when the current deadline passes.
func (d *deadline) done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

// set sets the deadline; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.fired {
		d.ch, d.fired = make(chan struct{}), false
	}
	if t.IsZero() {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		d.fireLocked()
		return
	}
	gen := d.gen
	d.timer = time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen {
			d.fireLocked()
		}
	})
}

func (d *deadline) fireLocked() {
	if !d.fired {
		close(d.ch)
		d.fired = true
	}
}

// stop releases the timer.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}
