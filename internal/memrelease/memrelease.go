// Package memrelease gives the operating system back the memory that a burst
// of work freed, once the process has gone quiet.
//
// Setting up a connection allocates far more than the connection keeps: ICE
// agents and their goroutines, handshake state, STUN and DHT messages. A swarm
// server taking 60 connections in ten seconds allocates about 150 KB for each
// and keeps 15 KB. Go's runtime keeps the pages that garbage leaves free, for
// the next burst, and returns them slowly: its background scavenger keeps what
// the heap goal may need, and an idle process lowers that goal only at its
// next GC, which the runtime forces every two minutes. Until then the peak
// shows in the process's RSS (measured: 116–131 KiB per connection 13 s after
// such a burst, 69–75 after a GC that returns the free pages).
//
// V8, under Hyperswarm, has a "memory reducer" for the same reason: once a
// process's allocation goes quiet, it collects and shrinks the heap. This is
// ours. Note marks a piece of bursty work done (a connection set up, an ICE
// agent closed); Quiet after the last one, the process runs two GCs and
// returns its free pages (release), at most once per MinInterval. A GC costs
// CPU in proportion to the live heap, milliseconds for a node's.
package memrelease

import (
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

const (
	// Quiet is how long after the last Note the memory is returned: long
	// enough that a burst of connections, which come a few per second,
	// counts as one.
	Quiet = 2 * time.Second
	// MinInterval is the least time between two releases, so that work
	// that goes quiet just long enough, again and again, does not pay for a
	// full GC each time: at most one every ten seconds, a few milliseconds
	// of CPU for a node's heap.
	MinInterval = 10 * time.Second
)

// process is the process's releaser: FreeOSMemory acts on the whole process.
var process = &releaser{release: release}

// release collects twice and returns the free pages to the OS. A sync.Pool
// keeps what it holds through one collection (its victim cache) and drops
// it at the next, so one GC would leave the pools' contents in place: the
// stream transport's 16 KiB data blocks (internal/reliable), which a burst
// of connection setups fills its pool with. Measured on a swarm server
// holding 60 connections: RSS 16.3 MB after one collection, 16.0 after the
// second.
func release() {
	runtime.GC()
	debug.FreeOSMemory() // a GC, then the scavenge
}

// Note records that a piece of bursty work has just ended: the process
// returns its free memory once nothing else has been noted for Quiet.
func Note() { process.note() }

// releaser runs release Quiet after the last note, at most once per
// MinInterval.
type releaser struct {
	release func()

	mu    sync.Mutex
	timer *time.Timer // armed while a release is due
	last  time.Time   // the last release
}

func (r *releaser) note() {
	r.mu.Lock()
	defer r.mu.Unlock()
	wait := max(Quiet, time.Until(r.last.Add(MinInterval)))
	if r.timer == nil {
		r.timer = time.AfterFunc(wait, r.fire)
		return
	}
	r.timer.Reset(wait)
}

func (r *releaser) fire() {
	r.release()
	r.mu.Lock()
	r.last = time.Now()
	r.mu.Unlock()
}
