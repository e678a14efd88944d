package bridge

import (
	"hash/maphash"
	"sync"
	"time"
)

// dedup is a bounded set of recently seen strings: two generations of at most size/2 entries
// each; when the current one fills, the older is dropped. A string is remembered for at least
// size/2 later insertions, enough to catch the echoes of a flood through a mesh, while the
// memory stays bounded (ToolDb's processedIds grows forever).
//
// It keeps a 64-bit hash of each string, not the string: about a sixth of the memory. The hash
// is seeded at random per set, so no one can make two strings collide on purpose; by chance a
// new string is taken for a seen one with probability size/2^64 (below 10^-14 at 65,536).
//
// A set made by newDedupFor also forgets by age: a generation is retired once it is maxAge
// old, so a string is remembered for at least maxAge (unless size/2 insertions come first)
// and forgotten within three times that.
type dedup struct {
	seed     maphash.Seed
	mu       sync.Mutex
	cur, old map[uint64]struct{}
	half     int
	maxAge   time.Duration // zero: no age limit
	born     time.Time     // when cur was started
}

func newDedup(size int) *dedup {
	return &dedup{seed: maphash.MakeSeed(), cur: map[uint64]struct{}{}, old: map[uint64]struct{}{}, half: max(size/2, 1)}
}

func newDedupFor(size int, maxAge time.Duration) *dedup {
	d := newDedup(size)
	d.maxAge, d.born = maxAge, time.Now()
	return d
}

// add inserts s and reports whether it was new.
func (d *dedup) add(s string) bool {
	h := maphash.String(d.seed, s)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.hasLocked(h) {
		return false
	}
	if len(d.cur) >= d.half {
		d.old, d.cur, d.born = d.cur, make(map[uint64]struct{}, d.half), time.Now()
	}
	d.cur[h] = struct{}{}
	return true
}

func (d *dedup) has(s string) bool {
	h := maphash.String(d.seed, s)
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hasLocked(h)
}

// hasLocked reports whether h is in the set, first retiring what is too old.
func (d *dedup) hasLocked(h uint64) bool {
	if d.maxAge > 0 {
		switch age := time.Since(d.born); {
		case age >= 2*d.maxAge:
			d.old, d.cur, d.born = map[uint64]struct{}{}, map[uint64]struct{}{}, time.Now()
		case age >= d.maxAge:
			d.old, d.cur, d.born = d.cur, map[uint64]struct{}{}, time.Now()
		}
	}
	_, a := d.cur[h]
	_, b := d.old[h]
	return a || b
}

// bucket is a token bucket, a pure function of now: rate tokens per second up to burst.
type bucket struct {
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newBucket(rate float64, burst int, now time.Time) bucket {
	return bucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// take removes one token, reporting false if there was none.
func (b *bucket) take(now time.Time) bool {
	b.refill(now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// borrow removes one token even if there is none, and returns how long until the bucket is
// out of debt: the caller waits that long to keep to the rate.
func (b *bucket) borrow(now time.Time) time.Duration {
	b.refill(now)
	b.tokens--
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

func (b *bucket) refill(now time.Time) {
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(b.burst, b.tokens+dt*b.rate)
		b.last = now
	}
}
