package udpopt

import (
	"net"
	"net/netip"
	"sync/atomic"
)

// MaxSegments is the most datagrams one WriteSegments call hands the kernel (Linux
// refuses more than 64 segments in one send).
const MaxSegments = 64

// A SegmentWriter sends many datagrams to one address in one system call: UDP
// generic segmentation offload (UDP_SEGMENT, Linux 4.18+) hands the kernel one buffer
// that it cuts into datagrams of segSize bytes (the last may be shorter) after routing
// and netfilter, once, instead of once per datagram. Where the socket or the system
// cannot, it sends them one by one. Safe for concurrent use.
type SegmentWriter struct {
	conn net.PacketConn
	udp  *net.UDPConn // nil: not a kernel socket
	gso  atomic.Bool
}

// NewSegmentWriter returns a SegmentWriter on conn.
func NewSegmentWriter(conn net.PacketConn) *SegmentWriter {
	w := &SegmentWriter{conn: conn}
	if uc, ok := conn.(*net.UDPConn); ok {
		w.udp = uc
		w.gso.Store(gsoSupported(uc))
	}
	return w
}

// GSO reports whether the writer still uses segmentation offload.
func (w *SegmentWriter) GSO() bool { return w.gso.Load() }

// WriteSegments sends b to `to` as datagrams of segSize bytes, the last one possibly
// shorter. b must hold at most MaxSegments of them and fit one IP packet (65,507
// bytes with its headers). An error means some datagrams may not have been sent.
func (w *SegmentWriter) WriteSegments(b []byte, segSize int, to netip.AddrPort) error {
	if segSize <= 0 {
		segSize = len(b)
	}
	if len(b) > segSize && w.gso.Load() {
		_, _, err := w.udp.WriteMsgUDPAddrPort(b, segmentCmsg(segSize), to)
		if err == nil {
			return nil
		}
		if !gsoRefused(err) {
			return err
		}
		// The socket or the interface cannot offload (no checksum offload on the
		// route's device, say): from now on, one datagram per call.
		w.gso.Store(false)
	}
	for off := 0; off < len(b); off += segSize {
		if _, err := w.conn.WriteTo(b[off:min(off+segSize, len(b))], net.UDPAddrFromAddrPort(to)); err != nil {
			return err
		}
	}
	return nil
}
