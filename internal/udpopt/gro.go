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

// A SegmentReader reads a socket's datagrams, a whole run of them per message where
// the kernel coalesces them (SetGRO), and on Linux several messages per system call
// (recvmmsg): a receiver that GRO does not help (datagrams from many peers, or
// forwarded by a device that does not coalesce) still pays one system call for a
// burst, not one per datagram. On a conn that is not a *net.UDPConn (test fakes,
// pion's vnet) it reads one datagram per call with ReadFrom. A read allocates nothing
// on a *net.UDPConn. Not safe for concurrent use: one reader per read loop.
type SegmentReader struct {
	conn  net.PacketConn
	udp   *net.UDPConn // nil: not a kernel socket
	batch *recvBatch   // Linux's recvmmsg on a kernel socket; nil elsewhere
	oob   []byte       // the control messages of the last read
}

// oobSize holds the UDP_GRO control message (an int) with room to spare, so that a
// message enabled elsewhere cannot crowd it out unseen (MSG_CTRUNC).
const oobSize = 128

// maxRun is the most one message may bring: any UDP datagram, and any run the kernel
// coalesces with its default GRO limit.
const maxRun = 64 << 10

// readBatch is the most messages one recvmmsg reads (quic-go reads 8 too).
const readBatch = 8

// ReadBufferSize is the buffer a SegmentReader needs to read readBatch messages per
// system call, each up to maxRun bytes.
const ReadBufferSize = readBatch * maxRun

// NewSegmentReader returns a SegmentReader on conn.
func NewSegmentReader(conn net.PacketConn) *SegmentReader {
	r := &SegmentReader{conn: conn}
	if uc, ok := conn.(*net.UDPConn); ok {
		r.udp = uc
		r.oob = make([]byte, oobSize)
		r.batch = newRecvBatch(uc)
	}
	return r
}

// Read reads the next datagram, or run of datagrams, into buf. buf must hold the
// largest message the socket may get (maxRun holds any); what does not fit is
// reported as Segments.Truncated, never split wrongly. The Segments are slices of buf.
//
// On Linux a buffer of ReadBufferSize (or any multiple of maxRun up to it) is cut into
// that many slots, one message each, read with one system call; Read then returns them
// one per call, and only reads the socket again once it has returned them all. So the
// Segments of one call stay valid until the call after the last message of their
// batch, and buf must be the same buffer on every call.
func (r *SegmentReader) Read(buf []byte) (Segments, error) {
	if r.batch != nil {
		if r.batch.next == r.batch.n {
			if err := r.batch.read(buf); err != nil {
				return Segments{}, err
			}
		}
		i := r.batch.next
		r.batch.next++
		return r.batch.segments(buf, i), nil
	}
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
	return segmentsOf(buf[:n], r.oob[:oobn], flags, unmap(from)), nil
}

// segmentsOf is one message the kernel read: b, the bytes it wrote; oob, its control
// messages; flags, its recvmsg flags.
func segmentsOf(b, oob []byte, flags int, from netip.AddrPort) Segments {
	s := Segments{From: from, rest: b, size: groSize(oob), more: true}
	switch {
	case flags&msgCtrunc != 0:
		// A lost UDP_GRO message would make a run look like one datagram.
		s.Truncated, s.rest, s.more = true, nil, false
	case flags&msgTrunc != 0:
		// The run (or datagram) was longer than buf: the segments that fit whole
		// are intact, the rest is lost.
		s.Truncated = true
		if s.size > 0 {
			s.rest = s.rest[:len(b)/s.size*s.size]
		} else {
			s.rest = nil
		}
		s.more = len(s.rest) > 0
	}
	return s
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
