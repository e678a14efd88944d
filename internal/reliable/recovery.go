package reliable

import (
	"fmt"
	"time"
)

// Loss detection and the probe timeout of RFC 9002 §6 (pseudocode §A), for
// the one packet number space this transport has. There is no handshake, so
// everything about the Initial and Handshake spaces, address validation and
// anti-amplification is gone; persistent congestion (§7.6) and the
// congestion window belong to the congestion controller, not to this file.
//
// What this file must get right is what pion/sctp got wrong
// (shared/reference/transport.md §1): every packet, retransmission or not,
// has a new packet number and goes through the same thresholds, so a lost
// retransmission is found like any other loss (§6.1), and a lost tail, with
// nothing sent after it to reveal the hole, is found by the PTO's probes
// (§6.2), which the caller sends whatever the congestion window says.

// Loss detection constants (RFC 9002 §6.1, names from §A.2).
const (
	// lossPacketThreshold is kPacketThreshold (§6.1.1): a packet is lost once
	// a packet sent this many later is acknowledged. TCP's three duplicate
	// ACKs; smaller values mistake reordering for loss.
	lossPacketThreshold = 3
	// lossTimeThresholdNum/Den is kTimeThreshold = 9/8 (§6.1.2): a packet is
	// lost once a later one is acknowledged and it was sent more than 9/8 of
	// an RTT ago; the 1/8 absorbs RTT jitter and reordering in time.
	lossTimeThresholdNum = 9
	lossTimeThresholdDen = 8
	// ptoProbes is how many ack-eliciting packets the caller sends when the
	// PTO fires (§6.2.4 allows one or two). Two, because one probe lost to
	// random loss would cost another, doubled, PTO.
	ptoProbes = 2
)

// History storage sizes, in packets (sentPacket is 128 bytes). When the
// history empties, arrays larger than these are dropped, so that an idle
// connection holds little (the point of this package, doc.go: an idle
// recovery holds under 1 KiB), while a request/response pattern with a
// packet or two in flight keeps its arrays and allocates nothing per
// exchange. A busier pattern that empties the history between bursts pays
// one allocation per burst.
const (
	historyIdleSlots = 2 // the ring; also the smallest one allocated
	resultIdleSlots  = 4 // the array behind ackResult's slices
)

// ackResult is what one ACK frame changed.
type ackResult struct {
	// acked and lost are the packets this ACK newly acknowledged and newly
	// declared lost, in ascending packet number order. Both slices alias
	// the recovery's reused storage: valid until the next onAck or onTimer.
	acked, lost []sentPacket
	// rttSample is the RTT sample the ACK gave (§5.1), zero if none.
	rttSample time.Duration
	// ackedBytes and lostBytes are the bytes in flight those packets held
	// (packets not in flight, §2, count zero).
	ackedBytes, lostBytes int
}

// recovery is the sender's loss detection: RFC 9002 §6 and §A as a pure
// state machine. Time is an input, in nanoseconds on the caller's monotonic
// clock (positive values); it reads no clock, starts nothing and takes no
// locks: the connection that owns it serializes calls.
//
// The caller tells it about every packet it sends (onSent), every ACK frame
// it receives (onAck) and the loss-detection timer's expiry (onTimer), and
// arms one timer at timer() after each of these calls.
type recovery struct {
	rttStats rttStats

	// The sent-packet history (§A.1.1 sent_packets): a ring buffer of
	// packets indexed by packet number − base, for O(1) lookup when an ACK
	// names them. Packets acknowledged or declared lost become tombstones
	// (neither ackEliciting nor inFlight) and leave from the front, so base
	// is always the oldest packet still outstanding. Packets that are
	// neither ack-eliciting nor in flight (ACK-only ones) are not stored:
	// there is nothing to resend or count for them, and since no ACK is
	// owed for them (RFC 9000 §13.2.1) they could keep the history from
	// ever emptying; their numbers are tombstones in the ring, and what
	// their acknowledgement teaches (a new largest acknowledged) onAck
	// still learns.
	ring []sentPacket // power-of-two length; nil when empty and idle
	head int          // ring index of base
	n    int          // slots in use: packet numbers base … base+n−1
	base uint64

	live      int // stored packets not yet acked or lost
	eliciting int // of which ack-eliciting (§A.1.2 ack_eliciting_in_flight, as a count)
	bytes     int // bytes_in_flight (§B.2)

	largestSent uint64
	sentAny     bool
	largestAck  uint64 // §A.3 largest_acked_packet
	ackedAny    bool

	lastElicitingSent int64 // §A.3 time_of_last_ack_eliciting_packet
	lossTime          int64 // §A.3 loss_time: when a packet becomes lost by the time threshold; 0: none
	ptos              int   // §A.3 pto_count

	// buf backs ackResult.acked and .lost and onTimer's lost.
	buf []sentPacket
}

// newRecovery returns the loss detection for a new connection. initialRTT is
// the RTT known before the first ACK (the handshake's), 0 for RFC 9002's
// 333 ms.
func newRecovery(initialRTT time.Duration) *recovery {
	return &recovery{rttStats: newRTTStats(initialRTT)}
}

// awaitingAck reports whether a history slot holds a packet still awaiting
// an ACK; a slot that does not is a tombstone.
func awaitingAck(p *sentPacket) bool { return p.ackEliciting || p.inFlight }

// slot is the history entry of pn, which must lie in base … base+n−1.
func (r *recovery) slot(pn uint64) *sentPacket {
	return &r.ring[(r.head+int(pn-r.base))&(len(r.ring)-1)]
}

// onSent records a packet just sent (§A.5 OnPacketSent); it keeps a copy of
// *p. Call it for every packet, ACK-only ones too: an ACK naming a number
// above the largest passed here is a protocol error. Packet numbers must
// strictly increase: anything else is a bug in the caller, which owns the
// numbering, so it panics.
func (r *recovery) onSent(p *sentPacket) {
	if r.sentAny && p.pn <= r.largestSent {
		panic(fmt.Sprintf("reliable: packet number %d sent after %d", p.pn, r.largestSent))
	}
	r.sentAny, r.largestSent = true, p.pn
	if !awaitingAck(p) {
		return
	}
	if r.n == 0 {
		r.base, r.head = p.pn, 0
	}
	off := int(p.pn - r.base)
	if off >= len(r.ring) {
		r.grow(off + 1)
	}
	mask := len(r.ring) - 1
	// The numbers skipped since the last stored packet went out in packets
	// not stored (ACK-only): tombstones.
	for i := r.n; i < off; i++ {
		s := &r.ring[(r.head+i)&mask]
		s.ackEliciting, s.inFlight = false, false
	}
	r.ring[(r.head+off)&mask] = *p
	r.n = off + 1
	r.live++
	if p.ackEliciting {
		r.eliciting++
		r.lastElicitingSent = p.sentTime
	}
	if p.inFlight {
		r.bytes += p.size
	}
}

// grow makes room for at least need slots, keeping the packets in order.
func (r *recovery) grow(need int) {
	size := max(len(r.ring)*2, historyIdleSlots)
	for size < need {
		size *= 2
	}
	ring := make([]sentPacket, size)
	if r.n > 0 {
		// The used part may wrap: copy it in two pieces, oldest first.
		k := copy(ring, r.ring[r.head:min(r.head+r.n, len(r.ring))])
		copy(ring[k:r.n], r.ring[:r.n-k])
	}
	r.ring, r.head = ring, 0
}

// remove turns an outstanding packet into a tombstone.
func (r *recovery) remove(p *sentPacket) {
	r.live--
	if p.ackEliciting {
		r.eliciting--
	}
	if p.inFlight {
		r.bytes -= p.size
	}
	p.ackEliciting, p.inFlight = false, false
}

// popFront drops tombstones from the front of the history, and when it is
// empty releases a large ring (an idle connection should hold little).
func (r *recovery) popFront() {
	if r.live == 0 {
		r.n, r.head = 0, 0
		if len(r.ring) > historyIdleSlots {
			r.ring = nil
		}
		if cap(r.buf) > resultIdleSlots {
			// The caller may still hold slices of it until its next call;
			// dropping our reference only lets the collector have it then.
			r.buf = nil
		}
		return
	}
	mask := len(r.ring) - 1
	for !awaitingAck(&r.ring[r.head]) {
		r.head = (r.head + 1) & mask
		r.base++
		r.n--
	}
}

// onAck processes one ACK frame received at now (§A.7 OnAckReceived):
// ranges are its ACK ranges, largest first (as Frame.AckRanges holds them),
// and ackDelay its ACK Delay. It acknowledges the packets the ranges newly
// cover, takes an RTT sample if the ACK allows one (§5.1), and declares lost
// what the ACK shows to be lost by the packet or time threshold (§6.1).
//
// An ACK that names a packet number never sent is a protocol violation: the
// error wraps ErrProtocol and nothing changes. Ranges not in descending,
// disjoint order wrap ErrFrame. Acknowledging packets already acknowledged,
// or already declared lost (a spurious loss; they are gone from the history
// and reported in neither list again), is normal and not an error.
func (r *recovery) onAck(now int64, ranges []AckRange, ackDelay time.Duration) (ackResult, error) {
	if err := r.checkAck(ranges); err != nil {
		return ackResult{}, err
	}
	largest := ranges[0].Largest
	grew := !r.ackedAny || largest > r.largestAck
	if grew {
		r.largestAck, r.ackedAny = largest, true
	}

	// §A.7 DetectAndRemoveAckedPackets: walk the ranges oldest first, so
	// the acked list comes out in ascending order.
	var res ackResult
	r.buf = r.buf[:0]
	anyEliciting := false
	if r.n > 0 {
		top := r.base + uint64(r.n) - 1
		for i := len(ranges) - 1; i >= 0; i-- {
			lo, hi := max(ranges[i].Smallest, r.base), min(ranges[i].Largest, top)
			for pn := lo; pn <= hi; pn++ {
				p := r.slot(pn)
				if !awaitingAck(p) {
					continue
				}
				r.buf = append(r.buf, *p)
				anyEliciting = anyEliciting || p.ackEliciting
				if p.inFlight {
					res.ackedBytes += p.size
				}
				r.remove(p)
			}
		}
	}
	if len(r.buf) == 0 && !grew {
		// §A.7: an ACK that acknowledges nothing new changes nothing else
		// (it may be a late or reordered copy). A new largest acknowledged
		// is something new even if it names only ACK-only packets, which
		// the history does not keep: in RFC 9002 they would be newly
		// acknowledged, and the holes the ACK reveals below them must be
		// found now, not by a PTO.
		return ackResult{}, nil
	}

	// §5.1: a sample only if the largest acknowledged is newly acknowledged
	// (its send time is what the ACK answers) and something ack-eliciting is
	// (else the peer may have held the ACK without bound, §13.2.1 of RFC
	// 9000, and the sample would measure that).
	if len(r.buf) > 0 && anyEliciting {
		if newest := &r.buf[len(r.buf)-1]; newest.pn == largest {
			if sample := time.Duration(now - newest.sentTime); sample > 0 {
				r.rttStats.update(sample, ackDelay)
				res.rttSample = sample
			}
		}
	}
	// §6.2.1 (§A.7): the peer is alive and answering, so the backoff
	// restarts.
	r.ptos = 0

	nacked := len(r.buf)
	res.lostBytes = r.detectLoss(now)
	res.acked = r.buf[:nacked:nacked]
	if len(r.buf) > nacked {
		res.lost = r.buf[nacked:]
	}
	r.popFront()
	return res, nil
}

// checkAck rejects ranges that are malformed or name a packet never sent.
// Packet numbers are dense (doc.go: each packet takes the next), so every
// number up to the largest sent was sent, stored or not.
func (r *recovery) checkAck(ranges []AckRange) error {
	if len(ranges) == 0 {
		return fmt.Errorf("reliable: ACK without ranges: %w", ErrFrame)
	}
	for i, rg := range ranges {
		if rg.Smallest > rg.Largest || (i > 0 && rg.Largest >= ranges[i-1].Smallest) {
			return fmt.Errorf("reliable: ACK ranges not descending and disjoint at %d: %w", i, ErrFrame)
		}
	}
	if !r.sentAny {
		return fmt.Errorf("reliable: ACK of packet %d before any was sent: %w", ranges[0].Largest, ErrProtocol)
	}
	if ranges[0].Largest > r.largestSent {
		return fmt.Errorf("reliable: ACK of packet %d, largest sent %d: %w", ranges[0].Largest, r.largestSent, ErrProtocol)
	}
	return nil
}

// lossDelay is the time threshold (§6.1.2):
// max(kTimeThreshold · max(smoothed_rtt, latest_rtt), kGranularity).
// latest_rtt is in it so that a sudden RTT increase does not make every
// packet sent before it look lost.
func (r *recovery) lossDelay() time.Duration {
	rtt := max(r.rttStats.smoothed, r.rttStats.latest)
	return max(rtt*lossTimeThresholdNum/lossTimeThresholdDen, timerGranularity)
}

// detectLoss declares lost every outstanding packet sent before the largest
// acknowledged that is past either threshold, appending them to r.buf, and
// sets lossTime to when the next of the others will be (§A.10
// DetectAndRemoveLostPackets). It returns the in-flight bytes declared lost.
//
// Each packet, retransmission or not, has its own number and send time, so
// a lost retransmission is caught here like any first transmission: the
// hole pion/sctp had (transport.md §1.2, nSent > 1) cannot exist.
//
// The scan starts at base, the oldest outstanding packet; everything more
// than lossPacketThreshold below the largest acknowledged is resolved on
// every call, so it stays short.
func (r *recovery) detectLoss(now int64) (lostBytes int) {
	r.lossTime = 0
	if !r.ackedAny || r.n == 0 || r.largestAck < r.base {
		return 0
	}
	delay := int64(r.lossDelay())
	lostSendTime := now - delay
	end := min(r.largestAck, r.base+uint64(r.n)-1)
	for pn := r.base; pn <= end; pn++ {
		p := r.slot(pn)
		if !awaitingAck(p) {
			continue
		}
		if p.sentTime <= lostSendTime || r.largestAck >= pn+lossPacketThreshold {
			r.buf = append(r.buf, *p)
			if p.inFlight {
				lostBytes += p.size
			}
			r.remove(p)
			continue
		}
		if t := p.sentTime + delay; r.lossTime == 0 || t < r.lossTime {
			r.lossTime = t
		}
	}
	return lostBytes
}

// timer is the deadline of the loss-detection timer in ns, 0 if none is
// armed (§A.8 SetLossDetectionTimer): the time-threshold deadline of a
// packet that a later ACK already made suspect, else the PTO, armed only
// while something ack-eliciting is in flight (with nothing in flight there
// is nothing to probe for; keeping an idle connection alive is the
// session's business).
func (r *recovery) timer() int64 {
	if r.lossTime != 0 {
		return r.lossTime
	}
	if r.eliciting == 0 {
		return 0
	}
	return r.lastElicitingSent + int64(r.ptoPeriod())
}

// ptoPeriod is pto() · 2^pto_count (§6.2.1: each expiry without an ACK
// doubles it), saturating rather than overflowing on a dead path.
func (r *recovery) ptoPeriod() time.Duration {
	d := r.rttStats.pto()
	for i := 0; i < r.ptos && d < time.Duration(1<<62); i++ {
		d *= 2
	}
	return d
}

// onTimer handles the loss-detection timer firing at now (§A.9
// OnLossDetectionTimeout). It does nothing before timer() (the caller's one
// timer per connection may fire for other reasons). If the time-threshold
// deadline passed, it returns the packets now lost and no probes. Otherwise
// the PTO fired: the backoff doubles and the caller must send probes
// ack-eliciting packets at once, whatever the congestion window says
// (§6.2.4, §7.5): new data if it has any, else what oldestUnacked returns,
// else a PING. The returned slice is valid until the next onAck or onTimer.
func (r *recovery) onTimer(now int64) (lost []sentPacket, probes int) {
	t := r.timer()
	if t == 0 || now < t {
		return nil, 0
	}
	if r.lossTime != 0 {
		r.buf = r.buf[:0]
		r.detectLoss(now)
		if len(r.buf) > 0 {
			lost = r.buf
		}
		r.popFront()
		return lost, 0
	}
	// §6.2.4: a PTO declares nothing lost; the probes' ACK will, by the
	// thresholds, or show the packets arrived after all.
	r.ptos++
	return nil, ptoProbes
}

// bytesInFlight is the sum of the sizes of the in-flight packets not yet
// acknowledged or declared lost (§B.2 bytes_in_flight).
func (r *recovery) bytesInFlight() int { return r.bytes }

// oldestUnacked returns the oldest outstanding ack-eliciting packet: what a
// PTO probe resends when there is no new data (§6.2.4), so that the probe
// carries something worth its trip. false if none is outstanding.
func (r *recovery) oldestUnacked() (sentPacket, bool) {
	if r.eliciting == 0 {
		return sentPacket{}, false
	}
	for i := range r.n {
		if p := r.slot(r.base + uint64(i)); p.ackEliciting {
			return *p, true
		}
	}
	return sentPacket{}, false // unreachable while the counts are right
}

// ptoCount is how many PTOs fired since the last ACK that acknowledged
// something new (§A.3 pto_count).
func (r *recovery) ptoCount() int { return r.ptos }

// rtt is the RTT estimator.
func (r *recovery) rtt() *rttStats { return &r.rttStats }

// largestAcked is the largest packet number the peer has acknowledged;
// false before the first ACK.
func (r *recovery) largestAcked() (uint64, bool) { return r.largestAck, r.ackedAny }
