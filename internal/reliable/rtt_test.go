package reliable

import (
	"testing"
	"time"
)

func TestRTTInitial(t *testing.T) {
	// RFC 9002 §6.2.2: kInitialRtt 333 ms, rttvar = kInitialRtt/2 (§5.3).
	r := newRTTStats(0)
	if r.Smoothed() != 333*time.Millisecond || r.Variance() != 166500*time.Microsecond {
		t.Fatalf("initial smoothed %v variance %v, want 333ms 166.5ms", r.Smoothed(), r.Variance())
	}
	if r.Min() != 0 || r.Latest() != 0 {
		t.Fatalf("min %v latest %v before any sample, want 0", r.Min(), r.Latest())
	}
	// 333 + 4·166.5 + 25 (max_ack_delay counts: one space, no handshake).
	if got, want := r.pto(), 1024*time.Millisecond; got != want {
		t.Fatalf("initial pto %v, want %v", got, want)
	}
	r = newRTTStats(40 * time.Millisecond)
	if r.Smoothed() != 40*time.Millisecond || r.Variance() != 20*time.Millisecond {
		t.Fatalf("initial 40ms: smoothed %v variance %v", r.Smoothed(), r.Variance())
	}
}

// TestRTTEstimator walks RFC 9002 §5.3's formulas through samples worked by
// hand.
func TestRTTEstimator(t *testing.T) {
	msf := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	steps := []struct {
		name                   string
		sample, ackDelay       time.Duration
		smoothed, variance, mn time.Duration
	}{
		// First sample: taken as is, ack delay ignored; rttvar = sample/2.
		{"first", msf(100), msf(10), msf(100), msf(50), msf(100)},
		// adjusted = 120−10 = 110 (120 ≥ min 100 + 10);
		// rttvar = ¾·50 + ¼·|100−110| = 40; smoothed = ⅞·100 + ⅛·110 = 101.25.
		{"ack delay subtracted", msf(120), msf(10), msf(101.25), msf(40), msf(100)},
		// 105 < min 100 + 10: the delay is not subtracted below min_rtt.
		// rttvar = ¾·40 + ¼·3.75 = 30.9375; smoothed = ⅞·101.25 + ⅛·105.
		{"not below min", msf(105), msf(10), msf(101.71875), msf(30.9375), msf(100)},
		// ack delay 100 ms is capped at max_ack_delay 25: adjusted 175.
		// rttvar = ¾·30.9375 + ¼·73.28125 = 41.5234375;
		// smoothed = ⅞·101.71875 + ⅛·175 = 110.87890625.
		{"ack delay capped", msf(200), msf(100), msf(110.87890625), msf(41.5234375), msf(100)},
		// min_rtt follows the raw sample; no delay to subtract.
		// rttvar = ¾·41.5234375 + ¼·20.87890625 = 36.3623046875;
		// smoothed = ⅞·110.87890625 + ⅛·90 = 108.269042968...
		{"new min", msf(90), 0, 108269042, msf(36.3623046875), msf(90)},
	}
	r := newRTTStats(0)
	for _, s := range steps {
		r.update(s.sample, s.ackDelay)
		if r.Smoothed() != s.smoothed || r.Variance() != s.variance || r.Min() != s.mn || r.Latest() != s.sample {
			t.Fatalf("%s: smoothed %v variance %v min %v latest %v; want %v %v %v %v",
				s.name, r.Smoothed(), r.Variance(), r.Min(), r.Latest(), s.smoothed, s.variance, s.mn, s.sample)
		}
	}
	// A sample of 0 (the clock did not move) or less teaches nothing.
	before := r
	r.update(0, 0)
	r.update(-time.Millisecond, 0)
	if r != before {
		t.Fatalf("non-positive samples changed the estimator: %+v → %+v", before, r)
	}
}

func TestRTTPTOGranularity(t *testing.T) {
	// A steady path drives rttvar to 0; the PTO still allows kGranularity
	// for it (§6.2.1) and max_ack_delay for the peer's delayed ACK.
	r := newRTTStats(0)
	for range 200 {
		r.update(10*time.Millisecond, 0)
	}
	if r.Variance() != 0 {
		t.Fatalf("variance %v after 200 equal samples, want 0", r.Variance())
	}
	if got, want := r.pto(), 10*time.Millisecond+time.Millisecond+MaxAckDelay; got != want {
		t.Fatalf("pto %v, want %v", got, want)
	}
}
