package portmap

import "time"

// schedule is the client's timing state machine: when to ask the gateway
// for mappings, renew them, check that the gateway still holds them, and
// give them up as expired. It is pure: events and the time they happened go
// in (mapped, failed, checked, lost), the next step and its time come out.
// The client's loop owns one and does the I/O.
type schedule struct {
	// mapped: the mappings exist, granted at obtained for lifetime (zero
	// lifetime: permanent, as some UPnP routers grant only that).
	mapped   bool
	obtained time.Time
	lifetime time.Duration
	// lastCheck is when the gateway last confirmed the mappings.
	lastCheck time.Time
	// failures counts attempts (mapping or renewing) that failed since the
	// last success; lastFailure is when the last one did.
	failures    int
	lastFailure time.Time
}

// step is what the client does next.
type step int

const (
	// stepMap: find a protocol the gateway speaks and make the mappings
	// (the first time, after a failure, after the gateway lost them).
	stepMap step = iota
	// stepRenew: ask again for the mappings held, before they expire.
	stepRenew
	// stepCheck: ask the gateway whether it still holds them (a PCP or
	// NAT-PMP epoch, a UPnP entry lookup), to notice a restart early.
	stepCheck
	// stepExpire: the mappings ran out without a renewal; drop them.
	stepExpire
)

func (s step) String() string {
	return [...]string{"map", "renew", "check", "expire"}[s]
}

// timing holds the schedule's intervals.
type timing struct {
	// check is the time between checks; zero means none.
	check time.Duration
	// retryMin and retryMax bound the backoff after failures: retryMin
	// after the first, doubling up to retryMax.
	retryMin, retryMax time.Duration
}

// backoff is the wait after n consecutive failures (n >= 1).
func (t timing) backoff(n int) time.Duration {
	d := t.retryMin
	for i := 1; i < n && d < t.retryMax; i++ {
		d *= 2
	}
	return min(d, t.retryMax)
}

// next returns the next step and when it is due (a zero time means now).
//
// Without mappings: map now, or after the backoff of the failures so far.
// With mappings: renew at half the lifetime (RFC 6886 §3.3, RFC 6887
// §11.2.1 ask for a renewal well before expiry; half leaves time for
// several retries), retrying a failed renewal after the backoff but at
// least every eighth of the lifetime; check every t.check; expire at the
// end of the lifetime. When two steps fall due together, expiry wins over
// renewal and renewal over a check (a renewal answers the check's
// question too).
func (s *schedule) next(t timing) (step, time.Time) {
	if !s.mapped {
		if s.failures == 0 {
			return stepMap, time.Time{}
		}
		return stepMap, s.lastFailure.Add(t.backoff(s.failures))
	}
	best, at := step(-1), time.Time{}
	consider := func(st step, when time.Time) {
		if best < 0 || when.Before(at) {
			best, at = st, when
		}
	}
	if s.lifetime > 0 {
		expires := s.obtained.Add(s.lifetime)
		consider(stepExpire, expires)
		renew := s.obtained.Add(s.lifetime / 2)
		if s.failures > 0 {
			retry := s.lastFailure.Add(min(t.backoff(s.failures), max(s.lifetime/8, time.Second)))
			if retry.After(renew) {
				renew = retry
			}
		}
		if renew.Before(expires) {
			consider(stepRenew, renew)
		}
	} else if s.failures > 0 {
		// A permanent mapping is never renewed, but a failed check drops
		// the protocol session and a re-map is due after the backoff.
		consider(stepRenew, s.lastFailure.Add(t.backoff(s.failures)))
	}
	if t.check > 0 {
		consider(stepCheck, s.lastCheck.Add(t.check))
	}
	return best, at
}

// mappedAt records mappings granted (or renewed) at now for lifetime.
func (s *schedule) mappedAt(now time.Time, lifetime time.Duration) {
	s.mapped, s.obtained, s.lifetime = true, now, lifetime
	s.lastCheck = now
	s.failures, s.lastFailure = 0, time.Time{}
}

// failedAt records a failed map or renewal at now. The mappings, if any,
// stay valid until they expire.
func (s *schedule) failedAt(now time.Time) {
	s.failures++
	s.lastFailure = now
}

// checkedAt records that the gateway confirmed the mappings at now.
func (s *schedule) checkedAt(now time.Time) { s.lastCheck = now }

// lost records that the gateway no longer holds the mappings (it said so,
// or it restarted): map again at once.
func (s *schedule) lost() {
	*s = schedule{}
}

// expired records that the mappings ran out. The failures that led there
// keep counting, so the next attempt waits its backoff.
func (s *schedule) expired() {
	s.mapped, s.obtained, s.lifetime = false, time.Time{}, 0
}
