package secure

import (
	"testing"
	"time"
)

// testLive is the liveness both tests drive: a keepalive after 1 s without
// sending, dead after 5 s without receiving.
var testLive = liveness{interval: time.Second, timeout: 5 * time.Second}

// msAt is d milliseconds into the tests' clock.
func msAt(d int) time.Time { return time.Unix(1000, 0).Add(time.Duration(d) * time.Millisecond) }

func TestLiveness(t *testing.T) {
	for i, s := range []struct {
		now, lastSend, lastRecv int
		ping, dead              bool
	}{
		{now: 500, lastSend: 0, lastRecv: 0},
		{now: 1000, lastSend: 0, lastRecv: 900, ping: true}, // we have been quiet: tell the peer
		{now: 1500, lastSend: 1000, lastRecv: 0},            // quiet peer, but we sent recently
		{now: 2500, lastSend: 2400, lastRecv: 2450},
		{now: 4999, lastSend: 3000, lastRecv: 0, ping: true},
		{now: 5000, lastSend: 4999, lastRecv: 0, dead: true},
		{now: 9000, lastSend: 8999, lastRecv: 3999, dead: true},
	} {
		ping, dead := testLive.tick(msAt(s.now), msAt(s.lastSend), msAt(s.lastRecv))
		if ping != s.ping || dead != s.dead {
			t.Fatalf("step %d: ping=%v dead=%v, want %v %v", i, ping, dead, s.ping, s.dead)
		}
	}
}

// The keepalive timer wakes when something is due, not on a fixed period:
// an idle session's keepalives are an interval apart.
func TestLivenessWait(t *testing.T) {
	for i, s := range []struct {
		now, lastSend, lastRecv int
		want                    time.Duration
	}{
		{now: 0, lastSend: 0, lastRecv: 0, want: time.Second},                     // just sent
		{now: 300, lastSend: 0, lastRecv: 200, want: 700 * time.Millisecond},      // the keepalive is next
		{now: 4500, lastSend: 4400, lastRecv: 0, want: 500 * time.Millisecond},    // the dead deadline is next
		{now: 1000, lastSend: 0, lastRecv: 0, want: minWait},                      // overdue: soon, not at once
		{now: 9000, lastSend: 8999, lastRecv: 8000, want: 999 * time.Millisecond}, // quiet peer, we just sent
	} {
		if got := testLive.wait(msAt(s.now), msAt(s.lastSend), msAt(s.lastRecv)); got != s.want {
			t.Fatalf("step %d: wait %v, want %v", i, got, s.want)
		}
	}
}
