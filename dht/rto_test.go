package dht

import (
	"testing"
	"time"
)

func TestRTTEstimatorWaits(t *testing.T) {
	var e rttEstimator
	const limit = time.Second
	if got := e.wait(0, limit); got != firstRequestWait {
		t.Fatalf("no sample yet: wait %v, want %v", got, firstRequestWait)
	}
	if got := e.wait(1, limit); got != limit {
		t.Fatalf("no sample yet, a retry: wait %v, want %v", got, limit)
	}
	for range 20 {
		e.sample(40 * time.Millisecond)
	}
	// A steady 40 ms path: srtt 40 ms, rttvar decays toward 0, so the floor
	// applies, then each retry doubles up to the limit.
	for try, want := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, time.Second} {
		if got := e.wait(try, limit); got != want {
			t.Errorf("try %d: wait %v, want %v", try, got, want)
		}
	}
	// A slow path lifts the wait above the floor.
	for range 20 {
		e.sample(300 * time.Millisecond)
	}
	if got := e.wait(0, 2*time.Second); got < 300*time.Millisecond || got > 600*time.Millisecond {
		t.Errorf("300 ms path: wait %v", got)
	}
	// A limit below the floor wins (tests shorten RequestTimeout).
	if got := e.wait(0, 100*time.Millisecond); got != 100*time.Millisecond {
		t.Errorf("limit 100 ms: wait %v", got)
	}
}

func TestPersistenceWait(t *testing.T) {
	for _, c := range []struct{ rtt, want time.Duration }{
		{time.Millisecond, minPersistenceWait},           // loopback: the floor
		{200 * time.Millisecond, 700 * time.Millisecond}, // a slow path: three round trips and 100 ms
		{900 * time.Millisecond, 2 * time.Second},        // at most two request timeouts
	} {
		if got := persistenceWait(c.rtt, time.Second); got != c.want {
			t.Errorf("rtt %v: wait %v, want %v", c.rtt, got, c.want)
		}
	}
}
