package portmap

import (
	"testing"
	"time"
)

func TestSchedule(t *testing.T) {
	t0 := time.Unix(10000, 0)
	tm := timing{check: 2 * time.Minute, retryMin: 10 * time.Second, retryMax: 30 * time.Minute}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	expect := func(s *schedule, wantStep step, wantAt time.Time) {
		t.Helper()
		st, when := s.next(tm)
		if st != wantStep || !when.Equal(wantAt) {
			t.Fatalf("next = %s at %v, want %s at %v", st, when.Sub(t0), wantStep, wantAt.Sub(t0))
		}
	}
	var s schedule
	expect(&s, stepMap, time.Time{}) // at once

	// No gateway service: back off 10 s, 20 s, 40 s, ... up to 30 min.
	s.failedAt(at(0))
	expect(&s, stepMap, at(10*time.Second))
	s.failedAt(at(10 * time.Second))
	expect(&s, stepMap, at(30*time.Second))
	for range 20 {
		s.failedAt(at(time.Hour))
	}
	expect(&s, stepMap, at(time.Hour+30*time.Minute))

	// Mapped for 2 h: checks every 2 min, renewal at 1 h.
	s.mappedAt(at(0), 2*time.Hour)
	expect(&s, stepCheck, at(2*time.Minute))
	s.checkedAt(at(2 * time.Minute))
	expect(&s, stepCheck, at(4*time.Minute))
	s.lastCheck = at(59 * time.Minute)
	expect(&s, stepRenew, at(time.Hour)) // renewal before the check at 61 min
	// A failed renewal is retried after the backoff, but at least every
	// eighth of the lifetime, and never past expiry.
	s.failedAt(at(time.Hour))
	s.checkedAt(at(time.Hour))
	expect(&s, stepRenew, at(time.Hour+10*time.Second))
	for range 10 {
		s.failedAt(at(time.Hour + 10*time.Second))
	}
	expect(&s, stepCheck, at(time.Hour+2*time.Minute))
	s.checkedAt(at(time.Hour + 15*time.Minute))
	expect(&s, stepRenew, at(time.Hour+10*time.Second+15*time.Minute)) // lifetime/8 = 15 min < backoff
	s.failedAt(at(time.Hour + 59*time.Minute))
	s.checkedAt(at(time.Hour + 59*time.Minute))
	expect(&s, stepExpire, at(2*time.Hour)) // the retry would fall after expiry
	s.expired()
	if s.mapped {
		t.Fatal("expired schedule still mapped")
	}
	expect(&s, stepMap, at(time.Hour+59*time.Minute+tm.backoff(s.failures)))

	// A restart noticed by a check: map again at once.
	s.mappedAt(at(0), 2*time.Hour)
	s.lost()
	expect(&s, stepMap, time.Time{})

	// Short lifetimes (tests): renew at half, retries no faster than 1 s.
	s.mappedAt(at(0), 4*time.Second)
	expect(&s, stepRenew, at(2*time.Second))
	s.failedAt(at(2 * time.Second))
	s.checkedAt(at(2 * time.Second))
	expect(&s, stepRenew, at(3*time.Second))

	// A permanent mapping (UPnP lease 0): checks only; after a failed
	// check, a re-map after the backoff.
	s.mappedAt(at(0), 0)
	expect(&s, stepCheck, at(2*time.Minute))
	s.checkedAt(at(2 * time.Minute))
	s.failedAt(at(2 * time.Minute))
	expect(&s, stepRenew, at(2*time.Minute+10*time.Second))

	// Without checks nothing but renewals and expiry are due.
	s.mappedAt(at(0), time.Hour)
	if st, when := s.next(timing{retryMin: time.Second, retryMax: time.Minute}); st != stepRenew || !when.Equal(at(30*time.Minute)) {
		t.Fatalf("no checks: next = %s at %v", st, when.Sub(t0))
	}
}
