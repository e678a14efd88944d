package secure

import (
	"sync"
	"time"

	"github.com/apernet/quic-go/congestion"
	"github.com/apernet/quic-go/monotime"
)

// bbrSender plugs the bbr state machine and its pacer into quic-go through
// the congestion-control hook of the apernet fork (see quic.go for why the
// fork). quic-go calls it from the connection's run loop; Stats reads it from
// other goroutines, hence the lock. Loss detection stays quic-go's (RFC 9002:
// packet threshold 3, time threshold 9/8 RTT, probe timeouts that are not
// blocked by the window, lost frames re-sent in new packets, so a lost
// retransmission is detected like any other loss).
type bbrSender struct {
	mu    sync.Mutex // guards everything below
	b     *bbr
	p     pacer
	rtt   congestion.RTTStatsProvider
	ptos  int64 // OnRetransmissionTimeout calls (the fork makes none; kept honest)
	acked []int64
	lost  []int64
	// appIdle reports whether the application has no write pending (set by the
	// session; nil means never idle).
	appIdle func() bool
}

var _ congestion.CongestionControlEx = (*bbrSender)(nil)

func newBBRSender(mss int64, srtt time.Duration, seed uint64) *bbrSender {
	return &bbrSender{b: newBBR(mss, srtt, seed)}
}

// bbrStats is a snapshot for SessionStats.
type bbrStats struct {
	Mode       string
	MSS        uint64 // the packet size quic-go reports (path MTU discovery raises it)
	CWND       uint64
	PacingRate float64 // bytes per second
	BtlBw      float64 // bytes per second
	MinRTT     time.Duration
	Inflight   uint64
	LossEvents uint64
	LostBytes  uint64
}

func (s *bbrSender) stats() bbrStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b
	return bbrStats{
		Mode: b.mode.String(), MSS: uint64(b.mss), CWND: uint64(b.cwnd), PacingRate: b.pacingRate, BtlBw: b.btlBw.get(),
		MinRTT: time.Duration(b.minRTT), Inflight: uint64(b.inflight), LossEvents: uint64(b.lossEvents), LostBytes: uint64(b.lost),
	}
}

func (s *bbrSender) SetRTTStatsProvider(p congestion.RTTStatsProvider) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rtt = p
}

// TimeUntilSend is when the pacer allows the next packet; zero means now.
func (s *bbrSender) TimeUntilSend(congestion.ByteCount) monotime.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p.budget >= float64(s.b.mss) {
		return 0
	}
	return monotime.Time(s.p.nextSend(s.b.mss, s.b.pacingRate))
}

func (s *bbrSender) HasPacingBudget(now monotime.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.p.refill(int64(now), s.b.pacingRate, s.b.maxBurst())
	return s.p.budget >= float64(s.b.mss)
}

// quic-go's own count of bytes in flight is the truth: it also drops packets
// without telling the controller (QueueProbePacket declares the oldest one lost
// when a probe timeout fires), so the controller's count follows quic-go's.

func (s *bbrSender) OnPacketSent(now monotime.Time, inflight congestion.ByteCount, pn congestion.PacketNumber, size congestion.ByteCount, ackEliciting bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	burst := s.b.maxBurst()
	s.p.refill(int64(now), s.b.pacingRate, burst)
	full := s.p.full(burst)
	s.p.spend(int64(size))
	if ackEliciting {
		s.b.inflight = int64(inflight) - int64(size)
		s.b.onSent(int64(now), int64(pn), int64(size), full, s.appIdle != nil && s.appIdle())
	}
}

func (s *bbrSender) CanSend(inflight congestion.ByteCount) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(inflight) < s.b.cwnd
}

func (s *bbrSender) MaybeExitSlowStart() {}

// OnPacketAcked and OnCongestionEvent are the per-packet calls; BBR works on
// whole ACKs, in OnCongestionEventEx.
func (s *bbrSender) OnPacketAcked(congestion.PacketNumber, congestion.ByteCount, congestion.ByteCount, monotime.Time) {
}

func (s *bbrSender) OnCongestionEvent(congestion.PacketNumber, congestion.ByteCount, congestion.ByteCount) {
}

func (s *bbrSender) OnCongestionEventEx(prior congestion.ByteCount, now monotime.Time, acked []congestion.AckedPacketInfo, lost []congestion.LostPacketInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acked, s.lost = s.acked[:0], s.lost[:0]
	after := int64(prior)
	for _, a := range acked {
		s.acked = append(s.acked, int64(a.PacketNumber))
		after -= int64(a.BytesAcked)
	}
	for _, l := range lost {
		s.lost = append(s.lost, int64(l.PacketNumber))
		after -= int64(l.BytesLost)
	}
	s.b.inflight = int64(prior)
	defer func() { s.b.inflight = max(after, 0) }()
	var rtt time.Duration
	if s.rtt != nil && len(acked) > 0 {
		rtt = s.rtt.LatestRTT()
	}
	s.b.onAck(int64(now), s.acked, s.lost, rtt)
}

func (s *bbrSender) OnRetransmissionTimeout(bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ptos++
}

func (s *bbrSender) SetMaxDatagramSize(size congestion.ByteCount) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.mss = int64(size)
}

func (s *bbrSender) InSlowStart() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.mode == bbrStartup
}

func (s *bbrSender) InRecovery() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.inRecovery
}

func (s *bbrSender) GetCongestionWindow() congestion.ByteCount {
	s.mu.Lock()
	defer s.mu.Unlock()
	return congestion.ByteCount(s.b.cwnd)
}
