package reliable

import "time"

// The receiver's side of acknowledgement, RFC 9000 §13.2: which packet
// numbers arrived (as ACK ranges) and when an ACK frame is owed.

const (
	// maxAckRanges bounds the ranges kept and sent in one ACK frame. A peer
	// that skips every other packet number would otherwise decide how much
	// memory we hold; RFC 9000 §13.2.3 lets a receiver discard old ranges,
	// at worst costing the sender a spurious retransmission, provided it
	// never accepts a packet in a discarded range again: floor below.
	maxAckRanges = 32
	// defaultAckEvery is how many ack-eliciting packets may go unacknowledged
	// before an ACK is sent at once (RFC 9000 §13.2.2: at least every
	// second one, so the sender's clock keeps ticking).
	defaultAckEvery = 2
	// ackDecimateAfter, ackDecimatedEvery, ackDecimationRTTShare: ACK
	// decimation, as Chromium's QUIC does it. Once this many ack-eliciting
	// packets have arrived (a bulk transfer, past its first round trips),
	// an ACK is owed after every ackDecimatedEvery-th one, or a quarter of
	// the path's minimum RTT after the first unacknowledged one, whichever
	// comes first (and never later than MaxAckDelay). Each ACK is a packet
	// of its own for a receiver with nothing to send back, and costs every
	// hop and both ends as much as a data packet: acknowledging every
	// second one made a third of the packets a bulk transfer puts on a
	// path. BBR needs no more (it measures delivery over whole round
	// trips); a packet out of order is still acknowledged at once, so loss
	// detection is as quick; and the quarter RTT bounds what the hold adds
	// to the RTT samples a sender takes its minimum from.
	ackDecimateAfter      = 100
	ackDecimatedEvery     = 10
	ackDecimationRTTShare = 4
	// ackRangeRepeats: once every range below the newest has gone out in
	// this many ACK frames, and the newest holds lossPacketThreshold
	// numbers, they are dropped. RFC 9000 §13.2.3 says to stop tracking
	// ranges once an ACK frame carrying them is acknowledged (§13.2.4 shows
	// how), but a sent packet does not record the ACK frame it carried
	// (sentPacket), so we count instead: all three lost is 8·10⁻⁶ at 2 %
	// loss, and the price then is a spurious retransmission. Without this,
	// every loss leaves a gap that stays in every ACK frame until 32 more
	// pile up.
	ackRangeRepeats = 3
	// ackRangesIdleCap: after such a drop a range array larger than this is
	// replaced by a small one, so an idle connection holds little.
	ackRangesIdleCap = 4
)

// ackTracker records the packet numbers received and decides when an ACK
// frame is owed (RFC 9000 §13.2.1–2). Pure: times are inputs, ns on the
// caller's monotonic clock (positive values). The zero value is ready to use.
type ackTracker struct {
	// ackEvery: an ACK is owed at once after this many ack-eliciting packets
	// have arrived since the last ACK sent. Zero means defaultAckEvery.
	ackEvery int
	// minRTT is the path's minimum RTT in ns as the caller knows it (0 if
	// unknown: no decimation); received counts ack-eliciting arrivals up
	// to ackDecimateAfter.
	minRTT   int64
	received int

	rs          []AckRange // received packet numbers: descending, disjoint, non-adjacent, ≤ maxAckRanges
	floor       uint64     // numbers below it are no longer tracked (dropped ranges): never accepted again (§13.2.3)
	largestTime int64      // arrival of rs[0].Largest, for the ACK Delay (§13.2.5)

	pending      int   // ack-eliciting packets received since the last ACK sent
	pendingSince int64 // arrival of the first of them
	pendingDelay int64 // how long the first of them may wait for its ACK
	immediate    bool  // an ACK is owed now...
	immediateAt  int64 // ...since the arrival that made it so

	lowerReports int // ACK frames sent since the ranges below rs[0] last changed
}

// onReceived records that packet pn arrived at now; ackEliciting says whether
// it carried a frame other than ACK, PADDING or CONNECTION_CLOSE. It returns
// false for a packet already received or older than anything tracked (the
// caller then ignores it; the Noise layer drops replays already, so this is
// only a late duplicate or a packet so late its sender has given it up).
func (a *ackTracker) onReceived(now int64, pn uint64, ackEliciting bool) (fresh bool) {
	if pn < a.floor {
		return false
	}
	newLargest := len(a.rs) == 0 || pn > a.rs[0].Largest
	outOfOrder, ok := a.insert(pn)
	if !ok {
		return false
	}
	if newLargest {
		a.largestTime = now
	}
	// §13.2.1: only ack-eliciting packets make an ACK owed; the others are
	// reported in the next ACK sent for another reason.
	if !ackEliciting {
		return true
	}
	a.pending++
	every, delay := a.policy()
	if a.pending == 1 {
		a.pendingSince, a.pendingDelay = now, delay
	}
	// §13.2.1: acknowledge at once an ack-eliciting packet that arrives out
	// of order (it reveals a gap below it, or fills one), so the sender
	// learns of a loss, or that there was none, without the delay; and
	// §13.2.2: every ackEvery-th one, so the ACK clock runs.
	if !a.immediate && (outOfOrder || a.pending >= every) {
		a.immediate, a.immediateAt = true, now
	}
	return true
}

// policy returns how many ack-eliciting packets make an ACK owed at once, and
// how long the first unacknowledged one may wait for it (decimating once a
// transfer is under way, see ackDecimateAfter) for the one that just
// arrived, and counts it.
func (a *ackTracker) policy() (every int, delay int64) {
	if a.ackEvery > 0 {
		return a.ackEvery, int64(MaxAckDelay)
	}
	if a.received < ackDecimateAfter || a.minRTT <= 0 {
		a.received = min(a.received+1, ackDecimateAfter)
		return defaultAckEvery, int64(MaxAckDelay)
	}
	return ackDecimatedEvery, min(int64(MaxAckDelay), a.minRTT/ackDecimationRTTShare)
}

// insert adds pn to the ranges. outOfOrder reports that pn was not the next
// number after the largest received: it left a gap below it or filled one.
// ok is false if pn was received already, or would be older than every
// range when the ranges are full.
func (a *ackTracker) insert(pn uint64) (outOfOrder, ok bool) {
	if len(a.rs) == 0 {
		a.rs = append(a.rs, AckRange{Smallest: pn, Largest: pn})
		return pn > a.floor, true // numbering starts at floor (0): anything above left a gap
	}
	top := &a.rs[0]
	switch {
	case pn == top.Largest+1:
		top.Largest = pn // the common case: in order
		return false, true
	case pn > top.Largest+1:
		a.insertAt(0, AckRange{Smallest: pn, Largest: pn})
		return true, true
	}
	// pn ≤ the largest received: a duplicate or a late arrival filling a gap.
	for i := range a.rs {
		r := &a.rs[i]
		if pn >= r.Smallest {
			if pn <= r.Largest {
				return false, false
			}
			// In the gap between a.rs[i] and a.rs[i-1] (i ≥ 1: pn ≤ rs[0].Largest).
			a.lowerReports = 0
			above, below := pn+1 == a.rs[i-1].Smallest, pn-1 == r.Largest
			switch {
			case above && below:
				a.rs[i-1].Smallest = r.Smallest
				a.rs = append(a.rs[:i], a.rs[i+1:]...)
			case above:
				a.rs[i-1].Smallest = pn
			case below:
				r.Largest = pn
			default:
				a.insertAt(i, AckRange{Smallest: pn, Largest: pn})
			}
			return true, true
		}
	}
	// Below every range.
	last := &a.rs[len(a.rs)-1]
	if pn+1 == last.Smallest {
		last.Smallest = pn
	} else {
		if len(a.rs) == maxAckRanges {
			return false, false // it would be the oldest range, the one dropped
		}
		a.rs = append(a.rs, AckRange{Smallest: pn, Largest: pn})
	}
	a.lowerReports = 0
	return true, true
}

// insertAt inserts r as a.rs[i], dropping the oldest range first if the
// ranges are full (§13.2.3: old ranges are the least useful to the sender,
// which has long declared those gaps lost).
func (a *ackTracker) insertAt(i int, r AckRange) {
	if n := len(a.rs); n == maxAckRanges {
		a.floor = a.rs[n-1].Largest + 1
		a.rs = a.rs[:n-1]
		i = min(i, n-1)
	}
	a.rs = append(a.rs, AckRange{})
	copy(a.rs[i+1:], a.rs[i:])
	a.rs[i] = r
	a.lowerReports = 0
}

// deadline is when an ACK frame must be sent, in ns: the arrival that made
// one owed at once, or the first unacknowledged ack-eliciting arrival plus
// MaxAckDelay (§13.2.1; less when decimating); 0 if no ACK is owed.
func (a *ackTracker) deadline() int64 {
	switch {
	case a.immediate:
		return max(a.immediateAt, 1) // never 0, which means none
	case a.pending > 0:
		return a.pendingSince + a.pendingDelay
	}
	return 0
}

// ranges is what an ACK frame sent now reports: the received packet
// numbers, largest first, at most maxAckRanges. The slice is reused: valid
// until the next onReceived or onAckSent.
func (a *ackTracker) ranges() []AckRange { return a.rs }

// ackDelay is the ACK Delay of an ACK frame sent at now (§13.2.5): how long
// since the largest packet number it reports arrived.
func (a *ackTracker) ackDelay(now int64) time.Duration {
	if len(a.rs) == 0 || now < a.largestTime {
		return 0
	}
	return time.Duration(now - a.largestTime)
}

// onAckSent records that an ACK frame with ranges() went out: nothing is
// owed until the next ack-eliciting arrival. Ranges below the newest that
// have now gone out ackRangeRepeats times are dropped (see ackRangeRepeats).
func (a *ackTracker) onAckSent() {
	a.pending, a.immediate = 0, false
	if len(a.rs) <= 1 {
		return
	}
	if a.lowerReports++; a.lowerReports < ackRangeRepeats {
		return
	}
	// Keep tracking the gap below the newest range until every number in
	// it is lossPacketThreshold below the largest: until then the sender
	// may still expect it (RFC 9002 §6.1.1), and a late arrival there is
	// worth acknowledging rather than ignoring.
	if top := a.rs[0]; top.Largest-top.Smallest+1 < lossPacketThreshold {
		return
	}
	a.lowerReports = 0
	a.floor = a.rs[0].Smallest
	if cap(a.rs) > ackRangesIdleCap {
		a.rs = append(make([]AckRange, 0, ackRangesIdleCap), a.rs[0])
	} else {
		a.rs = a.rs[:1]
	}
}
