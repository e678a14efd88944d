package udpopt

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// readWait bounds each read of these tests: everything goes over loopback, so it only
// matters when a datagram is lost, which fails the test.
const readWait = 2 * time.Second

// loopbackPair returns a receiving and a sending socket on 127.0.0.1.
func loopbackPair(t *testing.T) (rc, sc *net.UDPConn) {
	t.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	return listen(), listen()
}

// datagram is the n-byte datagram number i of a test: every byte says which datagram
// and where in it, so a datagram cut or merged in the wrong place does not compare
// equal.
func datagram(i, n int) []byte {
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i*31 + j)
	}
	return b
}

// readDatagrams reads until it has want datagrams, all from sc, and returns them with
// the number of reads it took.
func readDatagrams(t *testing.T, r *SegmentReader, rc, sc *net.UDPConn, want int) (got [][]byte, reads int) {
	t.Helper()
	buf := make([]byte, 64<<10)
	for len(got) < want {
		_ = rc.SetReadDeadline(time.Now().Add(readWait))
		s, err := r.Read(buf)
		if err != nil {
			t.Fatalf("read %d, after %d datagrams: %v", reads+1, len(got), err)
		}
		reads++
		if s.Truncated {
			t.Fatalf("read %d truncated", reads)
		}
		if s.From != sc.LocalAddr().(*net.UDPAddr).AddrPort() {
			t.Fatalf("read %d from %v", reads, s.From)
		}
		for d, ok := s.Next(); ok; d, ok = s.Next() {
			got = append(got, bytes.Clone(d))
		}
	}
	return got, reads
}

func checkDatagrams(t *testing.T, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d datagrams, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("datagram %d: %d bytes starting %v, want %d bytes starting %v",
				i, len(got[i]), got[i][:min(len(got[i]), 4)], len(want[i]), want[i][:min(len(want[i]), 4)])
		}
	}
}

// A burst sent with segmentation offload comes back as its datagrams, in order and
// intact, the short last one included; on Linux in one read per burst (the kernel hands
// the segmented buffer over whole). Two bursts of different segment sizes stay apart.
func TestSegmentReaderGSO(t *testing.T) {
	rc, sc := loopbackPair(t)
	gro := SetGRO(rc)
	if runtime.GOOS == "linux" && !gro {
		t.Fatal("SetGRO reported false on a Linux UDP socket")
	}
	r := NewSegmentReader(rc)
	w := NewSegmentWriter(sc)
	to := rc.LocalAddr().(*net.UDPAddr).AddrPort()

	var want [][]byte
	burst := func(seg int, sizes ...int) {
		t.Helper()
		var b []byte
		for _, n := range sizes {
			d := datagram(len(want), n)
			want = append(want, d)
			b = append(b, d...)
		}
		if err := w.WriteSegments(b, seg, to); err != nil {
			t.Fatal(err)
		}
	}
	burst(1200, 1200, 1200, 1200, 1200, 1200, 1200, 1200, 300) // a short last one
	burst(500, 500, 500, 500)                                  // all full
	got, reads := readDatagrams(t, r, rc, sc, len(want))
	checkDatagrams(t, got, want)
	t.Logf("%d datagrams in %d reads (GSO %v, GRO %v)", len(got), reads, w.GSO(), gro)
	if w.GSO() && gro && reads != 2 {
		t.Fatalf("%d reads for 2 bursts: the kernel did not coalesce", reads)
	}
}

// Datagrams sent one by one, of mixed sizes and one empty, are read one by one: none is
// merged with the next, whatever the reader gets.
func TestSegmentReaderSeparate(t *testing.T) {
	rc, sc := loopbackPair(t)
	SetGRO(rc)
	r := NewSegmentReader(rc)
	var want [][]byte
	for i, n := range []int{1200, 1200, 100, 1200, 0, 1200, 1200, 1472, 7} {
		d := datagram(i, n)
		want = append(want, d)
		if _, err := sc.WriteTo(d, rc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := readDatagrams(t, r, rc, sc, len(want))
	checkDatagrams(t, got, want)
}

// A run longer than the buffer is reported truncated and yields only the datagrams
// that fit whole; a single datagram longer than the buffer yields none.
func TestSegmentReaderTruncated(t *testing.T) {
	rc, sc := loopbackPair(t)
	gro := SetGRO(rc)
	r := NewSegmentReader(rc)
	w := NewSegmentWriter(sc)
	to := rc.LocalAddr().(*net.UDPAddr).AddrPort()
	read := func(buf []byte) Segments {
		t.Helper()
		_ = rc.SetReadDeadline(time.Now().Add(readWait))
		s, err := r.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	if _, err := sc.WriteTo(datagram(0, 2000), rc.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	s := read(make([]byte, 1000))
	if d, ok := s.Next(); !s.Truncated || ok {
		t.Fatalf("a 2000-byte datagram in 1000 bytes: truncated %v, got %d bytes (%v)", s.Truncated, len(d), ok)
	}

	if !w.GSO() || !gro {
		t.Skip("no offload: no run to truncate")
	}
	var b []byte
	for i := range 10 {
		b = append(b, datagram(i, 1200)...)
	}
	if err := w.WriteSegments(b, 1200, to); err != nil {
		t.Fatal(err)
	}
	s = read(make([]byte, 5000)) // four datagrams and a piece
	if !s.Truncated {
		t.Fatal("a 12,000-byte run in 5000 bytes not reported truncated")
	}
	var got [][]byte
	for d, ok := s.Next(); ok; d, ok = s.Next() {
		got = append(got, d)
	}
	checkDatagrams(t, got, [][]byte{datagram(0, 1200), datagram(1, 1200), datagram(2, 1200), datagram(3, 1200)})
}

// Appending to a datagram of a run cannot overwrite the datagram after it.
func TestSegmentsNextCapacity(t *testing.T) {
	buf := append(datagram(0, 100), datagram(1, 100)...)
	s := Segments{rest: buf, size: 100, more: true}
	d, _ := s.Next()
	_ = append(d, 0xff)
	if next, _ := s.Next(); !bytes.Equal(next, datagram(1, 100)) {
		t.Fatal("appending to the first datagram changed the second")
	}
	if _, ok := s.Next(); ok {
		t.Fatal("a third datagram out of two")
	}
}

// Reading a datagram from a kernel socket allocates nothing.
func TestSegmentReaderAllocs(t *testing.T) {
	rc, sc := loopbackPair(t)
	SetGRO(rc)
	r := NewSegmentReader(rc)
	const runs = 50
	for i := range runs + 1 { // AllocsPerRun runs once more to warm up
		if _, err := sc.WriteTo(datagram(i, 100), rc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	_ = rc.SetReadDeadline(time.Now().Add(readWait))
	buf := make([]byte, 64<<10)
	allocs := testing.AllocsPerRun(runs, func() {
		s, err := r.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		for _, ok := s.Next(); ok; _, ok = s.Next() {
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per read", allocs)
	}
}

// A conn that is not a kernel socket is read with ReadFrom, one datagram per read.
func TestSegmentReaderFallback(t *testing.T) {
	if SetGRO(fakeConn{}) {
		t.Fatal("SetGRO reported true on a conn without a file descriptor")
	}
	from := netip.MustParseAddrPort("10.0.0.1:4000")
	q := &queueConn{from: net.UDPAddrFromAddrPort(from), in: [][]byte{datagram(0, 1200), datagram(1, 1200), {}, datagram(3, 10)}}
	want := append([][]byte(nil), q.in...)
	r := NewSegmentReader(q)
	var got [][]byte
	buf := make([]byte, 64<<10)
	for range want {
		s, err := r.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if s.From != from || s.Truncated {
			t.Fatalf("read from %v, truncated %v", s.From, s.Truncated)
		}
		d, ok := s.Next()
		if !ok {
			t.Fatal("a read without its datagram")
		}
		got = append(got, bytes.Clone(d))
		if _, ok := s.Next(); ok {
			t.Fatal("two datagrams in one ReadFrom")
		}
	}
	checkDatagrams(t, got, want)
	if _, err := r.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read of an empty queue: %v, want net.ErrClosed", err)
	}
}

// queueConn returns its queued datagrams, then net.ErrClosed.
type queueConn struct {
	net.PacketConn
	from net.Addr
	in   [][]byte
}

var _ net.PacketConn = (*queueConn)(nil)

func (c *queueConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if len(c.in) == 0 {
		return 0, nil, net.ErrClosed
	}
	n := copy(b, c.in[0])
	c.in = c.in[1:]
	return n, c.from, nil
}
