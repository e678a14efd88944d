package natlab

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

// TestIsNeighbourDiscovery: ARP and IPv6 neighbour discovery cross the delay line at once;
// everything else, ICMPv6 echo included, is delayed.
func TestIsNeighbourDiscovery(t *testing.T) {
	eth := func(etherType uint16, payload ...byte) []byte {
		f := make([]byte, 12, 14+len(payload))
		f = append(f, byte(etherType>>8), byte(etherType))
		return append(f, payload...)
	}
	ipv6 := func(next, icmpType byte) []byte {
		h := make([]byte, 41)
		h[0], h[6], h[40] = 0x60, next, icmpType
		return eth(0x86dd, h...)
	}
	for _, c := range []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"arp", eth(0x0806, make([]byte, 28)...), true},
		{"ipv4-udp", eth(0x0800, make([]byte, 28)...), false},
		{"neighbour-solicitation", ipv6(58, 135), true},
		{"neighbour-advert", ipv6(58, 136), true},
		{"router-solicitation", ipv6(58, 133), true},
		{"echo-request", ipv6(58, 128), false},
		{"ipv6-udp", ipv6(17, 135), false},
		{"short", []byte{1, 2, 3}, false},
		{"ipv6-truncated", eth(0x86dd, 0x60), false},
	} {
		if got := isNeighbourDiscovery(c.frame); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestFrameQueue: held frames come out oldest first across the ring's wrap,
// a full queue refuses, and a frame larger than a buffer is held whole.
func TestFrameQueue(t *testing.T) {
	const n = 100
	q := newFrameQueue(n)
	for i := range n {
		if !q.push([]byte{byte(i), byte(i >> 8)}, time.Duration(i)) {
			t.Fatalf("push %d refused below the bound", i)
		}
	}
	if q.push([]byte{0}, 0) {
		t.Fatal("a full queue took a frame")
	}
	for i := range 10 {
		q.pop()
		if !q.push([]byte{byte(i)}, time.Duration(n+i)) {
			t.Fatalf("push after pop %d refused", i)
		}
	}
	for i := 10; i < n+10; i++ {
		f := q.at(0)
		if f.due != time.Duration(i) {
			t.Fatalf("frame %d came out with due %v", i, f.due)
		}
		q.pop()
	}
	if q.len() != 0 {
		t.Fatalf("%d frames left", q.len())
	}
	big := bytes.Repeat([]byte{7}, 3*lineSmallFrame)
	q.push(big, 0)
	if !bytes.Equal(q.at(0).data, big) {
		t.Error("a large frame was not held whole")
	}
}

// TestDelayLineLargeFrames: a frame larger than a ring slot crosses the line
// whole, and the far end completes its checksums. Unlike the lab's veths
// (vethPair), these pass TCP segmentation offload batches of up to 64 KiB as
// one frame, which the ring cannot hold and the socket queue carries
// (TP_STATUS_COPY). A TCP stream through the line must arrive intact.
func TestDelayLineLargeFrames(t *testing.T) {
	l := New(t)
	a, wire, b := l.addNamespace("a"), l.addNamespace("wire"), l.addNamespace("b")
	l.must(l.ip("", "link add a0 netns "+a+" type veth peer name lr0 netns "+wire,
		"link add b0 netns "+b+" type veth peer name lu0 netns "+wire))
	l.must(l.ip(a, "addr add 10.9.0.1/24 dev a0", "link set a0 up"))
	l.must(l.ip(b, "addr add 10.9.0.2/24 dev b0", "link set b0 up"))
	l.must(l.ip(wire, "link set lr0 up", "link set lu0 up"))
	var line *delayLine
	l.must(inNetns(nsPath(wire), func() (err error) {
		line, err = newDelayLine("lr0", "lu0")
		return err
	}))
	line.start()
	t.Cleanup(line.close) // runs before the lab's teardown
	line.setDelay(time.Millisecond)

	ln, err := (&nsNet{path: nsPath(b)}).ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(10, 9, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	want := make([]byte, 8<<20)
	rand.Read(want)
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.AcceptTCP()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(testutil.Scaled(20 * time.Second)))
		b, _ := io.ReadAll(c)
		got <- b
	}()
	c, err := (&nsNet{path: nsPath(a)}).Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(want); err != nil {
		t.Fatalf("%v; line %+v", err, line.stats())
	}
	c.Close()
	recv := <-got
	if !bytes.Equal(recv, want) {
		t.Fatalf("received %d bytes, not the %d sent", len(recv), len(want))
	}
	st := line.stats()
	t.Logf("the line forwarded %d frames, %d bytes (%d per frame): %+v", st.Frames, st.Bytes, st.Bytes/max(st.Frames, 1), st)
	if st.Frames == 0 || st.Bytes/st.Frames <= ringFrameSize {
		t.Errorf("frames averaged %d bytes: no offload batch crossed whole", st.Bytes/max(st.Frames, 1))
	}
	if st.KernelDrops+st.Overflow+st.TxErrors != 0 {
		t.Errorf("the line dropped frames: %+v", st)
	}
}
