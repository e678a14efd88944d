package reliable

import (
	"testing"
	"time"
)

// Path MTU discovery (pmtu.go) on simulated paths that drop every packet
// larger than their MTU.

const testMaxPacketSize = 1452 // what the secure package passes

// pmtuWatch records, for each side, the MTU probes it sends, and checks
// every other packet, which must parse, against the packet size of the
// moment.
type pmtuWatch struct {
	probes      []int   // their sizes, in order
	probeTimes  []int64 // when they went out
	largestData int     // the largest packet that was not a probe
}

func watchPMTU(t *testing.T, n *connPair) (client, server *pmtuWatch) {
	var w [2]pmtuWatch
	n.watch = func(from int, pkt []byte) {
		_, frames := packetFrames(t, pkt)
		if len(frames) == 2 && frames[0].Type == FramePing && frames[1].Type == FramePadding {
			w[from].probes = append(w[from].probes, len(pkt))
			w[from].probeTimes = append(w[from].probeTimes, n.now)
			return
		}
		if size := n.conns[from].Stats().PacketSize; len(pkt) > size {
			t.Errorf("side %d: a %d-byte packet with packet size %d", from, len(pkt), size)
		}
		w[from].largestData = max(w[from].largestData, len(pkt))
	}
	return &w[0], &w[1]
}

// A bulk transfer over paths of several MTUs: the sender's packet size
// ends within pmtuSearchGap of the path's MTU, or stays where it started
// when the path carries nothing larger; its data packets grow to it; the
// congestion controller counts in it and, the path having no other loss
// (no bottleneck queue), hears of none.
func TestConnPMTUDiscovery(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	for _, tc := range []struct {
		name    string
		mtu     int // 0: no limit
		lo, hi  int // the packet size the search must end in
		probes  int // how many it may take
		maxSize int // Config.MaxPacketSize
	}{
		{"path carries the ceiling", 0, testMaxPacketSize, testMaxPacketSize, 1, testMaxPacketSize},
		{"path MTU at the ceiling", testMaxPacketSize, testMaxPacketSize, testMaxPacketSize, 1, testMaxPacketSize},
		{"path MTU 1300", 1300, 1300 - pmtuSearchGap + 1, 1300, 6, testMaxPacketSize},
		{"path MTU 1400", 1400, 1400 - pmtuSearchGap + 1, 1400, 6, testMaxPacketSize},
		// The start size is all the path carries: every probe is lost,
		// nothing changes.
		{"path MTU at the start size", DefaultPacketSize, DefaultPacketSize, DefaultPacketSize, 6, testMaxPacketSize},
		{"no discovery", 0, DefaultPacketSize, DefaultPacketSize, 0, 0},
		{"ceiling below the start size", 0, DefaultPacketSize, DefaultPacketSize, 0, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newConnPair(t, netPath{delay: 10 * time.Millisecond, mtu: tc.mtu}, 1, Config{MaxPacketSize: tc.maxSize})
			w, rw := watchPMTU(t, n)
			// Bulk data until the search is over, and a little more.
			for i := 0; i < 2 || n.conns[0].pmtu.next(n.conns[0].packetSize) != 0; i++ {
				if i == 40 {
					t.Fatalf("the search is not over after 40 transfers; probes %v", w.probes)
				}
				n.transfer(128<<10, 10*time.Second)
			}
			s := n.conns[0].Stats()
			t.Logf("packet size %d after probes %v (%d lost); largest data packet %d; %d packets dropped by the MTU",
				s.PacketSize, w.probes, s.MTUProbesLost, w.largestData, n.mtuDrops[0])
			if s.PacketSize < tc.lo || s.PacketSize > tc.hi {
				t.Errorf("packet size %d, want %d-%d", s.PacketSize, tc.lo, tc.hi)
			}
			// Each size that fails is tried pmtuMaxProbes times.
			if len(w.probes) > tc.probes*pmtuMaxProbes || uint64(len(w.probes)) != s.MTUProbes {
				t.Errorf("%d probes (stats %d), want at most %d", len(w.probes), s.MTUProbes, tc.probes*pmtuMaxProbes)
			}
			if len(w.probes) > 0 && w.probes[0] != tc.maxSize {
				t.Errorf("first probe %d bytes, want the ceiling %d", w.probes[0], tc.maxSize)
			}
			if w.largestData != s.PacketSize {
				t.Errorf("largest data packet %d, packet size %d", w.largestData, s.PacketSize)
			}
			// The receiver sends ACKs and window updates, small whatever
			// its packet size; it may probe too, while it sends them.
			t.Logf("receiver: packet size %d, probes %v, largest packet %d", n.conns[1].Stats().PacketSize, rw.probes, rw.largestData)
			if int(s.MTUProbesLost) != n.mtuDrops[0] || s.PacketsLost != 0 {
				t.Errorf("the path's MTU dropped %d packets, %d of them probes; %d other packets lost", n.mtuDrops[0], s.MTUProbesLost, s.PacketsLost)
			}
			if bbr := n.conns[0].cc.(*BBR).Stats(); bbr.PacketSize != uint64(s.PacketSize) || bbr.LossEvents != 0 {
				t.Errorf("the controller's packet size %d (want %d), %d loss events", bbr.PacketSize, s.PacketSize, bbr.LossEvents)
			}
		})
	}
}

// Lost probes cost no throughput: a bulk transfer through a bottleneck on a
// path with MTU 1300 takes no longer with discovery (two probes lost, then
// larger packets) than without.
func TestConnPMTUProbeLossCostsNothing(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	path := netPath{delay: 20 * time.Millisecond, rate: 20e6, mtu: 1300}
	const size = 8 << 20
	without, _ := newConnPair(t, path, 1, Config{}).transfer(size, 10*time.Second)
	n := newConnPair(t, path, 1, Config{MaxPacketSize: testMaxPacketSize})
	with, _ := n.transfer(size, 10*time.Second)
	s := n.conns[0].Stats()
	t.Logf("8 MiB without discovery %v, with %v (packet size %d, %d of %d probes lost)", without, with, s.PacketSize, s.MTUProbesLost, s.MTUProbes)
	if s.MTUProbesLost == 0 {
		t.Fatal("no probe was lost: the test tests nothing")
	}
	if with > without+without/50 {
		t.Errorf("with discovery %v, without %v", with, without)
	}
}

// Probes go one at a time, at most one per RTT, and only while the
// connection is busy: an idle connection sends nothing, even with the
// search unfinished, and the search goes on when data flows again.
func TestConnPMTUProbePacing(t *testing.T) {
	const delay = 20 * time.Millisecond
	n := newConnPair(t, netPath{delay: delay, mtu: 1300}, 1, Config{MaxPacketSize: testMaxPacketSize})
	w, _ := watchPMTU(t, n)
	a, b := n.conns[0], n.conns[1]
	id, _ := a.OpenStream()
	// One small message: an RTT sample, then the first probe rides with
	// the next write.
	a.Write(id, []byte("hello"))
	n.settle(time.Second)
	if len(w.probes) != 0 {
		t.Fatalf("probes %v before an RTT sample", w.probes)
	}
	a.Write(id, []byte("again"))
	n.settle(time.Second)
	if len(w.probes) != 1 {
		t.Fatalf("probes %v after the second message", w.probes)
	}
	// Idle for a while: the lost probe is found lost, and nothing else goes.
	sent := n.sent
	n.alarm = n.now + int64(5*time.Second)
	n.settle(10 * time.Second)
	if d := n.sent[0] - sent[0]; d > 3 {
		t.Errorf("an idle connection sent %d packets", d)
	}
	if len(w.probes) != 1 || a.Timer() != 0 || b.Timer() != 0 {
		t.Errorf("idle: probes %v, timers %d and %d", w.probes, a.Timer(), b.Timer())
	}
	// Busy again: the search goes on and finishes.
	b.AcceptStream()
	readAll(b, id)
	for i := 0; i == 0 || a.pmtu.next(a.packetSize) != 0; i++ {
		if i == 40 {
			t.Fatalf("the search is not over after 40 transfers; probes %v", w.probes)
		}
		n.transfer(1<<20, 10*time.Second)
	}
	s := a.Stats()
	if s.PacketSize < 1300-pmtuSearchGap+1 || s.PacketSize > 1300 {
		t.Errorf("packet size %d after probes %v", s.PacketSize, w.probes)
	}
	// The gate is the smoothed RTT when each probe went, which may differ from
	// the final one by a rounding (40 ms against 40.000002 ms).
	srtt := int64(s.SRTT) * 99 / 100
	for i := 1; i < len(w.probeTimes); i++ {
		if gap := w.probeTimes[i] - w.probeTimes[i-1]; gap < srtt {
			t.Errorf("probes %d and %d %v apart, under an RTT (%v)", i-1, i, time.Duration(gap), s.SRTT)
		}
	}
	t.Logf("probes %v at %v", w.probes, w.probeTimes)
}

// A black hole: packets of the discovered size stop passing mid-transfer
// (the route changed). After a few probe timeouts the sender falls back to
// the start size, the transfer finishes, and the search finds the new MTU.
func TestConnPMTUBlackHole(t *testing.T) {
	n := newConnPair(t, netPath{delay: 10 * time.Millisecond, rate: 20e6}, 1, Config{MaxPacketSize: testMaxPacketSize})
	n.transfer(1<<20, 10*time.Second)
	if s := n.conns[0].Stats().PacketSize; s != testMaxPacketSize {
		t.Fatalf("packet size %d before the route change", s)
	}
	n.path.mtu = 1300
	took, stall := n.transfer(4<<20, 30*time.Second)
	s := n.conns[0].Stats()
	t.Logf("4 MiB in %v (longest stall %v) across the change; packet size %d, %d black holes, %d PTOs",
		took, stall, s.PacketSize, s.MTUBlackHoles, s.ProbeTimeouts)
	if s.MTUBlackHoles != 1 {
		t.Errorf("%d black holes", s.MTUBlackHoles)
	}
	if s.PacketSize < 1300-pmtuSearchGap+1 || s.PacketSize > 1300 {
		t.Errorf("packet size %d after the change to 1300", s.PacketSize)
	}
}

// A path whose MTU is below the start size (which Config.PacketSize says
// every path carries) changes nothing: small messages still pass, every
// probe is lost, and the search ends without lowering the packet size.
func TestConnPMTUPathBelowStartSize(t *testing.T) {
	n := newConnPair(t, netPath{delay: 10 * time.Millisecond, mtu: 1000}, 1, Config{MaxPacketSize: testMaxPacketSize})
	w, _ := watchPMTU(t, n)
	a, b := n.conns[0], n.conns[1]
	id, _ := a.OpenStream()
	for i := range 100 {
		a.Write(id, make([]byte, 100))
		n.run(time.Second, func() bool {
			b.AcceptStream()
			p, _ := readAll(b, id)
			return len(p) == 100
		})
		if i > 0 && a.pmtu.next(a.packetSize) == 0 {
			break
		}
	}
	s := a.Stats()
	t.Logf("probes %v, packet size %d", w.probes, s.PacketSize)
	if s.PacketSize != DefaultPacketSize || a.pmtu.next(a.packetSize) != 0 || s.MTUProbesLost != s.MTUProbes {
		t.Errorf("packet size %d, search over %t, %d of %d probes lost", s.PacketSize, a.pmtu.next(a.packetSize) == 0, s.MTUProbesLost, s.MTUProbes)
	}
}

// Random loss does not end the search low: a size counts as too large only
// after pmtuMaxProbes probes of it are lost in a row. With one probe a size,
// 2 % loss each way settled a loaded lab run at 1412 of 1447 bytes.
func TestConnPMTURandomLoss(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		n := newConnPair(t, netPath{delay: 10 * time.Millisecond, loss: 0.05, mtu: 1400}, seed, Config{MaxPacketSize: testMaxPacketSize})
		w, _ := watchPMTU(t, n)
		for i := 0; i < 2 || n.conns[0].pmtu.next(n.conns[0].packetSize) != 0; i++ {
			if i == 60 {
				t.Fatalf("seed %d: the search is not over after 60 transfers; probes %v", seed, w.probes)
			}
			n.transfer(128<<10, 10*time.Second)
		}
		if s := n.conns[0].Stats(); s.PacketSize < 1400-pmtuSearchGap+1 || s.PacketSize > 1400 {
			t.Errorf("seed %d: packet size %d at 5 %% loss on a 1400-byte path; probes %v", seed, s.PacketSize, w.probes)
		}
	}
}
