package reliable

import (
	"testing"
	"time"
)

// TestWindowTunerGrows: the window doubles only when the reads since the
// last raise would drain it in under two round trips, never past max, and
// not before there is an RTT sample or a first raise to measure from.
func TestWindowTunerGrows(t *testing.T) {
	const ms = int64(time.Millisecond)
	const rtt = 80 * time.Millisecond
	const w, maxW = 8 << 20, 32 << 20
	cases := []struct {
		name  string
		first bool          // no raise went out before
		srtt  time.Duration // zero: no sample
		since int64         // since the last raise
		read  uint64        // read since the last raise
		want  uint64
	}{
		{"first raise", true, rtt, 10 * ms, 2 << 20, w},
		{"no RTT sample", false, 0, 10 * ms, 2 << 20, w},
		{"a quarter in 10 ms: the window lasts 40 ms", false, rtt, 10 * ms, 2 << 20, 2 * w},
		{"a quarter in 39 ms: 156 ms, under two RTTs", false, rtt, 39 * ms, 2 << 20, 2 * w},
		{"a quarter in 41 ms: 164 ms, over two RTTs", false, rtt, 41 * ms, 2 << 20, w},
		{"a reader that stopped", false, rtt, 10 * ms, 0, w},
	}
	for _, c := range cases {
		var tu windowTuner
		now := int64(time.Hour)
		if !c.first {
			tu.grow(now, c.srtt, 0, w, maxW) // the last raise
		}
		if got := tu.grow(now+c.since, c.srtt, c.read, w, maxW); got != c.want {
			t.Errorf("%s: window %d, want %d", c.name, got, c.want)
		}
	}
	var tu windowTuner
	win := uint64(w)
	now, read := int64(time.Hour), uint64(0)
	for range 10 {
		now += ms
		read += win / 4
		win = tu.grow(now, rtt, read, win, maxW)
	}
	if win != maxW {
		t.Errorf("after ten fast raises the window is %d, want the max %d", win, uint64(maxW))
	}
}

// TestConnWindowGrowsForFastReader: at 80 ms RTT and 100 MB/s, a 1 MiB
// stream window holds one stream to about 1 MiB per round trip; a window that
// may grow to 16 MiB lets it approach the path's rate, and the receiver's
// windows end up past the path's BDP. The data arrives intact either way
// (transfer checks every byte).
func TestConnWindowGrowsForFastReader(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	path := netPath{delay: 40 * time.Millisecond, rate: 100e6, queueBytes: 1 << 20}
	const size = 48 << 20
	fixed := newConnPair(t, path, 1, Config{StreamWindow: 1 << 20})
	tookFixed, _ := fixed.transfer(size, 5*time.Minute)
	tuned := newConnPair(t, path, 1, Config{StreamWindow: 1 << 20, MaxStreamWindow: 16 << 20})
	tookTuned, _ := tuned.transfer(size, 5*time.Minute)
	rate := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
	t.Logf("48 MiB at 80 ms RTT: fixed 1 MiB window %v (%.1f MB/s), growing to 16 MiB %v (%.1f MB/s); receiver's connection window %d",
		tookFixed, rate(tookFixed), tookTuned, rate(tookTuned), tuned.conns[1].connWindow)
	if tookTuned*3 > tookFixed {
		t.Errorf("the growing window took %v, the fixed one %v: want at least three times faster", tookTuned, tookFixed)
	}
	if bdp := uint64(100e6 * 0.08); tuned.conns[1].connWindow < bdp {
		t.Errorf("the receiver's connection window is %d, below the path's BDP %d", tuned.conns[1].connWindow, bdp)
	}
	if tuned.conns[1].connWindow > 32<<20 {
		t.Errorf("the receiver's connection window is %d, past its max %d", tuned.conns[1].connWindow, 32<<20)
	}
}

// TestSendBufferGrowsWithPeerWindow: a writer blocked on a full send buffer
// is woken when the peer's window grows (MAX_STREAM_DATA), since the buffer
// grows with it; without the wake it would sleep with room to write (found
// as a 64 MiB NAT-lab transfer that hung).
func TestSendBufferGrowsWithPeerWindow(t *testing.T) {
	n := newConnPair(t, netPath{delay: 5 * time.Millisecond}, 1, Config{StreamWindow: 64 << 10, MaxStreamWindow: 1 << 20})
	a := n.conns[0]
	id, err := a.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 16<<10)
	for {
		k, err := a.Write(id, chunk)
		if err != nil {
			t.Fatal(err)
		}
		if k < len(chunk) {
			break
		}
	}
	a.Wake(nil)
	if w := a.Writable(id); w != 0 {
		t.Fatalf("the buffer is full, yet %d bytes are writable", w)
	}
	// The peer's window grew to 1 MiB: what we may have outstanding is 1 MiB.
	if err := n.inject(1, AppendMaxStreamData(nil, id, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if woke := a.Wake(nil); len(woke) != 1 || woke[0] != id {
		t.Errorf("the grown window woke %v, want the blocked writer of stream %d", woke, id)
	}
	if w := a.Writable(id); w <= 0 {
		t.Errorf("after the peer's window grew, %d bytes are writable", w)
	}
}
