package reliable

import (
	"math"
	"time"
)

// bbr is a BBR (version 1) congestion controller: a pure state machine,
// bytes and times in, a congestion window and a pacing rate out. It models
// the path by its bottleneck bandwidth (the windowed maximum of delivery
// rate samples) and its round-trip propagation time (the windowed minimum
// RTT) and sends at that rate, so random loss, which says nothing about
// congestion on Wi-Fi or LTE, does not shrink the window the way Reno or
// CUBIC halve it (shared/reference/transport.md §1.6 measured loss-based
// stacks at 0.3–3 MiB/s on a 20 ms path with 2 % loss).
//
// Written from draft-cardwell-iccrg-bbr-congestion-control-00 (BBR v1: the
// STARTUP / DRAIN / PROBE_BW / PROBE_RTT state machine, §4) and
// draft-cheng-iccrg-delivery-rate-estimation-00 (the delivery rate sampler,
// §3), with the loss response of Linux's tcp_bbr.c, which libudx, Hyperswarm's
// transport, follows too: a loss event takes the lost bytes off the window
// and conserves packets for one round, then the window returns to what it
// was; the bandwidth estimate is never cut. One departure from the draft:
// STARTUP's window grows at the pacing gain while the RTT shows no queue
// (startupGrowth), which fills a long path in fewer rounds.
//
// Times are nanoseconds on any monotonic clock (the caller's); the machine
// reads no clock itself. Packets are identified by the caller's packet
// numbers, which must grow with every packet sent.
type bbr struct {
	mss int64 // bytes per full packet

	// The delivery rate sampler (delivery-rate-estimation §3.1).
	sent            map[int64]bbrPacket // ack-eliciting packets in flight, by number
	sentPeak        int                 // the most packets sent has held since it was made
	inflight        int64               // sum of their sizes
	delivered       int64               // bytes delivered so far
	deliveredTime   int64               // when delivered last grew
	firstSentTime   int64               // send time of the newest packet acked
	appLimitedUntil int64               // nonzero: samples are app-limited until delivered passes it
	lost            int64               // bytes declared lost so far

	// The model.
	mode           bbrMode
	btlBw          maxFilter // bytes per second, over bbrBtlBwRounds rounds
	minRTT         int64     // ns; 0: no sample yet
	minRTTStamp    int64
	minRTTExpired  bool // the last update found minRTT older than its window
	roundCount     int64
	nextRoundDeliv int64
	roundStart     bool
	roundMinRTT    int64 // ns: the lowest RTT sample of this round; 0: none yet
	lastRoundRTT   int64 // ns: the same for the round before

	// STARTUP's full-pipe detector (§4.3.2.2).
	fullBw      float64
	fullBwCount int
	filledPipe  bool

	// PROBE_BW's gain cycle (§4.3.3.6).
	cycleIndex int
	cycleStamp int64

	// PROBE_RTT (§4.3.4.4).
	probeRTTDoneStamp int64
	probeRTTRoundDone bool
	idleRestart       bool

	// Loss response (Linux bbr_set_cwnd_to_recover_or_restore).
	inRecovery      bool
	conservation    bool  // the first round of a recovery episode
	recoveryEndSent int64 // ns: recovery ends when a packet sent after this is acked
	priorCwnd       int64

	pacingGain, cwndGain float64
	pacingRate           float64 // bytes per second
	cwnd                 int64

	// Counters for SessionStats and tests.
	lossEvents int64
	acks       int64 // onAck calls, for pruning
}

// bbrPruneEvery and bbrPruneAge: packets the caller never reports acknowledged
// or lost are forgotten once this old, checked every so many ACKs. A Conn
// reports every packet; the prune is a bound on memory should a caller not.
const (
	bbrPruneEvery = 1024
	bbrPruneAge   = 2 * time.Second
)

// bbrSentIdleSlots: a sent map that has held more packets than this is
// replaced by an empty one when it empties. A Go map never shrinks, so
// without this a connection that once had a bulk transfer's window in
// flight would hold that table, tens of KiB, for as long as it lives
// (TestConnIdleMemoryAfterBulk); a request/response pattern with a few
// packets in flight keeps its map (eight slots are one group of the table)
// and allocates nothing per exchange.
const bbrSentIdleSlots = 8

// prune forgets packets sent long ago and never reported.
func (b *bbr) prune(now int64) {
	horizon := now - int64(bbrPruneAge) - 8*b.minRTT
	for pn, p := range b.sent {
		if p.sentTime < horizon {
			delete(b.sent, pn)
		}
	}
	b.releaseSent()
}

// releaseSent replaces an empty sent map that grew large (bbrSentIdleSlots).
func (b *bbr) releaseSent() {
	if len(b.sent) == 0 && b.sentPeak > bbrSentIdleSlots {
		b.sent, b.sentPeak = map[int64]bbrPacket{}, 0
	}
}

type bbrMode uint8

const (
	bbrStartup bbrMode = iota
	bbrDrain
	bbrProbeBW
	bbrProbeRTT
)

func (m bbrMode) String() string {
	return [...]string{"startup", "drain", "probe_bw", "probe_rtt"}[m]
}

// bbrPacket is what the sampler remembers of a packet in flight.
type bbrPacket struct {
	size          int64
	sentTime      int64
	delivered     int64 // the connection's delivered when it was sent
	deliveredTime int64
	firstSentTime int64
	appLimited    bool
}

// BBR parameters, from the draft unless said otherwise.
const (
	bbrHighGain      = 2.885 // 2/ln(2): doubles the sending rate each round in STARTUP
	bbrCwndGain      = 2.0   // PROBE_BW's window: two BDPs ride out delayed and stretched ACKs
	bbrBtlBwRounds   = 10    // the bandwidth filter's window, in round trips
	bbrMinRTTWindow  = 10 * time.Second
	bbrProbeRTTTime  = 200 * time.Millisecond
	bbrFullBwGrowth  = 1.25 // STARTUP ends when bandwidth grew less than this...
	bbrFullBwRounds  = 3    // ...for this many rounds
	bbrMinCwndPkts   = 4    // the window never falls below four packets
	bbrInitCwndPkts  = 32   // as quic-go's, whose streams this controller drove first
	bbrPacingMargin  = 0.99 // pace 1 % under the estimate so the bottleneck queue drains (Linux)
	bbrGainCycleLen  = 8
	bbrDefaultRTTNs  = int64(time.Millisecond) // the initial pacing rate's RTT when none is known
	bbrMaxBurstDelay = time.Millisecond        // pacing bucket: this much time at the rate
	bbrMinBurstPkts  = 10                      // ...but at least this many packets
	// The bounds of queueing's delay threshold, HyStart++'s (RFC 9406 §4.2).
	bbrQueueMinThresh = 4 * time.Millisecond
	bbrQueueMaxThresh = 16 * time.Millisecond
)

// bbrPacingGainCycle is PROBE_BW's eight phases of one min RTT each: probe
// for more bandwidth, drain the queue that made, then cruise.
var bbrPacingGainCycle = [bbrGainCycleLen]float64{1.25, 0.75, 1, 1, 1, 1, 1, 1}

// newBBR returns a controller for packets of mss bytes. srtt is the RTT
// known so far (from the handshake), zero if none; seed picks PROBE_BW's
// starting phase.
func newBBR(mss int64, srtt time.Duration, seed uint64) *bbr {
	b := &bbr{mss: mss, sent: map[int64]bbrPacket{}, cycleIndex: int(seed % (bbrGainCycleLen - 1))}
	if b.cycleIndex >= 1 {
		b.cycleIndex++ // never start in the draining phase (§4.3.3.6)
	}
	b.btlBw.window = bbrBtlBwRounds
	b.cwnd = bbrInitCwndPkts * mss
	b.enterStartup()
	rtt := int64(srtt)
	if rtt <= 0 {
		rtt = bbrDefaultRTTNs
	}
	b.pacingRate = bbrHighGain * float64(b.cwnd) / (float64(rtt) / 1e9)
	return b
}

// onSent records an ack-eliciting packet of size bytes sent at now. It also
// marks the sampler app-limited (delivery-rate-estimation §3.4) when the
// window has room and the application is the limit: no write of it is
// pending (appIdle). The rate samples of the coming round then say nothing
// about the path and do not count toward leaving STARTUP.
//
// An idle pacer is no such sign. A window-limited sender waits for ACKs, and
// where they come in clumps (stretched by ACK decimation, or by a hop that
// forwards in batches) its bucket fills while it waits and an ACK frees much
// of the window at once. Counted as app-limited (as this once was, when the
// quic-go adapter could not see the application), every round of a bulk
// transfer through the NAT lab was: the full-pipe detector never ran, and a
// lower bandwidth could never replace the estimate.
func (b *bbr) onSent(now, pn, size int64, appIdle bool) {
	if b.inflight == 0 {
		// Restarting from idle: measure the next round from now
		// (delivery-rate-estimation §3.2).
		b.firstSentTime, b.deliveredTime = now, now
		if b.mode == bbrProbeBW {
			b.idleRestart = true
		}
	}
	if appIdle && b.inflight+size < b.cwnd {
		b.appLimitedUntil = max(b.delivered+b.inflight, 1)
	}
	b.sent[pn] = bbrPacket{
		size: size, sentTime: now, delivered: b.delivered, deliveredTime: b.deliveredTime,
		firstSentTime: b.firstSentTime, appLimited: b.appLimitedUntil != 0,
	}
	b.sentPeak = max(b.sentPeak, len(b.sent))
	b.inflight += size
}

// onAck processes one ACK's worth of newly acknowledged and newly lost
// packets at now. latestRTT is the RTT sample the ACK produced (zero if
// none).
func (b *bbr) onAck(now int64, acked, lost []int64, latestRTT time.Duration) {
	priorInflight := b.inflight
	var lostBytes int64
	for _, pn := range lost {
		p, ok := b.sent[pn]
		if !ok {
			continue // sent before the controller took over, or already gone
		}
		delete(b.sent, pn)
		b.inflight -= p.size
		lostBytes += p.size
	}
	b.lost += lostBytes

	// The rate sample: from the newest packet this ACK covers.
	var ackedBytes int64
	var rs struct {
		priorDelivered, priorTime, sendElapsed, ackElapsed int64
		appLimited, valid                                  bool
		newestSent                                         int64
	}
	for _, pn := range acked {
		p, ok := b.sent[pn]
		if !ok {
			continue
		}
		delete(b.sent, pn)
		b.inflight -= p.size
		ackedBytes += p.size
		b.delivered += p.size
		b.deliveredTime = now
		if !rs.valid || p.delivered > rs.priorDelivered || (p.delivered == rs.priorDelivered && p.sentTime > rs.newestSent) {
			rs.valid = true
			rs.priorDelivered = p.delivered
			rs.priorTime = p.deliveredTime
			rs.appLimited = p.appLimited
			rs.sendElapsed = p.sentTime - p.firstSentTime
			rs.newestSent = p.sentTime
			b.firstSentTime = p.sentTime
		}
	}
	if b.appLimitedUntil != 0 && b.delivered > b.appLimitedUntil {
		b.appLimitedUntil = 0
	}
	if b.acks++; b.acks%bbrPruneEvery == 0 {
		b.prune(now)
	}
	b.releaseSent()
	b.updateMinRTT(now, int64(latestRTT))
	var rate float64
	if rs.valid {
		rs.ackElapsed = b.deliveredTime - rs.priorTime
		interval := max(rs.sendElapsed, rs.ackElapsed)
		// A sample over less than the min RTT comes from ACK compression
		// and would overestimate (delivery-rate-estimation §3.3).
		if interval > 0 && (b.minRTT == 0 || interval >= b.minRTT) {
			rate = float64(b.delivered-rs.priorDelivered) / (float64(interval) / 1e9)
		}
	}

	// The model (§4.2: BBRUpdateModelAndState).
	b.roundStart = false
	if rs.valid && rs.priorDelivered >= b.nextRoundDeliv {
		b.nextRoundDeliv = b.delivered
		b.roundCount++
		b.roundStart = true
		b.lastRoundRTT, b.roundMinRTT = b.roundMinRTT, 0
	}
	if rate > 0 && (!rs.appLimited || rate >= b.btlBw.get()) {
		b.btlBw.update(rate, b.roundCount)
	}
	if b.mode == bbrProbeBW {
		b.checkCyclePhase(now, priorInflight, lostBytes)
	}
	if rs.valid && !b.filledPipe && b.roundStart && !rs.appLimited {
		b.checkFullPipe()
	}
	b.checkDrain(now)
	b.checkProbeRTT(now)
	b.idleRestart = false

	// The control parameters (§4.2: BBRUpdateControlParameters).
	b.setPacingRate()
	b.updateRecovery(now, lostBytes)
	b.setCwnd(ackedBytes, lostBytes)
}

// updateMinRTT keeps the windowed minimum RTT (§4.3.4.3). Only a strictly lower
// sample renews it (as Linux does), so a standing queue that keeps the RTT
// level cannot postpone PROBE_RTT forever.
func (b *bbr) updateMinRTT(now, rtt int64) {
	if rtt > 0 && (b.roundMinRTT == 0 || rtt < b.roundMinRTT) {
		b.roundMinRTT = rtt
	}
	b.minRTTExpired = b.minRTT != 0 && now > b.minRTTStamp+int64(bbrMinRTTWindow)
	if rtt > 0 && (b.minRTT == 0 || rtt < b.minRTT || b.minRTTExpired) {
		b.minRTT = rtt
		b.minRTTStamp = now
	}
}

// bdp is the bandwidth-delay product times gain, plus room for delayed
// ACKs and pacing bursts (§4.2.3.2: BBRInflight with send quanta).
func (b *bbr) bdp(gain float64) int64 {
	bw := b.btlBw.get()
	if bw == 0 || b.minRTT == 0 {
		return bbrInitCwndPkts * b.mss
	}
	est := int64(gain * bw * float64(b.minRTT) / 1e9)
	return est + 3*b.maxBurst()
}

// maxBurst is the pacer's bucket: bbrMaxBurstDelay at the pacing rate, at
// least bbrMinBurstPkts packets.
func (b *bbr) maxBurst() int64 {
	return max(int64(b.pacingRate*bbrMaxBurstDelay.Seconds()), bbrMinBurstPkts*b.mss)
}

func (b *bbr) enterStartup() {
	b.mode = bbrStartup
	b.pacingGain, b.cwndGain = bbrHighGain, bbrHighGain
}

// checkFullPipe leaves STARTUP once the bandwidth stopped growing by 25 %
// for three rounds (§4.3.2.2).
func (b *bbr) checkFullPipe() {
	bw := b.btlBw.get()
	if bw >= b.fullBw*bbrFullBwGrowth {
		b.fullBw = bw
		b.fullBwCount = 0
		return
	}
	b.fullBwCount++
	if b.fullBwCount >= bbrFullBwRounds {
		b.filledPipe = true
	}
}

// checkDrain moves STARTUP to DRAIN once the pipe is full and DRAIN to
// PROBE_BW once the queue STARTUP built is gone (§4.3.3).
func (b *bbr) checkDrain(now int64) {
	if b.mode == bbrStartup && b.filledPipe {
		b.mode = bbrDrain
		b.pacingGain, b.cwndGain = 1/bbrHighGain, bbrHighGain
	}
	if b.mode == bbrDrain && b.inflight <= b.bdp(1) {
		b.enterProbeBW(now)
	}
}

func (b *bbr) enterProbeBW(now int64) {
	b.mode = bbrProbeBW
	b.pacingGain, b.cwndGain = 1, bbrCwndGain
	b.cycleStamp = now
	b.pacingGain = bbrPacingGainCycle[b.cycleIndex]
}

// checkCyclePhase advances PROBE_BW's gain cycle (§4.3.3.6).
func (b *bbr) checkCyclePhase(now, priorInflight, lostBytes int64) {
	elapsed := now-b.cycleStamp > b.minRTT
	var next bool
	switch {
	case b.pacingGain == 1:
		next = elapsed
	case b.pacingGain > 1:
		// Probe until the pipe holds 1.25 BDP, or loss says it is full.
		next = elapsed && (lostBytes > 0 || priorInflight >= b.bdp(b.pacingGain))
	default:
		// Drain until the queue is gone, at most one min RTT.
		next = elapsed || priorInflight <= b.bdp(1)
	}
	if next {
		b.cycleIndex = (b.cycleIndex + 1) % bbrGainCycleLen
		b.cycleStamp = now
		b.pacingGain = bbrPacingGainCycle[b.cycleIndex]
	}
}

// checkProbeRTT enters PROBE_RTT when the min RTT is 10 s old: four packets
// in flight for 200 ms and a round, so a standing queue cannot hide the
// path's real delay (§4.3.4.4).
func (b *bbr) checkProbeRTT(now int64) {
	if b.mode != bbrProbeRTT && b.minRTTExpired && !b.idleRestart {
		b.mode = bbrProbeRTT
		b.pacingGain, b.cwndGain = 1, 1
		b.saveCwnd()
		b.probeRTTDoneStamp = 0
	}
	if b.mode != bbrProbeRTT {
		return
	}
	if b.probeRTTDoneStamp == 0 && b.inflight <= bbrMinCwndPkts*b.mss {
		b.probeRTTDoneStamp = now + int64(bbrProbeRTTTime)
		b.probeRTTRoundDone = false
		b.nextRoundDeliv = b.delivered
	} else if b.probeRTTDoneStamp != 0 {
		if b.roundStart {
			b.probeRTTRoundDone = true
		}
		if b.probeRTTRoundDone && now > b.probeRTTDoneStamp {
			b.minRTTStamp = now
			b.cwnd = max(b.cwnd, b.priorCwnd)
			if b.filledPipe {
				b.enterProbeBW(now)
			} else {
				b.enterStartup()
			}
		}
	}
}

// setPacingRate paces at gain × bandwidth, and in STARTUP never lower than
// the rate it started with (§4.2.1).
func (b *bbr) setPacingRate() {
	bw := b.btlBw.get()
	if bw == 0 {
		return
	}
	rate := b.pacingGain * bw * bbrPacingMargin
	if b.filledPipe || rate > b.pacingRate {
		b.pacingRate = rate
	}
}

// updateRecovery starts a recovery episode on the first loss outside one
// and ends it once a packet sent after the episode began is acknowledged.
func (b *bbr) updateRecovery(now, lostBytes int64) {
	if lostBytes > 0 {
		b.lossEvents++
	}
	if b.inRecovery && b.firstSentTime > b.recoveryEndSent {
		b.inRecovery, b.conservation = false, false
		b.cwnd = max(b.cwnd, b.priorCwnd) // restore what the episode took
	}
	if lostBytes > 0 && !b.inRecovery {
		b.saveCwnd()
		b.inRecovery = true
		// Not in STARTUP: with random loss nearly every round of it has a
		// loss, and a conserving round grows nothing, which halves STARTUP's
		// growth and ends it at a fraction of the path's rate (measured in
		// the NAT lab at 40 ms and 2 %: it left STARTUP at 20 MB/s of 50).
		// Losses still come off the window there (setCwnd).
		b.conservation = b.mode != bbrStartup
		b.recoveryEndSent = now
		b.nextRoundDeliv = b.delivered // conservation lasts one round from now
	}
	if b.conservation && b.roundStart && b.firstSentTime > b.recoveryEndSent {
		b.conservation = false
	}
}

// saveCwnd remembers the window to return to after recovery or PROBE_RTT.
func (b *bbr) saveCwnd() {
	if !b.inRecovery && b.mode != bbrProbeRTT {
		b.priorCwnd = b.cwnd
	} else {
		b.priorCwnd = max(b.priorCwnd, b.cwnd)
	}
}

// setCwnd moves the window toward cwnd_gain × BDP (§4.2.3.4), minus lost
// bytes and never below what is in flight plus what was just acked while
// conserving packets.
func (b *bbr) setCwnd(acked, lost int64) {
	target := b.bdp(b.cwndGain)
	if lost > 0 {
		b.cwnd = max(b.cwnd-lost, b.mss)
	}
	if b.conservation {
		b.cwnd = max(b.cwnd, b.inflight+acked)
	} else if b.filledPipe {
		b.cwnd = min(b.cwnd+acked, target)
	} else if b.cwnd < target || b.delivered < bbrInitCwndPkts*b.mss {
		b.cwnd += b.startupGrowth(acked)
	}
	b.cwnd = max(b.cwnd, bbrMinCwndPkts*b.mss)
	if b.mode == bbrProbeRTT {
		b.cwnd = min(b.cwnd, bbrMinCwndPkts*b.mss)
	}
}

// startupGrowth is how much STARTUP's window grows for acked bytes
// acknowledged. The draft grows it by acked, doubling it every round trip,
// as slow start does. Here it grows by the pacing gain less one while the
// last round's RTT shows no queue: the window then follows the 2.885×
// per round the pacing rate already allows, and a long path is full in
// about two thirds of the rounds (at RTT 80 ms and 100 MB/s, five rounds
// instead of eight: 240 ms sooner). Once the RTT shows a queue (queueing)
// the pipe is filling, and the window goes back to doubling. The window's
// ceiling, cwnd_gain × BDP, is the draft's either way, so STARTUP's
// overshoot is no larger than BBR's; it comes sooner.
func (b *bbr) startupGrowth(acked int64) int64 {
	if b.lastRoundRTT == 0 || b.minRTT == 0 || b.queueing() {
		return acked
	}
	return int64(float64(acked) * (bbrHighGain - 1))
}

// queueing reports whether the last round's lowest RTT was more than an
// eighth of the min RTT above it (4–16 ms, HyStart++'s delay threshold, RFC
// 9406 §4.2): packets have begun to wait in a queue.
func (b *bbr) queueing() bool {
	thresh := min(max(b.minRTT/8, int64(bbrQueueMinThresh)), int64(bbrQueueMaxThresh))
	return b.lastRoundRTT > b.minRTT+thresh
}

// maxFilter is a windowed maximum over round counts: Kathleen Nichols'
// three-sample running max (as in Linux's lib/win_minmax.c), exact for a
// monotone window and within a third of the window otherwise.
type maxFilter struct {
	window int64
	s      [3]struct {
		v float64
		t int64
	}
}

func (f *maxFilter) get() float64 { return f.s[0].v }

func (f *maxFilter) update(v float64, t int64) {
	if v >= f.s[0].v || t-f.s[2].t > f.window {
		for i := range f.s {
			f.s[i].v, f.s[i].t = v, t
		}
		return
	}
	if v >= f.s[1].v {
		f.s[1].v, f.s[1].t = v, t
		f.s[2] = f.s[1]
	} else if v >= f.s[2].v {
		f.s[2].v, f.s[2].t = v, t
	}
	// Age the samples out of the window.
	if t-f.s[0].t > f.window {
		f.s[0], f.s[1], f.s[2] = f.s[1], f.s[2], struct {
			v float64
			t int64
		}{v, t}
		if t-f.s[0].t > f.window {
			f.s[0], f.s[1] = f.s[1], f.s[2]
		}
	} else if f.s[1].t == f.s[0].t && t-f.s[1].t > f.window/4 {
		f.s[1].v, f.s[1].t = v, t
		f.s[2] = f.s[1]
	} else if f.s[2].t == f.s[1].t && t-f.s[2].t > f.window/2 {
		f.s[2].v, f.s[2].t = v, t
	}
}

// pacer is a token bucket in bytes refilled at the controller's pacing
// rate: the sender asks it when the next packet may go.
type pacer struct {
	budget   float64 // bytes available at last
	last     int64   // ns of the last refill
	lastInit bool
}

// refill brings the bucket to now at rate, capped at burst.
func (p *pacer) refill(now int64, rate float64, burst int64) {
	if !p.lastInit {
		p.budget, p.last, p.lastInit = float64(burst), now, true
		return
	}
	if now > p.last {
		p.budget = math.Min(float64(burst), p.budget+rate*float64(now-p.last)/1e9)
		p.last = now
	}
}

// spend takes size bytes out of the bucket (it may go below zero for one
// packet, which the next refill pays back).
func (p *pacer) spend(size int64) { p.budget -= float64(size) }

// nextSend is when the bucket will hold mss bytes again.
func (p *pacer) nextSend(mss int64, rate float64) int64 {
	if p.budget >= float64(mss) || rate <= 0 {
		return p.last
	}
	need := float64(mss) - p.budget
	return p.last + int64(math.Ceil(need/rate*1e9))
}

// Congestion is the congestion controller and pacer a Conn consults before
// it sends an ack-eliciting packet and tells after. The secure package
// supplies BBR; a test may supply a fixed window. Times are nanoseconds on
// the Conn's clock.
type Congestion interface {
	// Window is the congestion window: the most bytes in flight.
	Window() int64
	// NextSend is when the pacer lets the next full-size packet go; at or
	// before now means at once.
	NextSend(now int64) int64
	// OnSent: an ack-eliciting packet of size bytes went out. appLimited
	// says the sender had nothing more to send, so what this packet's ACK
	// measures is the application's rate, not the path's.
	OnSent(now int64, pn uint64, size int, appLimited bool)
	// OnAck: one ACK's newly acknowledged and newly lost packets, and the
	// RTT sample it gave (zero if none).
	OnAck(now int64, acked, lost []uint64, rtt time.Duration)
	// SetPacketSize: the full packet size changed (path MTU discovery).
	SetPacketSize(size int)
}

// BBR is the bbr state machine with its pacer: a Conn's Congestion.
type BBR struct {
	b             *bbr
	p             pacer
	acked, lostPN []int64 // scratch for OnAck
}

var _ Congestion = (*BBR)(nil)

// NewBBR returns a controller for packets of packetSize bytes. srtt is the
// RTT known so far (zero if none); seed picks PROBE_BW's starting phase.
func NewBBR(packetSize int, srtt time.Duration, seed uint64) *BBR {
	return &BBR{b: newBBR(int64(packetSize), srtt, seed)}
}

// Window is the congestion window in bytes.
func (x *BBR) Window() int64 { return x.b.cwnd }

// NextSend is when the pacer has a full packet's budget again.
func (x *BBR) NextSend(now int64) int64 {
	if x.hasBudget(now) {
		return now
	}
	return x.p.nextSend(x.b.mss, x.b.pacingRate)
}

// hasBudget refills the pacer to now and reports whether a full packet may go.
func (x *BBR) hasBudget(now int64) bool {
	x.p.refill(now, x.b.pacingRate, x.b.maxBurst())
	return x.p.budget >= float64(x.b.mss)
}

// OnSent paces an ack-eliciting packet and starts its delivery-rate sample.
func (x *BBR) OnSent(now int64, pn uint64, size int, appLimited bool) {
	x.p.refill(now, x.b.pacingRate, x.b.maxBurst())
	x.p.spend(int64(size))
	x.b.onSent(now, int64(pn), int64(size), appLimited)
}

// OnAck feeds one ACK's newly acknowledged and lost packets to the model.
func (x *BBR) OnAck(now int64, acked, lost []uint64, rtt time.Duration) {
	x.acked, x.lostPN = x.acked[:0], x.lostPN[:0]
	for _, pn := range acked {
		x.acked = append(x.acked, int64(pn))
	}
	for _, pn := range lost {
		x.lostPN = append(x.lostPN, int64(pn))
	}
	x.b.onAck(now, x.acked, x.lostPN, rtt)
	if x.b.inflight == 0 && (cap(x.acked) > bbrScratchIdleCap || cap(x.lostPN) > bbrScratchIdleCap) {
		// Nothing in flight: the scratch a burst grew goes, as the sent
		// map's table does (releaseSent).
		x.acked, x.lostPN = nil, nil
	}
}

// bbrScratchIdleCap is the capacity of OnAck's scratch arrays kept while
// idle: a request/response pattern allocates nothing per ACK.
const bbrScratchIdleCap = 8

// SetPacketSize changes the full packet size (path MTU discovery).
func (x *BBR) SetPacketSize(size int) { x.b.mss = int64(size) }

// BBRStats is a snapshot of the controller.
type BBRStats struct {
	Mode       string // startup, drain, probe_bw, probe_rtt
	PacketSize uint64
	CWND       uint64
	PacingRate float64 // bytes per second
	BtlBw      float64 // bytes per second
	MinRTT     time.Duration
	Inflight   uint64
	LossEvents uint64
	LostBytes  uint64
}

// Stats returns a snapshot of the controller.
func (x *BBR) Stats() BBRStats {
	b := x.b
	return BBRStats{
		Mode: b.mode.String(), PacketSize: uint64(b.mss), CWND: uint64(b.cwnd), PacingRate: b.pacingRate,
		BtlBw: b.btlBw.get(), MinRTT: time.Duration(b.minRTT), Inflight: uint64(b.inflight),
		LossEvents: uint64(b.lossEvents), LostBytes: uint64(b.lost),
	}
}
