package udpopt

import (
	"net"
	"net/netip"
)

// SetGRO turns on UDP generic receive offload (UDP_GRO, Linux 5.0+) for conn: the
// kernel may then hand a reader a run of datagrams of one flow in one buffer, each
// segSize bytes and the last possibly shorter, with a control message giving segSize;
// a SegmentReader splits it again. A burst sent with UDP_SEGMENT (SegmentWriter) over
// loopback then arrives whole, and a NIC's GRO merges bursts from the wire: one system
// call per run instead of one per datagram.
//
// It reports whether the option took. Sockets without a file descriptor (pion's vnet)
// and systems other than Linux report false. Once it took, conn must be read only
// through a SegmentReader: a plain read would take a run for one datagram.
func SetGRO(conn net.PacketConn) bool {
	raw, ok := rawConn(conn)
	return ok && setGRO(raw)
}

// A SegmentReader reads a socket's datagrams, a whole run of them per system call
// where the kernel coalesces them (SetGRO). On a conn that is not a *net.UDPConn (test
// fakes, pion's vnet) it reads one datagram per call with ReadFrom. A read allocates
// nothing on a *net.UDPConn. Not safe for concurrent use: one reader per read loop.
type SegmentReader struct {
	conn net.PacketConn
	udp  *net.UDPConn // nil: not a kernel socket
	oob  []byte       // the control messages of the last read
}

// oobSize holds the UDP_GRO control message (an int) with room to spare, so that a
// message enabled elsewhere cannot crowd it out unseen (MSG_CTRUNC).
const oobSize = 128

// NewSegmentReader returns a SegmentReader on conn.
func NewSegmentReader(conn net.PacketConn) *SegmentReader {
	r := &SegmentReader{conn: conn}
	if uc, ok := conn.(*net.UDPConn); ok {
		r.udp = uc
		r.oob = make([]byte, oobSize)
	}
	return r
}

// Read reads the next datagram, or run of datagrams, into buf. buf must hold the
// largest datagram the socket may get (64 KiB holds any UDP datagram and any run the
// kernel builds with its default GRO limit); what does not fit is reported as
// Segments.Truncated, never split wrongly. The Segments are slices of buf.
func (r *SegmentReader) Read(buf []byte) (Segments, error) {
	if r.udp == nil {
		n, from, err := r.conn.ReadFrom(buf)
		if err != nil {
			return Segments{}, err
		}
		return Segments{From: AddrPortOf(from), rest: buf[:n], more: true}, nil
	}
	n, oobn, flags, from, err := r.udp.ReadMsgUDPAddrPort(buf, r.oob)
	if err != nil {
		return Segments{}, err
	}
	s := Segments{From: unmap(from), rest: buf[:n], size: groSize(r.oob[:oobn]), more: true}
	switch {
	case flags&msgCtrunc != 0:
		// A lost UDP_GRO message would make a run look like one datagram.
		s.Truncated, s.rest, s.more = true, nil, false
	case flags&msgTrunc != 0:
		// The run (or datagram) was longer than buf: the segments that fit whole
		// are intact, the rest is lost.
		s.Truncated = true
		if s.size > 0 {
			s.rest = s.rest[:n/s.size*s.size]
		} else {
			s.rest = nil
		}
		s.more = len(s.rest) > 0
	}
	return s, nil
}

// Segments is what one SegmentReader.Read got: one datagram, or a run of datagrams of
// one sender that the kernel coalesced. Next walks them.
type Segments struct {
	// From is the sender of every datagram of the read; an IPv4 sender on a dual-stack
	// socket is given as IPv4, not IPv4-mapped IPv6.
	From netip.AddrPort
	// Truncated: the read did not fit the buffer (or its control message did not fit
	// the reader's), and datagrams were lost; Next returns only those that arrived
	// whole.
	Truncated bool

	rest []byte // the datagrams Next has not returned, back to back
	size int    // every datagram's size but the last's; 0: rest is one datagram
	more bool   // Next has a datagram to return (which may be empty)
}

// Next returns the next datagram, and false when none is left. The datagram is a
// slice of the reader's buffer whose capacity ends with it: appending to it cannot
// overwrite the datagram after it.
func (s *Segments) Next() ([]byte, bool) {
	if !s.more {
		return nil, false
	}
	n := len(s.rest)
	if s.size > 0 {
		n = min(n, s.size)
	}
	d := s.rest[:n:n]
	s.rest = s.rest[n:]
	s.more = len(s.rest) > 0
	return d, true
}

// AddrPortOf is a socket address as an AddrPort, IPv4-mapped IPv6 given as IPv4; the
// zero value for an address that is neither a *net.UDPAddr nor host:port.
func AddrPortOf(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		return unmap(u.AddrPort())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return unmap(ap)
}

func unmap(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
