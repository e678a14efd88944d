package udpopt

import (
	"bytes"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// One WriteSegments call arrives as separate datagrams of segSize bytes, the last one
// shorter, in order and intact; through offload where the kernel has it.
func TestWriteSegments(t *testing.T) {
	rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	sc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	w := NewSegmentWriter(sc)
	if runtime.GOOS == "linux" && !w.GSO() {
		t.Fatal("no segmentation offload on a Linux UDP socket")
	}
	const seg = 1400
	b := make([]byte, 3*seg+100)
	for i := range b {
		b[i] = byte(i / seg) // each datagram its own byte
	}
	if err := w.WriteSegments(b, seg, rc.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS == "linux" && !w.GSO() {
		t.Fatal("the kernel refused segmentation offload on loopback")
	}
	buf := make([]byte, 65536)
	for i, want := range []int{seg, seg, seg, 100} {
		_ = rc.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := rc.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if n != want || !bytes.Equal(buf[:n], bytes.Repeat([]byte{byte(i)}, n)) {
			t.Fatalf("datagram %d: %d bytes starting %v, want %d bytes of %d", i, n, buf[:min(n, 4)], want, i)
		}
	}
}

// A conn that is not a kernel socket gets the datagrams one by one.
func TestWriteSegmentsFallback(t *testing.T) {
	rec := &recordingConn{}
	w := NewSegmentWriter(rec)
	if w.GSO() {
		t.Fatal("offload claimed on a conn without a socket")
	}
	if err := w.WriteSegments(make([]byte, 250), 100, netip.MustParseAddrPort("127.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	if len(rec.sizes) != 3 || rec.sizes[0] != 100 || rec.sizes[1] != 100 || rec.sizes[2] != 50 {
		t.Fatalf("wrote %v, want [100 100 50]", rec.sizes)
	}
}

type recordingConn struct {
	net.PacketConn
	sizes []int
}

func (c *recordingConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.sizes = append(c.sizes, len(b))
	return len(b), nil
}
