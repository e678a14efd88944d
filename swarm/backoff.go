package swarm

import "time"

// Retry schedule defaults (Hyperswarm lib/retry-timer.js and peer-info.js,
// reference/hyperswarm.md §1.5): a peer that failed or dropped is retried
// after about 1 s, then 5 s, then 15 s, and then dropped; explicit peers
// keep being retried about every 10 minutes. Each delay gets a random extra
// of up to the jitter so that a crowd that lost a peer at once does not dial
// it again in lockstep.
const (
	DefaultRetryShort    = 1 * time.Second
	DefaultRetryMedium   = 5 * time.Second
	DefaultRetryLong     = 15 * time.Second
	DefaultRetryExplicit = 10 * time.Minute
)

// MaxRetries is the number of retries after which a peer that is neither
// explicit nor found again by a lookup is dropped.
const MaxRetries = 3

// Backoff is the retry schedule. The zero value is the default schedule.
type Backoff struct {
	// Short, Medium and Long are the delays before the first, second and
	// third retry. Zero means DefaultRetryShort, DefaultRetryMedium,
	// DefaultRetryLong.
	Short, Medium, Long time.Duration
	// Explicit is the delay between retries of an explicit peer after the
	// third. Zero means DefaultRetryExplicit.
	Explicit time.Duration
}

func (b Backoff) withDefaults() Backoff {
	if b.Short <= 0 {
		b.Short = DefaultRetryShort
	}
	if b.Medium <= 0 {
		b.Medium = DefaultRetryMedium
	}
	if b.Long <= 0 {
		b.Long = DefaultRetryLong
	}
	if b.Explicit <= 0 {
		b.Explicit = DefaultRetryExplicit
	}
	return b
}

// Delay returns the wait before retry number retry (1 for the first retry
// after a failure or a drop) and whether the peer is retried at all. rnd is
// a uniform random number in [0, 1) that picks the jitter: up to half of
// Short (1 s + 0..500 ms) and a fifth of the others (5 s + 0..1 s,
// 15 s + 0..3 s, 10 min + 0..2 min; Hyperswarm adds 0..2 s to its 15 s).
// It is pure: tests pass rnd.
func (b Backoff) Delay(retry int, explicit bool, rnd float64) (time.Duration, bool) {
	b = b.withDefaults()
	var base, jitter time.Duration
	switch {
	case retry <= 1:
		base, jitter = b.Short, b.Short/2
	case retry == 2:
		base, jitter = b.Medium, b.Medium/5
	case retry == 3:
		base, jitter = b.Long, b.Long/5
	case explicit:
		base, jitter = b.Explicit, b.Explicit/5
	default:
		return 0, false
	}
	return base + time.Duration(rnd*float64(jitter)), true
}
