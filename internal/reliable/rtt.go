package reliable

import "time"

// RTT estimation, RFC 9002 §5. The estimator feeds both loss detection (the
// time threshold, §6.1.2) and the probe timeout (§6.2.1).

const (
	// defaultInitialRTT is kInitialRtt (RFC 9002 §6.2.2): the RTT assumed
	// before the first sample when the caller knows none.
	defaultInitialRTT = 333 * time.Millisecond
	// timerGranularity is kGranularity (RFC 9002 §6.1.2): no loss delay and
	// no PTO variance term is shorter, since timers cannot fire more
	// precisely than the system's timer resolution.
	timerGranularity = time.Millisecond
)

// rttStats is the RTT estimator of RFC 9002 §5: the latest sample, the
// exponentially weighted smoothed RTT and its mean deviation, and the
// minimum seen. Before the first sample, smoothed and variance come from the
// initial RTT (§5.3) and min and latest are zero.
type rttStats struct {
	latest, smoothed, variance, min time.Duration
	hasSample                       bool
}

// newRTTStats returns an estimator that assumes initial until the first
// sample; initial 0 means RFC 9002's 333 ms (§6.2.2). A caller that measured
// the path already (the Noise handshake's round trip) passes that, so the
// first PTO is not a second or more.
func newRTTStats(initial time.Duration) rttStats {
	if initial <= 0 {
		initial = defaultInitialRTT
	}
	return rttStats{smoothed: initial, variance: initial / 2}
}

// update takes an RTT sample (now minus the send time of the largest newly
// acknowledged packet, §5.1) and the ACK Delay the peer reported in that ACK
// frame. A sample of zero or less says nothing (the clock did not advance)
// and is ignored.
func (r *rttStats) update(sample, ackDelay time.Duration) {
	if sample <= 0 {
		return
	}
	r.latest = sample
	if !r.hasSample {
		// §5.3: the first sample replaces the initial assumption outright.
		r.hasSample = true
		r.min = sample
		r.smoothed = sample
		r.variance = sample / 2
		return
	}
	// §5.2: min_rtt ignores ack delay, so a peer's (possibly wrong) report
	// can never lower it.
	r.min = min(r.min, sample)
	// §5.3: the peer may not hold an ACK longer than max_ack_delay, so a
	// larger report is an error or a scheduling hiccup on its side; count
	// only what it promised. (There is no handshake here, so the rule about
	// ignoring ack delay before confirmation does not arise.)
	ackDelay = min(max(ackDelay, 0), MaxAckDelay)
	adjusted := sample
	// §5.3: never subtract the delay below min_rtt; a sample that would go
	// under it means the reported delay is wrong, and using it would make
	// smoothed_rtt underestimate the path.
	if sample >= r.min+ackDelay {
		adjusted = sample - ackDelay
	}
	dev := r.smoothed - adjusted
	if dev < 0 {
		dev = -dev
	}
	r.variance = (3*r.variance + dev) / 4
	r.smoothed = (7*r.smoothed + adjusted) / 8
}

// sample returns smoothed_rtt once there is a sample, else zero.
func (r *rttStats) sample() time.Duration {
	if !r.hasSample {
		return 0
	}
	return r.smoothed
}

// Smoothed is smoothed_rtt (RFC 9002 §5.3).
func (r *rttStats) Smoothed() time.Duration { return r.smoothed }

// Min is min_rtt (§5.2); zero before the first sample.
func (r *rttStats) Min() time.Duration { return r.min }

// Latest is latest_rtt (§5.1); zero before the first sample.
func (r *rttStats) Latest() time.Duration { return r.latest }

// Variance is rttvar, the mean deviation of the samples (§5.3).
func (r *rttStats) Variance() time.Duration { return r.variance }

// pto is the probe timeout before backoff (RFC 9002 §6.2.1):
//
//	smoothed_rtt + max(4·rttvar, kGranularity) + max_ack_delay
//
// The peer may hold the ACK for max_ack_delay before it sends it, so a probe
// sooner than that would be spurious by design. There is one packet number
// space and no handshake, so max_ack_delay always counts.
func (r *rttStats) pto() time.Duration {
	return r.smoothed + max(4*r.variance, timerGranularity) + MaxAckDelay
}
