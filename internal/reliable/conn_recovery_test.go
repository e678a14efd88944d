package reliable

import (
	"io"
	"testing"
	"time"
)

// Loss recovery through a Conn (RFC 9002 §6): losses chosen packet by
// packet, so that what is lost, and how it is found, is exact; and the
// quiet of an idle connection (RFC 9000 §13.2.1: ACK-only packets are not
// acknowledged).

// dropStreamCopies returns a drop filter for the first k packets from the
// client that carry stream id's byte at offset off, or its FIN if fin, and
// a count of the copies seen.
func dropStreamCopies(t *testing.T, id, off uint64, fin bool, k int) (func(int, []byte) bool, *int) {
	seen := new(int)
	return func(from int, pkt []byte) bool {
		if from != 0 {
			return false
		}
		_, frames := packetFrames(t, pkt)
		for _, f := range frames {
			if f.Type != FrameStream || f.StreamID != id {
				continue
			}
			if fin && f.Fin || !fin && f.Offset <= off && off < f.Offset+uint64(len(f.Data)) {
				*seen++
				return *seen <= k
			}
		}
		return false
	}, seen
}

// A lost retransmission is found like any other loss, by the packet
// threshold while data still flows: the transfer takes no PTO and little
// longer than without the losses.
func TestConnLostRetransmission(t *testing.T) {
	const delay = 20 * time.Millisecond
	const size = 1 << 20
	path := netPath{delay: delay, rate: 10e6}
	clean, _ := newConnPair(t, path, 1, Config{}).transfer(size, 10*time.Second)
	n := newConnPair(t, path, 1, Config{})
	var copies *int
	n.drop, copies = dropStreamCopies(t, 0, 150_000, false, 2)
	took, stall := n.transfer(size, 10*time.Second)
	s := n.conns[0].Stats()
	t.Logf("clean %v, with the byte lost twice %v (longest stall %v); %d copies, %d lost, %d PTOs", clean, took, stall, *copies, s.PacketsLost, s.ProbeTimeouts)
	if *copies != 3 {
		t.Fatalf("the byte went out %d times, want 3", *copies)
	}
	if s.ProbeTimeouts != 0 {
		t.Errorf("%d PTOs: the lost retransmission was not found by the thresholds", s.ProbeTimeouts)
	}
	if took > clean+4*delay {
		t.Errorf("the transfer took %v, %v without the losses", took, clean)
	}
}

// A lost tail, with nothing after it to reveal the loss, is found by the
// PTO's probes (RFC 9002 §6.2.4), a few RTTs at worst, even when probes are
// lost too; nothing like a one-second retransmission timeout.
func TestConnLostTail(t *testing.T) {
	const delay = 20 * time.Millisecond
	for _, tc := range []struct {
		lost  int // copies of the tail lost
		limit time.Duration
	}{
		// One RTT, a PTO of about 2 RTTs (srtt + 4·rttvar + max_ack_delay),
		// and the probe's one-way trip; each PTO more doubles.
		{1, 200 * time.Millisecond},
		{2, 200 * time.Millisecond}, // both probes of the first PTO carry the tail
		{3, 450 * time.Millisecond},
	} {
		n := newConnPair(t, netPath{delay: delay}, 1, Config{})
		n.transfer(64<<10, time.Second) // an RTT sample, and a stream to skip
		n.settle(time.Second)
		a, b := n.conns[0], n.conns[1]
		id, _ := a.OpenStream()
		var copies *int
		n.drop, copies = dropStreamCopies(t, id, 0, true, tc.lost)
		a.Write(id, make([]byte, 12<<10))
		a.CloseWrite(id)
		start := n.now
		n.run(5*time.Second, func() bool {
			b.AcceptStream()
			if b.streams[id] == nil {
				return false
			}
			_, err := readAll(b, id)
			return err == io.EOF
		})
		took := time.Duration(n.now - start)
		t.Logf("tail lost %d times: %v (srtt %v), %d PTOs", tc.lost, took, a.Stats().SRTT, a.Stats().ProbeTimeouts)
		if *copies <= tc.lost {
			t.Errorf("tail lost %d times: sent %d times", tc.lost, *copies)
		}
		if took > tc.limit {
			t.Errorf("tail lost %d times: took %v, want under %v", tc.lost, took, tc.limit)
		}
	}
}

// ACK-only packets elicit no ACK, so an idle pair goes quiet: after a bulk
// transfer and an exchange on other streams, no packet is left on the
// wire, no timer is armed and nothing waits on the pacer, on both sides.
func TestConnGoesQuiet(t *testing.T) {
	n := newConnPair(t, netPath{delay: 10 * time.Millisecond, rate: 20e6, loss: 0.01}, 1, Config{})
	a, b := n.conns[0], n.conns[1]
	n.transfer(1<<20, 10*time.Second)
	id, _ := b.OpenStream()
	b.Write(id, []byte("question"))
	b.CloseWrite(id)
	n.run(time.Second, func() bool {
		a.AcceptStream()
		_, err := readAll(a, id)
		return err == io.EOF
	})
	a.Write(id, []byte("answer"))
	a.CloseWrite(id)
	n.run(time.Second, func() bool {
		_, err := readAll(b, id)
		return err == io.EOF
	})
	took := n.settle(2 * time.Second)
	t.Logf("quiet %v after the exchange", took)
	for side, c := range n.conns {
		if c.Timer() != 0 || c.PacingDelay(n.now) != 0 || !c.Idle() || c.Send(n.now, nil) != nil {
			t.Errorf("side %d: Timer %d, PacingDelay %d, Idle %t", side, c.Timer(), c.PacingDelay(n.now), c.Idle())
		}
	}
	// One more ACK-only packet, as a late copy of one would be: still
	// nothing to answer.
	if err := n.inject(0, AppendAck(nil, []AckRange{{Smallest: 0, Largest: b.nextPN - 1}}, 0)); err != nil {
		t.Fatal(err)
	}
	if b.Timer() != 0 || b.Send(n.now, nil) != nil {
		t.Errorf("an ACK-only packet made the peer answer or arm a timer (%d)", b.Timer())
	}
}
