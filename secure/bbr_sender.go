package secure

import (
	"sync"
	"time"

	"github.com/apernet/quic-go/congestion"
	"github.com/apernet/quic-go/monotime"

	"github.com/swarmdb/swarmdb/internal/reliable"
)

// bbrSender plugs the BBR state machine and its pacer (internal/reliable) into quic-go through
// the congestion-control hook of the apernet fork (see quic.go for why the
// fork). quic-go calls it from the connection's run loop; Stats reads it from
// other goroutines, hence the lock. Loss detection stays quic-go's (RFC 9002:
// packet threshold 3, time threshold 9/8 RTT, probe timeouts that are not
// blocked by the window, lost frames re-sent in new packets, so a lost
// retransmission is detected like any other loss).
type bbrSender struct {
	mu    sync.Mutex // guards everything below
	b     *reliable.BBR
	rtt   congestion.RTTStatsProvider
	ptos  int64 // OnRetransmissionTimeout calls (the fork makes none; kept honest)
	acked []uint64
	lost  []uint64
	// appIdle reports whether the application has no write pending (set by the
	// session; nil means never idle).
	appIdle func() bool
}

var _ congestion.CongestionControlEx = (*bbrSender)(nil)

func newBBRSender(mss int64, srtt time.Duration, seed uint64) *bbrSender {
	return &bbrSender{b: reliable.NewBBR(int(mss), srtt, seed)}
}

func (s *bbrSender) stats() reliable.BBRStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Stats()
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
	now := int64(monotime.Now())
	if t := s.b.NextSend(now); t > now {
		return monotime.Time(t)
	}
	return 0
}

func (s *bbrSender) HasPacingBudget(now monotime.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.HasBudget(int64(now))
}

// quic-go's own count of bytes in flight is the truth: it also drops packets
// without telling the controller (QueueProbePacket declares the oldest one lost
// when a probe timeout fires), so the controller's count follows quic-go's.

func (s *bbrSender) OnPacketSent(now monotime.Time, inflight congestion.ByteCount, pn congestion.PacketNumber, size congestion.ByteCount, ackEliciting bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ackEliciting {
		s.b.Spend(int64(now), int(size))
		return
	}
	s.b.SetInflight(int64(inflight) - int64(size))
	s.b.OnSent(int64(now), uint64(pn), int(size), s.appIdle != nil && s.appIdle())
}

func (s *bbrSender) CanSend(inflight congestion.ByteCount) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(inflight) < s.b.Window()
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
		s.acked = append(s.acked, uint64(a.PacketNumber))
		after -= int64(a.BytesAcked)
	}
	for _, l := range lost {
		s.lost = append(s.lost, uint64(l.PacketNumber))
		after -= int64(l.BytesLost)
	}
	s.b.SetInflight(int64(prior))
	defer func() { s.b.SetInflight(after) }()
	var rtt time.Duration
	if s.rtt != nil && len(acked) > 0 {
		rtt = s.rtt.LatestRTT()
	}
	s.b.OnAck(int64(now), s.acked, s.lost, rtt)
}

func (s *bbrSender) OnRetransmissionTimeout(bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ptos++
}

func (s *bbrSender) SetMaxDatagramSize(size congestion.ByteCount) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.SetPacketSize(int(size))
}

func (s *bbrSender) InSlowStart() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.InStartup()
}

func (s *bbrSender) InRecovery() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.InRecovery()
}

func (s *bbrSender) GetCongestionWindow() congestion.ByteCount {
	s.mu.Lock()
	defer s.mu.Unlock()
	return congestion.ByteCount(s.b.Window())
}
