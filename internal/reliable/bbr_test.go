package reliable

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// simPath is a one-bottleneck path for driving the bbr state machine with time
// as input: packets queue at a bottleneck of rate bytes/s (a FIFO of at most
// queue bytes, tail drop), cross the path, and are acknowledged one RTT after
// they leave the bottleneck; each is lost at random with probability loss.
// Loss is detected the way QUIC does (RFC 9002 §6.1.1): a packet is lost once
// a packet sent three later is acknowledged.
type simPath struct {
	rtt   time.Duration
	rate  float64 // bytes per second
	queue int64   // bytes the bottleneck buffers
	loss  float64
	seed  uint64
	// appRate, if set, limits the sender to this many bytes per second (an
	// application that writes slowly).
	appRate float64
}

type simResult struct {
	delivered   int64 // bytes acknowledged
	modes       []bbrMode
	modeAt      map[bbrMode]time.Duration // first time each mode was entered
	lossBytes   int64
	queueDrops  int64
	maxQueueLen int64
}

// run drives b over the path for d in steps of 50 µs (every ACK that arrives
// within a step is processed together, like a stretched ACK).
func (p simPath) run(t *testing.T, b *bbr, d time.Duration, during func(now time.Duration, b *bbr)) simResult {
	t.Helper()
	const step = 50 * time.Microsecond
	rng := rand.New(rand.NewPCG(p.seed, 7))
	type inFlight struct {
		pn, size int64
		sent     int64
		ackAt    int64 // 0: lost on the path
	}
	var (
		pc       pacer
		pn       int64
		flight   []inFlight // in send order
		lastExit int64      // when the bottleneck finishes its last queued packet
		appBytes float64
		res      = simResult{modeAt: map[bbrMode]time.Duration{bbrStartup: 0}}
		last     = b.mode
	)
	for now := int64(0); now < int64(d); now += int64(step) {
		// ACKs that have arrived.
		var acked, lost []int64
		var rtt time.Duration
		k := 0
		for _, f := range flight {
			if f.ackAt != 0 && f.ackAt <= now {
				acked = append(acked, f.pn)
				rtt = time.Duration(now - f.sent)
			} else {
				flight[k] = f
				k++
			}
		}
		flight = flight[:k]
		if len(acked) > 0 {
			largest := acked[len(acked)-1]
			k = 0
			for _, f := range flight {
				if f.pn+3 <= largest {
					lost = append(lost, f.pn)
					res.lossBytes += f.size
				} else {
					flight[k] = f
					k++
				}
			}
			flight = flight[:k]
		}
		if len(acked) > 0 || len(lost) > 0 {
			b.onAck(now, acked, lost, rtt)
			res.delivered = b.delivered
		}
		if b.mode != last {
			last = b.mode
			res.modes = append(res.modes, b.mode)
			if _, ok := res.modeAt[b.mode]; !ok {
				res.modeAt[b.mode] = time.Duration(now)
			}
		}
		if during != nil {
			during(time.Duration(now), b)
		}
		// Send what the window, the pacer and the application allow.
		if p.appRate > 0 {
			appBytes += p.appRate * step.Seconds()
		}
		for {
			pc.refill(now, b.pacingRate, b.maxBurst())
			if b.inflight+b.mss > b.cwnd || pc.budget < float64(b.mss) {
				break
			}
			if p.appRate > 0 && appBytes < float64(b.mss) {
				break
			}
			pc.spend(b.mss)
			appBytes -= float64(b.mss)
			b.onSent(now, pn, b.mss, p.appRate > 0)
			f := inFlight{pn: pn, size: b.mss, sent: now}
			pn++
			queued := max(lastExit-now, 0) * int64(p.rate) / 1e9
			res.maxQueueLen = max(res.maxQueueLen, queued)
			switch {
			case queued+b.mss > p.queue:
				res.queueDrops++
			case rng.Float64() < p.loss:
				lastExit = max(lastExit, now) + int64(float64(b.mss)/p.rate*1e9)
			default:
				lastExit = max(lastExit, now) + int64(float64(b.mss)/p.rate*1e9)
				f.ackAt = lastExit + int64(p.rtt)
			}
			flight = append(flight, f)
		}
	}
	return res
}

func newTestBBR() *bbr { return newBBR(1200, 0, 3) }

// 100 Mbit/s, 20 ms: STARTUP finds the bandwidth, DRAIN empties the queue it
// built, and PROBE_BW then runs near the bottleneck rate with a small queue.
func TestBBRFindsBandwidthAndDrains(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	p := simPath{rtt: 20 * time.Millisecond, rate: 12.5e6, queue: 500_000}
	b := newTestBBR()
	var at1s int64
	res := p.run(t, b, 3*time.Second, func(now time.Duration, b *bbr) {
		if now == time.Second {
			at1s = b.delivered
		}
	})
	goodput := float64(res.delivered-at1s) / 2
	t.Logf("modes %v at %v; bw %.2f MB/s, min RTT %v, cwnd %d, goodput %.2f MB/s, max queue %d B, drops %d",
		res.modes, res.modeAt, b.btlBw.get()/1e6, time.Duration(b.minRTT), b.cwnd, goodput/1e6, res.maxQueueLen, res.queueDrops)
	if b.mode != bbrProbeBW {
		t.Fatalf("mode %v after 3 s, want probe_bw", b.mode)
	}
	if at, ok := res.modeAt[bbrDrain]; !ok || at > 500*time.Millisecond {
		t.Errorf("left STARTUP at %v (ok %t), want within 500 ms (about 10 rounds)", at, ok)
	}
	if bw := b.btlBw.get(); bw < 0.9*p.rate || bw > 1.1*p.rate {
		t.Errorf("bandwidth estimate %.2f MB/s, want %.2f ±10 %%", bw/1e6, p.rate/1e6)
	}
	if goodput < 0.9*p.rate {
		t.Errorf("goodput %.2f MB/s, want at least 90 %% of %.2f", goodput/1e6, p.rate/1e6)
	}
	if b.minRTT < int64(p.rtt) || b.minRTT > int64(p.rtt)+int64(2*time.Millisecond) {
		t.Errorf("min RTT %v, want %v", time.Duration(b.minRTT), p.rtt)
	}
	// Two BDPs plus the burst allowance: a loss-free path needs no more.
	bdp := p.rate * p.rtt.Seconds()
	if c := float64(b.cwnd); c < 1.5*bdp || c > 3*bdp {
		t.Errorf("cwnd %d, want about 2 BDP (%0.f)", b.cwnd, 2*bdp)
	}
}

// Random loss says nothing about congestion: the bandwidth estimate and the
// goodput stay near the bottleneck rate at 2 % and 5 %, where Reno would get
// about MSS/RTT·1.22/√p (0.5 MB/s at 2 %).
func TestBBRHoldsRateUnderRandomLoss(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	for _, loss := range []float64{0.005, 0.02, 0.05} {
		t.Run(fmt.Sprintf("loss %.1f%%", loss*100), func(t *testing.T) {
			t.Parallel() // three long simulations: beside each other too
			p := simPath{rtt: 40 * time.Millisecond, rate: 12.5e6, queue: 500_000, loss: loss, seed: 11}
			b := newTestBBR()
			var at1s int64
			res := p.run(t, b, 4*time.Second, func(now time.Duration, b *bbr) {
				if now == time.Second {
					at1s = b.delivered
				}
			})
			goodput := float64(res.delivered-at1s) / 3
			t.Logf("goodput %.2f MB/s of %.2f (loss-free share %.2f), bw %.2f MB/s, loss events %d, mode %v",
				goodput/1e6, p.rate/1e6, 1-loss, b.btlBw.get()/1e6, b.lossEvents, b.mode)
			if goodput < 0.8*(1-loss)*p.rate {
				t.Errorf("goodput %.2f MB/s, want at least 80 %% of the %.2f left after loss", goodput/1e6, (1-loss)*p.rate/1e6)
			}
			if bw := b.btlBw.get(); bw < 0.8*p.rate {
				t.Errorf("bandwidth estimate fell to %.2f MB/s", bw/1e6)
			}
		})
	}
}

// A loss event takes the lost bytes off the window, conserves packets for a
// round (the window never falls below what is in flight plus what was just
// acknowledged), and returns the window once a packet sent after the loss is
// acknowledged.
func TestBBRLossConservesThenRestores(t *testing.T) {
	b := newTestBBR()
	b.mode = bbrProbeBW // STARTUP does not conserve (see updateRecovery)
	const mss = 1200
	now := int64(time.Second)
	for pn := range int64(20) {
		b.onSent(now, pn, mss, false)
	}
	before := b.cwnd
	now += int64(20 * time.Millisecond)
	// Packets 4..7 acknowledged, 0 lost (three later ones are acknowledged).
	b.onAck(now, []int64{4, 5, 6, 7}, []int64{0}, 20*time.Millisecond)
	if !b.inRecovery || !b.conservation {
		t.Fatalf("after a loss: recovery %t, conservation %t", b.inRecovery, b.conservation)
	}
	if b.priorCwnd != before {
		t.Errorf("prior cwnd %d, want %d", b.priorCwnd, before)
	}
	if want := b.inflight + 4*mss; b.cwnd < want {
		t.Errorf("cwnd %d in conservation, want at least in flight + acked = %d", b.cwnd, want)
	}
	// A retransmission and new data go out after the loss; one of them is
	// acknowledged: recovery ends and the window is back.
	now += int64(time.Millisecond)
	b.onSent(now, 20, mss, false)
	now += int64(20 * time.Millisecond)
	b.onAck(now, []int64{20}, nil, 20*time.Millisecond)
	if b.inRecovery {
		t.Fatal("still in recovery after a packet sent after the loss was acknowledged")
	}
	if b.cwnd < before {
		t.Errorf("cwnd %d after recovery, want restored to at least %d", b.cwnd, before)
	}
	if b.lossEvents != 1 || b.lost != mss {
		t.Errorf("loss events %d, lost bytes %d", b.lossEvents, b.lost)
	}
}

// After ten seconds without a lower RTT sample BBR spends about 200 ms and a
// round at four packets in flight, then goes back to PROBE_BW with its window.
func TestBBRProbeRTT(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	p := simPath{rtt: 20 * time.Millisecond, rate: 5e6, queue: 300_000}
	b := newTestBBR()
	var inProbe, sawSmall bool
	var left time.Duration
	res := p.run(t, b, 11*time.Second, func(now time.Duration, b *bbr) {
		if b.mode == bbrProbeRTT {
			inProbe = true
			if b.cwnd == bbrMinCwndPkts*b.mss {
				sawSmall = true
			}
		} else if inProbe && left == 0 {
			left = now
		}
	})
	entered, ok := res.modeAt[bbrProbeRTT]
	t.Logf("modes %v; probe_rtt at %v, left at %v", res.modes, entered, left)
	if !ok || entered < 9*time.Second || entered > 10500*time.Millisecond {
		t.Fatalf("entered PROBE_RTT at %v (%t), want about 10 s", entered, ok)
	}
	if !sawSmall {
		t.Error("PROBE_RTT never held the window at four packets")
	}
	if d := left - entered; d < bbrProbeRTTTime || d > bbrProbeRTTTime+5*p.rtt {
		t.Errorf("PROBE_RTT lasted %v, want 200 ms plus about a round", d)
	}
	if b.mode != bbrProbeBW {
		t.Errorf("mode %v after PROBE_RTT, want probe_bw", b.mode)
	}
}

// An application writing far below the path's rate must not end STARTUP: its
// rounds are app-limited, so the real bandwidth is still found once it sends
// in bulk.
func TestBBRAppLimitedKeepsStartup(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	p := simPath{rtt: 20 * time.Millisecond, rate: 12.5e6, queue: 500_000, appRate: 0.5e6}
	b := newTestBBR()
	p.run(t, b, time.Second, nil)
	if b.filledPipe || b.mode != bbrStartup {
		t.Fatalf("an app-limited second ended STARTUP (mode %v, bw %.2f MB/s)", b.mode, b.btlBw.get()/1e6)
	}
	// Now in bulk: the same controller finds the path's rate.
	p.appRate = 0
	p.run(t, b, 2*time.Second, nil)
	if bw := b.btlBw.get(); bw < 0.9*p.rate {
		t.Errorf("bandwidth estimate %.2f MB/s after the bulk phase, want about %.2f", bw/1e6, p.rate/1e6)
	}
}

func TestMaxFilterWindow(t *testing.T) {
	f := maxFilter{window: 10}
	f.update(5, 0)
	f.update(3, 1)
	f.update(4, 5)
	if got := f.get(); got != 5 {
		t.Fatalf("max %v, want 5", got)
	}
	// 5 ages out after 10 rounds; the best later sample takes over.
	f.update(2, 11)
	if got := f.get(); got != 4 {
		t.Fatalf("after the window: max %v, want 4", got)
	}
	f.update(9, 12)
	if got := f.get(); got != 9 {
		t.Fatalf("new max %v, want 9", got)
	}
}

func TestPacer(t *testing.T) {
	var p pacer
	const rate = 1e6 // 1 MB/s: 1200 bytes take 1.2 ms
	p.refill(0, rate, 12000)
	if p.budget != 12000 {
		t.Fatal("a fresh pacer starts with a full bucket")
	}
	for range 10 {
		p.spend(1200)
	}
	if p.budget != 0 {
		t.Fatalf("budget %v after spending the burst", p.budget)
	}
	if next := p.nextSend(1200, rate); next != int64(1200*time.Microsecond) {
		t.Fatalf("next send at %v, want 1.2 ms", time.Duration(next))
	}
	p.refill(int64(600*time.Microsecond), rate, 12000)
	if p.budget != 600 {
		t.Fatalf("budget %v after 0.6 ms, want 600", p.budget)
	}
	p.refill(int64(time.Second), rate, 12000)
	if p.budget != 12000 {
		t.Fatalf("budget %v after a long idle, want the cap", p.budget)
	}
}

// STARTUP's window grows by the pacing gain while the RTT shows no queue, and
// by doubling, as the draft's does, once a round's lowest RTT is up by more
// than HyStart++'s threshold (an eighth of the min RTT, 4–16 ms).
func TestBBRStartupGrowth(t *testing.T) {
	b := newTestBBR()
	const acked = 100_000
	b.minRTT = int64(80 * time.Millisecond)
	for _, c := range []struct {
		lastRound time.Duration
		want      int64
	}{
		{0, acked},                       // no round measured yet
		{80 * time.Millisecond, 188_500}, // no queue: (2.885-1) per byte
		{89 * time.Millisecond, 188_500}, // under the 10 ms threshold
		{91 * time.Millisecond, acked},   // a queue
		{200 * time.Millisecond, acked},
	} {
		b.lastRoundRTT = int64(c.lastRound)
		if got := b.startupGrowth(acked); got != c.want {
			t.Errorf("last round's RTT %v: grows %d for %d acked, want %d", c.lastRound, got, acked, c.want)
		}
	}
	b.minRTT = int64(10 * time.Millisecond) // an eighth is 1.25 ms: the threshold is 4 ms
	b.lastRoundRTT = int64(13 * time.Millisecond)
	if got := b.startupGrowth(acked); got != 188_500 {
		t.Errorf("3 ms over a 10 ms min RTT: grows %d, want 188500", got)
	}
}

// On a long fat path (RTT 80 ms, 1 Gbit/s) STARTUP fills the pipe in fewer
// rounds than doubling from the initial window can: log2(BDP/IW) is eight
// rounds before a BDP could be in flight (720 ms in this simulation, 555 ms
// with startupGrowth).
func TestBBRStartupFillsLongFatPathSooner(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	p := simPath{rtt: 80 * time.Millisecond, rate: 125e6, queue: 20e6}
	bdp := int64(p.rate * p.rtt.Seconds())
	b := newTestBBR()
	var full time.Duration
	p.run(t, b, time.Second, func(now time.Duration, b *bbr) {
		if full == 0 && b.inflight >= bdp {
			full = now
		}
	})
	t.Logf("a BDP (%d B) in flight after %v; bw %.1f MB/s, mode %v", bdp, full, b.btlBw.get()/1e6, b.mode)
	if full == 0 || full > 600*time.Millisecond {
		t.Errorf("a BDP in flight after %v, want within 600 ms", full)
	}
}

// A sender limited by its window is not application-limited, however its
// ACKs come: here it waits 25 ms for one (its pacer's bucket fills), and the
// ACK frees half the window at once. Samples marked app-limited would keep
// STARTUP from ever ending and the bandwidth estimate from ever falling.
func TestBBRWindowLimitedIsNotAppLimited(t *testing.T) {
	x := NewBBR(1200, 20*time.Millisecond, 3)
	now := int64(time.Second)
	var pn uint64
	for x.b.inflight+1200 <= x.Window() {
		x.OnSent(now, pn, 1200, false)
		pn++
	}
	now += int64(25 * time.Millisecond)
	acked := make([]uint64, pn/2)
	for i := range acked {
		acked[i] = uint64(i)
	}
	x.OnAck(now, acked, nil, 25*time.Millisecond)
	x.OnSent(now, pn, 1200, false)
	if x.b.appLimitedUntil != 0 {
		t.Fatal("a window-limited sender with data waiting marked its samples app-limited")
	}
	// The application's own idleness does mark them.
	x.OnSent(now, pn+1, 1200, true)
	if x.b.appLimitedUntil == 0 {
		t.Fatal("a sender with nothing more to send did not mark its samples app-limited")
	}
}
