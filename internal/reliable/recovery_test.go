package reliable

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"
)

const msNs = int64(time.Millisecond) // one millisecond on the int64 ns clock

// sentData is an ack-eliciting, in-flight packet of 1200 bytes carrying stream
// bytes [1000·pn, +1000).
func sentData(pn uint64, sent int64) *sentPacket {
	p := &sentPacket{pn: pn, sentTime: sent, size: 1200, ackEliciting: true, inFlight: true, nchunks: 1}
	p.chunks[0] = chunk{kind: chunkStream, length: 1000, offset: 1000 * pn}
	return p
}

// sentACKOnly is a packet carrying only an ACK frame: neither ack-eliciting nor
// in flight.
func sentACKOnly(pn uint64, sent int64) *sentPacket {
	return &sentPacket{pn: pn, sentTime: sent, size: 40}
}

func ackRng(s, l uint64) AckRange { return AckRange{Smallest: s, Largest: l} }

func pnsOf(ps []sentPacket) []uint64 {
	out := []uint64{}
	for _, p := range ps {
		out = append(out, p.pn)
	}
	return out
}

// mustOnAck calls onAck and checks which packets it acked and lost.
func mustOnAck(t *testing.T, r *recovery, now int64, ranges []AckRange, delay time.Duration, acked, lost []uint64) ackResult {
	t.Helper()
	res, err := r.onAck(now, ranges, delay)
	if err != nil {
		t.Fatalf("onAck(%v): %v", ranges, err)
	}
	if got := pnsOf(res.acked); !slices.Equal(got, acked) {
		t.Fatalf("onAck(%v) acked %v, want %v", ranges, got, acked)
	}
	if got := pnsOf(res.lost); !slices.Equal(got, lost) {
		t.Fatalf("onAck(%v) lost %v, want %v", ranges, got, lost)
	}
	return res
}

func TestRecoveryAckBasics(t *testing.T) {
	r := newRecovery(0)
	for pn := range uint64(4) {
		r.onSent(sentData(pn, int64(pn)*msNs))
	}
	if r.bytesInFlight() != 4800 {
		t.Fatalf("bytesInFlight %d, want 4800", r.bytesInFlight())
	}
	if _, ok := r.largestAcked(); ok {
		t.Fatal("largestAcked before any ACK")
	}
	res := mustOnAck(t, r, 50*msNs, []AckRange{ackRng(0, 3)}, 5*time.Millisecond, []uint64{0, 1, 2, 3}, []uint64{})
	if res.ackedBytes != 4800 || res.lostBytes != 0 || r.bytesInFlight() != 0 {
		t.Fatalf("ackedBytes %d lostBytes %d inflight %d", res.ackedBytes, res.lostBytes, r.bytesInFlight())
	}
	// The sample is now − send time of the largest acked (§5.1), 47 ms.
	if res.rttSample != 47*time.Millisecond || r.rtt().Latest() != 47*time.Millisecond {
		t.Fatalf("rttSample %v latest %v, want 47ms", res.rttSample, r.rtt().Latest())
	}
	if la, ok := r.largestAcked(); !ok || la != 3 {
		t.Fatalf("largestAcked %d %v", la, ok)
	}
	if r.timer() != 0 {
		t.Fatalf("timer %d armed with nothing in flight", r.timer())
	}
	// The same ACK again: nothing new, no sample, no error.
	res = mustOnAck(t, r, 60*msNs, []AckRange{ackRng(0, 3)}, 0, []uint64{}, []uint64{})
	if res.rttSample != 0 {
		t.Fatalf("duplicate ACK gave a sample %v", res.rttSample)
	}
}

func TestRecoveryPacketThreshold(t *testing.T) {
	r := newRecovery(0)
	for pn := range uint64(6) {
		r.onSent(sentData(pn, int64(pn)*msNs))
	}
	// 3 acked: 0 is three below it, lost (§6.1.1); 1 and 2 are not yet,
	// and the time threshold (9/8 of 47 ms) is far off.
	res := mustOnAck(t, r, 50*msNs, []AckRange{ackRng(3, 3)}, 0, []uint64{3}, []uint64{0})
	if res.lostBytes != 1200 || r.bytesInFlight() != 4*1200 {
		t.Fatalf("lostBytes %d inflight %d", res.lostBytes, r.bytesInFlight())
	}
	// 1 becomes lost by the time threshold at its send time + 9/8·47 ms.
	if got, want := r.timer(), 1*msNs+int64(47*time.Millisecond*9/8); got != want {
		t.Fatalf("timer %d, want loss time %d", got, want)
	}
	mustOnAck(t, r, 51*msNs, []AckRange{ackRng(3, 4)}, 0, []uint64{4}, []uint64{1})
	mustOnAck(t, r, 52*msNs, []AckRange{ackRng(3, 5)}, 0, []uint64{5}, []uint64{2})
	if r.bytesInFlight() != 0 || r.timer() != 0 {
		t.Fatalf("inflight %d timer %d after all resolved", r.bytesInFlight(), r.timer())
	}
}

func TestRecoveryTimeThreshold(t *testing.T) {
	r := newRecovery(0)
	r.onSent(sentData(0, 0))
	r.onSent(sentData(1, 1*msNs))
	// 1 acked at 51 ms: sample 50 ms, loss delay 9/8·50 = 56.25 ms. 0 is
	// only one below, and sent 51 ms ago: not lost yet.
	mustOnAck(t, r, 51*msNs, []AckRange{ackRng(1, 1)}, 0, []uint64{1}, []uint64{})
	lossAt := int64(56250 * time.Microsecond)
	if r.timer() != lossAt {
		t.Fatalf("timer %d, want %d (time threshold)", r.timer(), lossAt)
	}
	if lost, probes := r.onTimer(lossAt - 1); lost != nil || probes != 0 {
		t.Fatalf("early onTimer: lost %v probes %d", pnsOf(lost), probes)
	}
	lost, probes := r.onTimer(lossAt)
	if !slices.Equal(pnsOf(lost), []uint64{0}) || probes != 0 {
		t.Fatalf("onTimer: lost %v probes %d, want [0] 0", pnsOf(lost), probes)
	}
	if r.timer() != 0 || r.bytesInFlight() != 0 || r.ptoCount() != 0 {
		t.Fatalf("after: timer %d inflight %d ptoCount %d", r.timer(), r.bytesInFlight(), r.ptoCount())
	}
}

// TestRecoveryLostRetransmission is the first hole of transport.md §1: a
// retransmission that is itself lost. Here it is a packet like any other, so
// the packet threshold finds it without any timer.
func TestRecoveryLostRetransmission(t *testing.T) {
	const rtt = 20 * msNs
	r := newRecovery(0)
	now := int64(0)
	for pn := range uint64(5) { // 0 is lost on the path
		r.onSent(sentData(pn, now))
		now += msNs
	}
	now = 4*msNs + rtt
	res := mustOnAck(t, r, now, []AckRange{ackRng(1, 4)}, 0, []uint64{1, 2, 3, 4}, []uint64{0})
	// Resend 0's stream bytes in a new packet, 5, which is lost too, and
	// keep sending.
	retx := sentData(5, now)
	retx.chunks[0] = res.lost[0].chunks[0]
	r.onSent(retx)
	for pn := uint64(6); pn < 10; pn++ {
		now += msNs
		r.onSent(sentData(pn, now))
	}
	now += rtt
	res = mustOnAck(t, r, now, []AckRange{ackRng(6, 9), ackRng(1, 4)}, 0, []uint64{6, 7, 8, 9}, []uint64{5})
	if res.lost[0].chunks[0] != (chunk{kind: chunkStream, length: 1000, offset: 0}) {
		t.Fatalf("lost retransmission carried %+v, want stream bytes [0, 1000)", res.lost[0].chunks[0])
	}
	if r.ptoCount() != 0 {
		t.Fatalf("ptoCount %d: a timer was needed", r.ptoCount())
	}
}

// TestRecoveryLostTail is the second hole: the last packets are lost and
// nothing after them reveals it. The PTO fires one pto() after the last
// ack-eliciting packet, its probes are acknowledged, and that ACK shows the
// tail lost.
func TestRecoveryLostTail(t *testing.T) {
	const rtt = 20 * msNs
	r := newRecovery(0)
	for pn := range uint64(5) {
		r.onSent(sentData(pn, int64(pn)*msNs))
	}
	now := 2*msNs + rtt
	mustOnAck(t, r, now, []AckRange{ackRng(0, 2)}, 0, []uint64{0, 1, 2}, []uint64{})
	// 3 and 4 are lost; with no later ACK the time threshold never arms,
	// the PTO does.
	pto := r.rtt().pto()
	if got, want := r.timer(), 4*msNs+int64(pto); got != want {
		t.Fatalf("timer %d, want last send + pto %d", got, want)
	}
	// One 20 ms sample: 20 + 4·10 + 25 ms, not the initial 1024 ms.
	if pto != 85*time.Millisecond {
		t.Fatalf("pto %v, want 85ms", pto)
	}
	now = r.timer()
	lost, probes := r.onTimer(now)
	if lost != nil || probes != ptoProbes || r.ptoCount() != 1 {
		t.Fatalf("PTO: lost %v probes %d ptoCount %d", pnsOf(lost), probes, r.ptoCount())
	}
	// No new data: the probes resend the oldest outstanding packet.
	old, ok := r.oldestUnacked()
	if !ok || old.pn != 3 {
		t.Fatalf("oldestUnacked %d %v, want 3", old.pn, ok)
	}
	for pn := uint64(5); pn < 5+ptoProbes; pn++ {
		p := sentData(pn, now)
		p.chunks = old.chunks
		r.onSent(p)
	}
	now += rtt
	res := mustOnAck(t, r, now, []AckRange{ackRng(5, 6), ackRng(0, 2)}, 0, []uint64{5, 6}, []uint64{3, 4})
	if res.lostBytes != 2400 || r.bytesInFlight() != 0 || r.ptoCount() != 0 || r.timer() != 0 {
		t.Fatalf("lostBytes %d inflight %d ptoCount %d timer %d", res.lostBytes, r.bytesInFlight(), r.ptoCount(), r.timer())
	}
}

func TestRecoveryPTOBackoff(t *testing.T) {
	r := newRecovery(0)
	r.onSent(sentData(0, 0))
	mustOnAck(t, r, 30*msNs, []AckRange{ackRng(0, 0)}, 0, []uint64{0}, []uint64{})
	pto := int64(r.rtt().pto())
	last := 31 * msNs
	pn := uint64(1)
	r.onSent(sentData(pn, last))
	// Every expiry without an ACK doubles the period (§6.2.1), counted from
	// the last ack-eliciting packet, which is the latest probe.
	for i := range 5 {
		want := last + pto<<i
		if r.timer() != want {
			t.Fatalf("expiry %d: timer %d, want %d", i, r.timer(), want)
		}
		if _, probes := r.onTimer(want); probes != ptoProbes {
			t.Fatalf("expiry %d: %d probes", i, probes)
		}
		if r.ptoCount() != i+1 {
			t.Fatalf("ptoCount %d, want %d", r.ptoCount(), i+1)
		}
		last = want
		pn++
		r.onSent(sentData(pn, last))
	}
	// An ACK acknowledging something new resets the backoff.
	now := last + 30*msNs
	mustOnAck(t, r, now, []AckRange{ackRng(pn, pn)}, 0, []uint64{pn}, []uint64{1, 2, 3, 4, 5})
	if r.ptoCount() != 0 {
		t.Fatalf("ptoCount %d after ACK", r.ptoCount())
	}
	r.onSent(sentData(pn+1, now))
	if got, want := r.timer(), now+int64(r.rtt().pto()); got != want {
		t.Fatalf("timer after reset %d, want %d", got, want)
	}
}

func TestRecoveryPTOSaturates(t *testing.T) {
	r := newRecovery(0)
	r.onSent(sentData(0, msNs))
	for range 100 {
		r.onTimer(r.timer())
	}
	if r.timer() <= 0 || r.ptoPeriod() <= 0 {
		t.Fatalf("after 100 PTOs: timer %d period %v", r.timer(), r.ptoPeriod())
	}
}

func TestRecoveryAckErrors(t *testing.T) {
	r := newRecovery(0)
	if _, err := r.onAck(msNs, []AckRange{ackRng(0, 0)}, 0); !errors.Is(err, ErrProtocol) {
		t.Fatalf("ACK before anything sent: %v, want ErrProtocol", err)
	}
	for pn := range uint64(3) {
		r.onSent(sentData(pn, 0))
	}
	for _, ranges := range [][]AckRange{{ackRng(3, 3)}, {ackRng(5, 9), ackRng(0, 2)}} {
		if _, err := r.onAck(msNs, ranges, 0); !errors.Is(err, ErrProtocol) {
			t.Fatalf("ACK %v of a packet never sent: %v, want ErrProtocol", ranges, err)
		}
	}
	for _, ranges := range [][]AckRange{nil, {ackRng(2, 1)}, {ackRng(0, 1), ackRng(2, 2)}, {ackRng(1, 2), ackRng(0, 1)}} {
		if _, err := r.onAck(msNs, ranges, 0); !errors.Is(err, ErrFrame) {
			t.Fatalf("malformed ranges %v: %v, want ErrFrame", ranges, err)
		}
	}
	// Nothing changed.
	if _, ok := r.largestAcked(); ok || r.bytesInFlight() != 3600 {
		t.Fatalf("a rejected ACK changed state: inflight %d", r.bytesInFlight())
	}
}

func TestRecoverySpuriousLoss(t *testing.T) {
	r := newRecovery(0)
	for pn := range uint64(5) {
		r.onSent(sentData(pn, int64(pn)*msNs))
	}
	// 0 and 1 are declared lost by the packet threshold, but were only
	// reordered; 2 and 3 wait.
	mustOnAck(t, r, 30*msNs, []AckRange{ackRng(4, 4)}, 0, []uint64{4}, []uint64{0, 1})
	// Their ACK arrives: they are gone from the history, so only 2 and 3
	// are new, and nothing is reported twice.
	mustOnAck(t, r, 31*msNs, []AckRange{ackRng(0, 4)}, 0, []uint64{2, 3}, []uint64{})
	if r.bytesInFlight() != 0 {
		t.Fatalf("inflight %d", r.bytesInFlight())
	}
}

func TestRecoveryRTTSampleRules(t *testing.T) {
	// §5.1: a sample only when the largest acknowledged is newly acked and
	// something ack-eliciting is newly acked.
	r := newRecovery(0)
	r.onSent(sentData(0, 0))
	r.onSent(sentData(1, msNs))
	r.onSent(sentACKOnly(2, 2*msNs))
	if res := mustOnAck(t, r, 10*msNs, []AckRange{ackRng(1, 1)}, 0, []uint64{1}, []uint64{}); res.rttSample != 9*time.Millisecond {
		t.Fatalf("sample %v, want 9ms", res.rttSample)
	}
	// 0 newly acked, but the largest (1) was acked already: no sample.
	if res := mustOnAck(t, r, 20*msNs, []AckRange{ackRng(0, 1)}, 0, []uint64{0}, []uint64{}); res.rttSample != 0 {
		t.Fatalf("largest not newly acked, yet sample %v", res.rttSample)
	}
	// Largest is an ACK-only packet: no sample.
	r.onSent(sentData(3, 30*msNs))
	r.onSent(sentACKOnly(4, 31*msNs))
	if res := mustOnAck(t, r, 40*msNs, []AckRange{ackRng(0, 4)}, 0, []uint64{3}, []uint64{}); res.rttSample != 0 {
		t.Fatalf("largest ACK-only, yet sample %v", res.rttSample)
	}
	// Largest is an in-flight padding packet (a path MTU probe), and an
	// ack-eliciting one is acked with it: a sample, from the probe.
	r.onSent(sentData(5, 50*msNs))
	r.onSent(&sentPacket{pn: 6, sentTime: 51 * msNs, size: 1400, inFlight: true})
	if res := mustOnAck(t, r, 61*msNs, []AckRange{ackRng(0, 6)}, 0, []uint64{5, 6}, []uint64{}); res.rttSample != 10*time.Millisecond {
		t.Fatalf("sample %v, want 10ms", res.rttSample)
	}
	// Only non-ack-eliciting packets newly acked: no sample.
	r.onSent(&sentPacket{pn: 7, sentTime: 70 * msNs, size: 1400, inFlight: true})
	if res := mustOnAck(t, r, 80*msNs, []AckRange{ackRng(0, 7)}, 0, []uint64{7}, []uint64{}); res.rttSample != 0 {
		t.Fatalf("nothing ack-eliciting acked, yet sample %v", res.rttSample)
	}
}

func TestRecoveryNoPTOWithoutAckEliciting(t *testing.T) {
	r := newRecovery(0)
	r.onSent(sentACKOnly(0, 0))
	if r.timer() != 0 || r.bytesInFlight() != 0 {
		t.Fatalf("ACK-only packet: timer %d inflight %d", r.timer(), r.bytesInFlight())
	}
	// A padding-only probe is in flight but elicits no ACK on its own.
	r.onSent(&sentPacket{pn: 1, sentTime: 0, size: 1400, inFlight: true})
	if r.timer() != 0 || r.bytesInFlight() != 1400 {
		t.Fatalf("padding packet: timer %d inflight %d", r.timer(), r.bytesInFlight())
	}
	if _, ok := r.oldestUnacked(); ok {
		t.Fatal("oldestUnacked returned a padding-only packet")
	}
	if lost, probes := r.onTimer(time.Hour.Nanoseconds()); lost != nil || probes != 0 {
		t.Fatalf("onTimer with none armed: %v %d", lost, probes)
	}
	r.onSent(sentData(2, msNs))
	if old, ok := r.oldestUnacked(); !ok || old.pn != 2 {
		t.Fatalf("oldestUnacked %d %v, want 2", old.pn, ok)
	}
}

func TestRecoveryACKOnlyGaps(t *testing.T) {
	// ACK-only packets are not stored; their numbers are tombstones between
	// stored ones, and ACKs naming them are fine.
	r := newRecovery(0)
	r.onSent(sentData(0, 0))
	r.onSent(sentACKOnly(1, 0))
	r.onSent(sentACKOnly(2, 0))
	r.onSent(sentData(3, 0))
	mustOnAck(t, r, 10*msNs, []AckRange{ackRng(1, 2)}, 0, []uint64{}, []uint64{})
	mustOnAck(t, r, 11*msNs, []AckRange{ackRng(0, 3)}, 0, []uint64{0, 3}, []uint64{})
	if r.n != 0 || r.live != 0 {
		t.Fatalf("history n %d live %d, want empty", r.n, r.live)
	}
}

// TestRecoveryLossRevealedByACKOnly: the ACK names only ACK-only packets,
// which the history does not keep, sent after a lost data packet. It
// acknowledges nothing the history holds, but its largest acknowledged
// reveals the loss (in RFC 9002 those packets would be newly acknowledged).
func TestRecoveryLossRevealedByACKOnly(t *testing.T) {
	r := newRecovery(0)
	r.onSent(sentData(0, 0))
	r.onSent(sentData(1, 0))
	r.onSent(sentData(2, 0))
	for pn := uint64(3); pn < 8; pn++ {
		r.onSent(sentACKOnly(pn, msNs))
	}
	r.onTimer(r.timer()) // a PTO, to see the ACK reset the backoff
	res := mustOnAck(t, r, 20*msNs, []AckRange{ackRng(4, 7), ackRng(2, 2)}, 0, []uint64{2}, []uint64{0, 1})
	if res.lostBytes != 2400 || r.ptoCount() != 0 {
		t.Fatalf("lostBytes %d ptoCount %d", res.lostBytes, r.ptoCount())
	}
	r.onSent(sentData(8, 20*msNs))
	r.onSent(sentData(9, 20*msNs))
	r.onSent(sentData(10, 20*msNs))
	r.onSent(sentACKOnly(11, 20*msNs))
	r.onSent(sentACKOnly(12, 20*msNs))
	r.onSent(sentACKOnly(13, 20*msNs))
	res = mustOnAck(t, r, 30*msNs, []AckRange{ackRng(11, 13), ackRng(4, 7), ackRng(2, 2)}, 0, []uint64{}, []uint64{8, 9, 10})
	if res.rttSample != 0 || res.lostBytes != 3600 || r.bytesInFlight() != 0 {
		t.Fatalf("rttSample %v lostBytes %d inflight %d", res.rttSample, res.lostBytes, r.bytesInFlight())
	}
}

func TestRecoveryPanicsOnReusedNumber(t *testing.T) {
	for _, pn := range []uint64{4, 3} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("onSent(%d) after 4 did not panic", pn)
				}
			}()
			r := newRecovery(0)
			r.onSent(sentData(4, 0))
			r.onSent(sentData(pn, 0))
		}()
	}
}

// TestRecoveryRingWrapAndGrow slides a window through the ring so that it
// wraps, then grows it while wrapped.
func TestRecoveryRingWrapAndGrow(t *testing.T) {
	r := newRecovery(0)
	pn := uint64(0)
	for range 3 { // fill 3 slots of 4, ack 2: head moves
		r.onSent(sentData(pn, 0))
		pn++
	}
	mustOnAck(t, r, msNs, []AckRange{ackRng(0, 1)}, 0, []uint64{0, 1}, []uint64{})
	for range 3 { // wraps around the 4-slot ring
		r.onSent(sentData(pn, 0))
		pn++
	}
	if len(r.ring) != 4 || r.head == 0 {
		t.Fatalf("ring %d head %d: not wrapped", len(r.ring), r.head)
	}
	for range 10 { // grows while wrapped
		r.onSent(sentData(pn, 0))
		pn++
	}
	want := []uint64{}
	for i := uint64(2); i < pn; i++ {
		want = append(want, i)
	}
	mustOnAck(t, r, 2*msNs, []AckRange{ackRng(0, pn-1)}, 0, want, []uint64{})
}

// idleBytes is what a recovery holds: itself and its arrays.
func (r *recovery) idleBytes() int {
	return int(unsafe.Sizeof(*r)) + (cap(r.ring)+cap(r.buf))*int(unsafe.Sizeof(sentPacket{}))
}

func TestRecoveryReleasesHistory(t *testing.T) {
	r := newRecovery(0)
	for pn := range uint64(1000) {
		r.onSent(sentData(pn, 0))
	}
	if len(r.ring) < 1000 {
		t.Fatalf("ring %d", len(r.ring))
	}
	all := make([]uint64, 1000)
	for i := range all {
		all[i] = uint64(i)
	}
	mustOnAck(t, r, 10*msNs, []AckRange{ackRng(0, 999)}, 0, all, []uint64{})
	if r.ring != nil || r.buf != nil {
		t.Fatalf("after all acked: ring cap %d buf cap %d, want released", cap(r.ring), cap(r.buf))
	}
	if b := r.idleBytes(); b >= 1024 {
		t.Fatalf("idle recovery holds %d bytes", b)
	}
	t.Logf("idle recovery: %d bytes (struct %d)", r.idleBytes(), unsafe.Sizeof(*r))
	// A small working set survives emptying (no allocation per exchange),
	// and still stays under 1 KiB.
	r.onSent(sentData(1000, 20*msNs))
	r.onSent(sentData(1001, 20*msNs))
	mustOnAck(t, r, 30*msNs, []AckRange{ackRng(0, 1001)}, 0, []uint64{1000, 1001}, []uint64{})
	if r.ring == nil || r.buf == nil || r.idleBytes() >= 1024 {
		t.Fatalf("small history: ring cap %d buf cap %d, %d bytes", cap(r.ring), cap(r.buf), r.idleBytes())
	}
	t.Logf("idle recovery after a small exchange: %d bytes", r.idleBytes())
}

func TestRecoveryAllocs(t *testing.T) {
	r := newRecovery(0)
	ranges := make([]AckRange, 1)
	pn := uint64(0)
	now := int64(0)
	step := func() {
		// One packet sent, the one 32 earlier acknowledged: a steady window.
		now += 10_000
		r.onSent(sentData(pn, now))
		if pn >= 32 {
			ranges[0] = ackRng(0, pn-32)
			if _, err := r.onAck(now, ranges, 0); err != nil {
				t.Fatal(err)
			}
		}
		pn++
	}
	for range 200 {
		step()
	}
	if a := testing.AllocsPerRun(1000, step); a != 0 {
		t.Fatalf("%v allocations per packet", a)
	}
}

func BenchmarkRecoverySendAck(b *testing.B) {
	for _, bc := range []struct {
		name   string
		window uint64 // packets in flight
		every  uint64 // packets per ACK
	}{{"window32/ack2", 32, 2}, {"window1024/ack2", 1024, 2}, {"window1024/ack16", 1024, 16}} {
		b.Run(bc.name, func(b *testing.B) {
			r := newRecovery(0)
			ranges := make([]AckRange, 1)
			now := int64(0)
			pn := uint64(0)
			b.ReportAllocs()
			for b.Loop() {
				now += 1000
				r.onSent(sentData(pn, now))
				if pn >= bc.window && pn%bc.every == 0 {
					ranges[0] = ackRng(0, pn-bc.window)
					if _, err := r.onAck(now, ranges, 0); err != nil {
						b.Fatal(err)
					}
				}
				pn++
			}
		})
	}
}

// TestRecoveryRandomized runs a sender (recovery) and a receiver
// (ackTracker) over a simulated path with random loss in both directions
// and reordering, and checks the accounting: nothing acknowledged that the
// receiver did not get, nothing both acknowledged and lost, every packet
// finally one or the other, every byte delivered, and the history empty.
func TestRecoveryRandomized(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	for _, tc := range []struct {
		loss   float64
		jitter int64 // ns of random extra delay: reordering
		seed   uint64
	}{
		{0, 0, 1}, {0.02, 0, 2}, {0.02, 5 * msNs, 3}, {0.1, 10 * msNs, 4}, {0.3, 20 * msNs, 5}, {0.05, 30 * msNs, 6},
	} {
		simulateRecovery(t, tc.loss, tc.jitter, tc.seed)
	}
}

type simRecoveryPacket struct {
	at        int64 // arrival
	pn        uint64
	eliciting bool
	unit      int // data unit carried, −1: none
	ranges    []AckRange
	ackDelay  time.Duration
}

// simulateRecovery sends 3000 units of data through a recovery and an
// ackTracker over a path with the given loss (both ways) and jitter, and
// checks the accounting described at TestRecoveryRandomized.
func simulateRecovery(t *testing.T, loss float64, jitter int64, seed uint64) {
	t.Helper()
	const (
		units  = 3000
		window = 40
		delay  = 10 * msNs // one way
		gap    = msNs / 4  // between sends
	)
	rng := rand.New(rand.NewPCG(seed, 99))
	var (
		rec      = newRecovery(0)
		tr       ackTracker
		now      int64
		toRecv   []simRecoveryPacket // data path
		toSend   []simRecoveryPacket // ACK path
		nextPN   uint64
		nextUnit int
		retx     []int // units to resend
		unitDone = make([]bool, units)
		unitGot  = make([]bool, units)
		pnUnit   = map[uint64]int{}
		tracked  = map[uint64]bool{} // stored in the history: ack-eliciting
		received = map[uint64]bool{}
		state    = map[uint64]string{} // "acked", "lost"
		sent     int
		spurious int
		ptos     int
		lastSend int64
	)
	path := func(q *[]simRecoveryPacket, p simRecoveryPacket) {
		if rng.Float64() < loss {
			return
		}
		p.at = now + delay
		if jitter > 0 {
			p.at += rng.Int64N(jitter)
		}
		*q = append(*q, p)
	}
	send := func(unit int, eliciting bool) {
		pn := nextPN
		nextPN++
		sent++
		var p *sentPacket
		switch {
		case unit >= 0:
			p = sentData(pn, now)
			p.chunks[0].offset = uint64(unit)
			pnUnit[pn] = unit
		case eliciting:
			p = &sentPacket{pn: pn, sentTime: now, size: 30, ackEliciting: true, inFlight: true, nchunks: 1}
			p.chunks[0].kind = chunkPing
		default:
			p = sentACKOnly(pn, now)
		}
		rec.onSent(p)
		tracked[pn] = eliciting
		path(&toRecv, simRecoveryPacket{pn: pn, eliciting: eliciting, unit: unit})
		lastSend = now
	}
	nextUnitToSend := func() int {
		for len(retx) > 0 {
			u := retx[0]
			retx = retx[1:]
			if !unitDone[u] {
				return u
			}
		}
		if nextUnit < units {
			nextUnit++
			return nextUnit - 1
		}
		return -1
	}
	account := func(acked, lost []sentPacket) {
		for _, p := range acked {
			if !received[p.pn] {
				t.Fatalf("seed %d: packet %d acknowledged but never received", seed, p.pn)
			}
			if s := state[p.pn]; s != "" {
				t.Fatalf("seed %d: packet %d acknowledged, already %s", seed, p.pn, s)
			}
			state[p.pn] = "acked"
			if u, ok := pnUnit[p.pn]; ok {
				unitDone[u] = true
			}
		}
		for _, p := range lost {
			if s := state[p.pn]; s != "" {
				t.Fatalf("seed %d: packet %d declared lost, already %s", seed, p.pn, s)
			}
			state[p.pn] = "lost"
			if received[p.pn] {
				spurious++
			}
			if u, ok := pnUnit[p.pn]; ok && !unitDone[u] {
				retx = append(retx, u)
			}
		}
	}
	popDue := func(q *[]simRecoveryPacket) (simRecoveryPacket, bool) {
		best := -1
		for i, p := range *q {
			if p.at <= now && (best < 0 || p.at < (*q)[best].at) {
				best = i
			}
		}
		if best < 0 {
			return simRecoveryPacket{}, false
		}
		p := (*q)[best]
		*q = append((*q)[:best], (*q)[best+1:]...)
		return p, true
	}

	for step := 0; ; step++ {
		if step > 10_000_000 || now > int64(time.Hour) {
			t.Fatalf("seed %d: no convergence by %v: %d units in flight", seed, time.Duration(now), rec.bytesInFlight())
		}
		// Receiver.
		for {
			p, ok := popDue(&toRecv)
			if !ok {
				break
			}
			if tr.onReceived(now, p.pn, p.eliciting) {
				received[p.pn] = true
				if p.unit >= 0 {
					unitGot[p.unit] = true
				}
			}
		}
		if d := tr.deadline(); d != 0 && d <= now {
			path(&toSend, simRecoveryPacket{ranges: slices.Clone(tr.ranges()), ackDelay: tr.ackDelay(now)})
			tr.onAckSent()
		}
		// Sender.
		for {
			p, ok := popDue(&toSend)
			if !ok {
				break
			}
			res, err := rec.onAck(now, p.ranges, p.ackDelay)
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			account(res.acked, res.lost)
		}
		if d := rec.timer(); d != 0 && d <= now {
			lost, probes := rec.onTimer(now)
			account(nil, lost)
			if probes > 0 {
				ptos++
				for range probes {
					u := nextUnitToSend()
					if u < 0 {
						if old, ok := rec.oldestUnacked(); ok && old.chunks[0].kind == chunkStream {
							u = int(old.chunks[0].offset)
						}
					}
					send(u, true)
				}
			}
		}
		if now-lastSend >= gap && rec.live < window {
			if u := nextUnitToSend(); u >= 0 {
				send(u, true)
				// Now and then an ACK-only packet too, as a sender that
				// also receives would send: gaps in the history.
				if rng.IntN(4) == 0 {
					send(-1, false)
				}
			}
		}
		if nextUnit == units && len(retx) == 0 && rec.live == 0 && len(toRecv) == 0 && len(toSend) == 0 {
			break
		}
		// Advance to the next event.
		next := now + gap
		for _, p := range toRecv {
			next = min(next, p.at)
		}
		for _, p := range toSend {
			next = min(next, p.at)
		}
		if d := tr.deadline(); d != 0 {
			next = min(next, d)
		}
		if d := rec.timer(); d != 0 {
			next = min(next, d)
		}
		now = max(next, now+1)
	}

	for u, done := range unitDone {
		if !done || !unitGot[u] {
			t.Fatalf("seed %d: unit %d done %v received %v", seed, u, done, unitGot[u])
		}
	}
	stored := 0
	for pn := range nextPN {
		if !tracked[pn] {
			continue
		}
		stored++
		if state[pn] == "" {
			t.Fatalf("seed %d: packet %d neither acked nor lost", seed, pn)
		}
	}
	if rec.bytesInFlight() != 0 || rec.timer() != 0 || rec.ring != nil && len(rec.ring) > historyIdleSlots {
		t.Fatalf("seed %d: at the end inflight %d timer %d ring %d", seed, rec.bytesInFlight(), rec.timer(), len(rec.ring))
	}
	t.Logf("loss %.2f jitter %v: %d packets, %d ack-eliciting, %d spurious losses, %d PTOs, %v",
		loss, time.Duration(jitter), sent, stored, spurious, ptos, time.Duration(now))
}
