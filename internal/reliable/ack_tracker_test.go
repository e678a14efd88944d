package reliable

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"
)

func wantAckRanges(t *testing.T, a *ackTracker, want ...AckRange) {
	t.Helper()
	if got := a.ranges(); !slices.Equal(got, want) {
		t.Fatalf("ranges %v, want %v", got, want)
	}
}

func TestAckTrackerDelayedAndImmediate(t *testing.T) {
	var a ackTracker
	if a.deadline() != 0 || a.ranges() != nil {
		t.Fatal("zero tracker owes an ACK")
	}
	// One ack-eliciting packet: the ACK may wait max_ack_delay (§13.2.1).
	if !a.onReceived(10*msNs, 0, true) {
		t.Fatal("pn 0 not fresh")
	}
	if got, want := a.deadline(), 10*msNs+int64(MaxAckDelay); got != want {
		t.Fatalf("deadline %d, want %d", got, want)
	}
	// The second: at once (§13.2.2), at its arrival.
	a.onReceived(12*msNs, 1, true)
	if a.deadline() != 12*msNs {
		t.Fatalf("deadline %d, want 12ms (immediate)", a.deadline())
	}
	wantAckRanges(t, &a, ackRng(0, 1))
	if d := a.ackDelay(15 * msNs); d != 3*time.Millisecond {
		t.Fatalf("ackDelay %v, want 3ms", d)
	}
	a.onAckSent()
	if a.deadline() != 0 {
		t.Fatalf("deadline %d after the ACK", a.deadline())
	}
	// Non-ack-eliciting packets are reported but never make an ACK owed.
	for pn := uint64(2); pn < 6; pn++ {
		a.onReceived(20*msNs, pn, false)
	}
	if a.deadline() != 0 {
		t.Fatalf("deadline %d for ACK-only packets", a.deadline())
	}
	wantAckRanges(t, &a, ackRng(0, 5))
	// The delayed deadline counts from the first unacknowledged
	// ack-eliciting arrival, not the latest.
	a.onReceived(30*msNs, 6, true)
	a.onReceived(31*msNs, 7, false)
	if got, want := a.deadline(), 30*msNs+int64(MaxAckDelay); got != want {
		t.Fatalf("deadline %d, want %d", got, want)
	}
	if d := a.ackDelay(40 * msNs); d != 9*time.Millisecond {
		t.Fatalf("ackDelay %v, want 9ms (since the largest, 7)", d)
	}
}

func TestAckTrackerAckEvery(t *testing.T) {
	a := ackTracker{ackEvery: 10}
	for pn := range uint64(9) {
		a.onReceived(int64(pn+1)*msNs, pn, true)
	}
	if got, want := a.deadline(), 1*msNs+int64(MaxAckDelay); got != want {
		t.Fatalf("after 9 of 10: deadline %d, want %d", got, want)
	}
	a.onReceived(20*msNs, 9, true)
	if a.deadline() != 20*msNs {
		t.Fatalf("after 10: deadline %d, want 20ms", a.deadline())
	}
}

// Past ackDecimateAfter packets of a path with a known RTT, an ACK is owed
// after every ackDecimatedEvery-th one or a quarter RTT after the first;
// before that, or without an RTT, after every second; a gap still makes one
// owed at once.
func TestAckTrackerDecimation(t *testing.T) {
	const rtt = 40 * msNs
	a := ackTracker{minRTT: rtt}
	pn := uint64(0)
	now := int64(msNs)
	// receive takes k in-order ack-eliciting packets, 10 µs apart, and
	// returns how many ACKs were owed at once on the way (each then sent).
	receive := func(k int) (acks int) {
		for range k {
			now += 10_000
			a.onReceived(now, pn, true)
			pn++
			if a.deadline() == now {
				acks++
				a.onAckSent()
			}
		}
		return acks
	}
	if got := receive(ackDecimateAfter); got != ackDecimateAfter/defaultAckEvery {
		t.Fatalf("first %d packets: %d ACKs, want one every %d", ackDecimateAfter, got, defaultAckEvery)
	}
	if got := receive(100); got != 100/ackDecimatedEvery {
		t.Fatalf("next 100 packets: %d ACKs, want one every %d", got, ackDecimatedEvery)
	}
	// The next ACK waits a quarter RTT at most.
	receive(1)
	if got, want := a.deadline(), now+rtt/ackDecimationRTTShare; got != want {
		t.Fatalf("deadline %d, want %d (a quarter RTT after the first unacknowledged)", got, want)
	}
	// A gap: at once.
	pn++
	receive(1)
	if a.deadline() != 0 {
		t.Fatalf("out of order: the ACK was not owed at once (deadline %d)", a.deadline())
	}
	// A long RTT: MaxAckDelay still bounds the wait.
	a.minRTT = 10 * int64(MaxAckDelay)
	receive(1)
	if got, want := a.deadline(), now+int64(MaxAckDelay); got != want {
		t.Fatalf("long RTT: deadline %d, want %d", got, want)
	}

	// Without an RTT, no decimation.
	var b ackTracker
	for i := range uint64(2 * ackDecimateAfter) {
		b.onReceived(int64(i+1)*msNs, i, true)
		if owed := b.deadline() == int64(i+1)*msNs; owed != (i%2 == 1) {
			t.Fatalf("no RTT, packet %d: ACK owed at once %t", i, owed)
		}
		if b.deadline() == int64(i+1)*msNs {
			b.onAckSent()
		}
	}
}

func TestAckTrackerOutOfOrder(t *testing.T) {
	var a ackTracker
	a.onReceived(msNs, 0, true)
	a.onReceived(msNs, 1, true)
	a.onAckSent()
	// A gap below: 2 is missing. At once (§13.2.1).
	a.onReceived(5*msNs, 3, true)
	if a.deadline() != 5*msNs {
		t.Fatalf("gap: deadline %d, want 5ms", a.deadline())
	}
	wantAckRanges(t, &a, ackRng(3, 3), ackRng(0, 1))
	a.onAckSent()
	// In order after the gap: not out of order any more.
	a.onReceived(6*msNs, 4, true)
	if got, want := a.deadline(), 6*msNs+int64(MaxAckDelay); got != want {
		t.Fatalf("in order after a gap: deadline %d, want %d", got, want)
	}
	a.onAckSent()
	// Filling the gap: at once, and the ranges coalesce.
	a.onReceived(7*msNs, 2, true)
	if a.deadline() != 7*msNs {
		t.Fatalf("fill: deadline %d, want 7ms", a.deadline())
	}
	wantAckRanges(t, &a, ackRng(0, 4))
	a.onAckSent()
	// A non-ack-eliciting packet out of order owes nothing.
	a.onReceived(8*msNs, 9, false)
	if a.deadline() != 0 {
		t.Fatalf("ACK-only gap: deadline %d", a.deadline())
	}
	// The first packet of a connection, if not 0, reveals a gap too.
	var b ackTracker
	b.onReceived(msNs, 2, true)
	if b.deadline() != msNs {
		t.Fatalf("first packet 2: deadline %d, want immediate", b.deadline())
	}
}

func TestAckTrackerCoalesce(t *testing.T) {
	var a ackTracker
	steps := []struct {
		pn    uint64
		fresh bool
		want  []AckRange
	}{
		{5, true, []AckRange{ackRng(5, 5)}},
		{9, true, []AckRange{ackRng(9, 9), ackRng(5, 5)}},
		{7, true, []AckRange{ackRng(9, 9), ackRng(7, 7), ackRng(5, 5)}},
		{1, true, []AckRange{ackRng(9, 9), ackRng(7, 7), ackRng(5, 5), ackRng(1, 1)}},
		{8, true, []AckRange{ackRng(7, 9), ackRng(5, 5), ackRng(1, 1)}},   // merges two
		{4, true, []AckRange{ackRng(7, 9), ackRng(4, 5), ackRng(1, 1)}},   // extends down
		{2, true, []AckRange{ackRng(7, 9), ackRng(4, 5), ackRng(1, 2)}},   // extends up
		{0, true, []AckRange{ackRng(7, 9), ackRng(4, 5), ackRng(0, 2)}},   // extends the oldest down
		{10, true, []AckRange{ackRng(7, 10), ackRng(4, 5), ackRng(0, 2)}}, // in order
		{8, false, []AckRange{ackRng(7, 10), ackRng(4, 5), ackRng(0, 2)}}, // duplicate
		{0, false, []AckRange{ackRng(7, 10), ackRng(4, 5), ackRng(0, 2)}}, // duplicate
		{3, true, []AckRange{ackRng(7, 10), ackRng(0, 5)}},
		{6, true, []AckRange{ackRng(0, 10)}},
	}
	for _, s := range steps {
		if fresh := a.onReceived(msNs, s.pn, true); fresh != s.fresh {
			t.Fatalf("onReceived(%d) fresh %v, want %v", s.pn, fresh, s.fresh)
		}
		wantAckRanges(t, &a, s.want...)
	}
}

func TestAckTrackerRangeCap(t *testing.T) {
	var a ackTracker
	// Every other number: a range each. The oldest are dropped beyond 32.
	for i := range uint64(40) {
		a.onReceived(msNs, 2*i, true)
	}
	rs := a.ranges()
	if len(rs) != maxAckRanges || rs[0] != ackRng(78, 78) || rs[maxAckRanges-1] != ackRng(16, 16) {
		t.Fatalf("%d ranges, first %v last %v; want 32, [78] … [16]", len(rs), rs[0], rs[len(rs)-1])
	}
	if cap(rs) > maxAckRanges {
		t.Fatalf("range array grew to %d", cap(rs))
	}
	// Below the oldest kept: no longer tracked, so not fresh.
	for _, pn := range []uint64{14, 13, 3} {
		if a.onReceived(msNs, pn, true) {
			t.Fatalf("pn %d below the ranges kept reported fresh", pn)
		}
	}
	// A new range in the middle drops the oldest too.
	a.onReceived(msNs, 51, true) // between 50 and 52: merges, no new range
	if len(a.ranges()) != maxAckRanges-1 {
		t.Fatalf("%d ranges after a merge", len(a.ranges()))
	}
	a.onReceived(msNs, 80, true)
	a.onReceived(msNs, 82, true) // 33rd range: [16] goes
	if rs := a.ranges(); len(rs) != maxAckRanges || rs[len(rs)-1] != ackRng(18, 18) {
		t.Fatalf("%d ranges, last %v", len(rs), rs[len(rs)-1])
	}
	if a.onReceived(msNs, 16, true) {
		t.Fatal("pn 16, in the dropped range, reported fresh")
	}
}

func TestAckTrackerDropsReportedRanges(t *testing.T) {
	var a ackTracker
	for _, pn := range []uint64{0, 1, 3, 4, 6, 7, 9, 10, 11} {
		a.onReceived(msNs, pn, true)
	}
	wantAckRanges(t, &a, ackRng(9, 11), ackRng(6, 7), ackRng(3, 4), ackRng(0, 1))
	// Once the ranges below the newest went out in ackRangeRepeats ACK
	// frames, the sender has them; only the newest stays.
	for i := range ackRangeRepeats {
		if len(a.ranges()) != 4 {
			t.Fatalf("after %d ACKs: %v", i, a.ranges())
		}
		a.onAckSent()
	}
	wantAckRanges(t, &a, ackRng(9, 11))
	if a.onReceived(msNs, 8, true) {
		t.Fatal("pn 8 below the dropped ranges reported fresh")
	}
	// A change below the newest restarts the count.
	a.onReceived(msNs, 13, true)
	a.onAckSent()
	a.onAckSent()
	a.onReceived(msNs, 15, true)
	a.onAckSent()
	a.onAckSent()
	wantAckRanges(t, &a, ackRng(15, 15), ackRng(13, 13), ackRng(9, 11))
	// Reported often enough, but 13 and 14 are not yet three below the
	// largest: the sender may still be waiting for them.
	a.onAckSent()
	wantAckRanges(t, &a, ackRng(15, 15), ackRng(13, 13), ackRng(9, 11))
	a.onReceived(msNs, 16, true)
	a.onAckSent()
	wantAckRanges(t, &a, ackRng(15, 16), ackRng(13, 13), ackRng(9, 11))
	a.onReceived(msNs, 17, true)
	a.onAckSent()
	wantAckRanges(t, &a, ackRng(15, 17))
}

func TestAckTrackerIdleMemory(t *testing.T) {
	var a ackTracker
	// A lossy burst: many ranges, then quiet after a few ACKs.
	for i := range uint64(200) {
		a.onReceived(msNs, 3*i, true)
		if i%2 == 1 {
			a.onAckSent()
		}
	}
	// Traffic goes on in order.
	a.onReceived(2*msNs, 598, true)
	a.onReceived(2*msNs, 599, true)
	for range ackRangeRepeats {
		a.onAckSent()
	}
	size := int(unsafe.Sizeof(a)) + cap(a.rs)*int(unsafe.Sizeof(AckRange{}))
	if len(a.rs) != 1 || cap(a.rs) > ackRangesIdleCap || size > 256 {
		t.Fatalf("idle tracker: %d ranges, cap %d, %d bytes", len(a.rs), cap(a.rs), size)
	}
	t.Logf("idle ackTracker: %d bytes (struct %d)", size, unsafe.Sizeof(a))
}

func TestAckTrackerAllocs(t *testing.T) {
	var a ackTracker
	pn := uint64(0)
	now := int64(0)
	step := func() {
		now += 10_000
		a.onReceived(now, pn, true)
		if pn%7 == 0 {
			pn++ // a loss every 7 packets: ranges come and go
		}
		pn++
		if d := a.deadline(); d != 0 && d <= now {
			_ = a.ranges()
			_ = a.ackDelay(now)
			a.onAckSent()
		}
	}
	for range 100 {
		step()
	}
	if n := testing.AllocsPerRun(1000, step); n != 0 {
		t.Fatalf("%v allocations per packet", n)
	}
}

func BenchmarkAckTrackerReceive(b *testing.B) {
	var a ackTracker
	pn := uint64(0)
	now := int64(0)
	b.ReportAllocs()
	for b.Loop() {
		now += 1000
		a.onReceived(now, pn, true)
		pn++
		if d := a.deadline(); d != 0 && d <= now {
			_ = a.ranges()
			a.onAckSent()
		}
	}
}

// BenchmarkSendAckLossy is the whole per-packet path of both ends: a packet
// sent (onSent), 2 % lost, the rest received (ackTracker), an ACK sent
// whenever one is owed and processed (onAck) with its holes one RTT later,
// lost packets found by the thresholds. One packet per µs. With an RTT of
// 64 packets the history never empties; with none it empties after nearly
// every ACK, and a burst that outgrew the idle ring reallocates it.
func BenchmarkSendAckLossy(b *testing.B) {
	for _, rttPkts := range []int{64, 0} {
		b.Run(fmt.Sprintf("rtt%dpkts", rttPkts), func(b *testing.B) {
			type inFlightAck struct {
				due    int64
				n      int
				ranges [maxAckRanges]AckRange
				delay  time.Duration
			}
			var (
				r     = newRecovery(0)
				a     ackTracker
				rng   = rand.New(rand.NewPCG(1, 2))
				now   int64
				pn    uint64
				acks  [128]inFlightAck // a FIFO of ACKs on the path
				ah, n int
			)
			b.ReportAllocs()
			for b.Loop() {
				now += 1000
				r.onSent(sentData(pn, now))
				if rng.IntN(50) != 0 {
					a.onReceived(now, pn, true)
				}
				pn++
				if d := a.deadline(); d != 0 && d <= now {
					q := &acks[(ah+n)%len(acks)]
					q.due, q.n, q.delay = now+int64(rttPkts)*1000, copy(q.ranges[:], a.ranges()), a.ackDelay(now)
					n++
					a.onAckSent()
				}
				for n > 0 && acks[ah].due <= now {
					q := &acks[ah]
					if _, err := r.onAck(now, q.ranges[:q.n], q.delay); err != nil {
						b.Fatal(err)
					}
					ah, n = (ah+1)%len(acks), n-1
				}
				if d := r.timer(); d != 0 && d <= now {
					r.onTimer(now)
				}
			}
		})
	}
}
