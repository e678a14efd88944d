package dht

import (
	"net/netip"
	"testing"
	"time"
)

// TestReachVerdict: what the probe records say about an address, as
// checkPersistence reads them. Only records of that address, decided since
// the join began, count; one arrival is enough, unreachable needs every
// record's window to have ended.
func TestReachVerdict(t *testing.T) {
	pub := netip.MustParseAddrPort("203.0.113.100:4000")
	other := netip.MustParseAddrPort("203.0.113.100:4001")
	t0 := time.Unix(1000, 0)
	began := t0.Add(time.Second)
	now := began.Add(time.Second)
	waiting := func(at netip.AddrPort, until time.Time) probeRecord { return probeRecord{at: at, until: until} }
	arrived := func(at netip.AddrPort, when time.Time) probeRecord {
		return probeRecord{at: at, until: when.Add(time.Second), arrived: when}
	}
	for _, c := range []struct {
		name     string
		recs     []probeRecord
		want     reachability
		wantNext time.Time
	}{
		{"no records", nil, reachUnknown, time.Time{}},
		{"timed out during the join", []probeRecord{waiting(pub, now.Add(-time.Millisecond))}, reachUnreachable, time.Time{}},
		{"still waiting", []probeRecord{waiting(pub, now.Add(300*time.Millisecond))}, reachOpen, now.Add(300 * time.Millisecond)},
		{"arrived during the join", []probeRecord{arrived(pub, began)}, reachReachable, time.Time{}},
		{"timed out before the join", []probeRecord{waiting(pub, began.Add(-time.Millisecond))}, reachUnknown, time.Time{}},
		{"arrived before the join", []probeRecord{arrived(pub, t0)}, reachUnknown, time.Time{}},
		{"another address", []probeRecord{waiting(other, now.Add(-time.Millisecond)), arrived(other, now)}, reachUnknown, time.Time{}},
		{"one lost packet waits for the other probe", []probeRecord{
			waiting(pub, now.Add(-time.Millisecond)), waiting(pub, now.Add(time.Second)), waiting(pub, now.Add(200*time.Millisecond)),
		}, reachOpen, now.Add(200 * time.Millisecond)},
		{"an arrival outweighs a timeout", []probeRecord{waiting(pub, now.Add(-time.Millisecond)), arrived(pub, now)}, reachReachable, time.Time{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, next := reachVerdict(c.recs, pub, began, now)
			if v != c.want || !next.Equal(c.wantNext) {
				t.Fatalf("verdict %d next %v, want %d next %v", v, next, c.want, c.wantNext)
			}
		})
	}
}
