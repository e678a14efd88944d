package natlab

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A delay line's packet socket: AF_PACKET bound to one interface, reading
// through a TPACKET_V2 receive ring and writing with sendmmsg.
//
// The ring (packet_mmap.rst in the kernel's documentation) is memory shared
// with the kernel, cut into fixed slots. The kernel copies each frame into
// the next free slot in the softirq that delivers it, stamps it and marks it
// TP_STATUS_USER; the line copies it out and hands the slot back by writing
// TP_STATUS_KERNEL. No system call and no socket buffer per frame, and a
// reader that finds frames waiting never sleeps. Version 2, not 3: a V3 ring
// hands frames over a whole block at a time, when the block fills or its
// timer (at least a millisecond) expires, so a single packet on an idle line
// would wait up to that long: the ACKs of a transfer, and every round trip
// at RTT 0.
const (
	// ringFrameSize is one slot: the tpacket2_hdr, a sockaddr_ll, the
	// virtio_net_hdr and a 1514-byte Ethernet frame fit with room to spare.
	ringFrameSize = 2048
	// ringBlockSize is the unit the kernel allocates the ring in.
	ringBlockSize = 64 << 10
	// ringFrames is the ring's depth: what arrives while the line is busy
	// elsewhere or descheduled, about 10 MB of full frames. A full ring
	// drops and counts (PACKET_STATISTICS), as the socket buffer did.
	ringFrames = 8192
	// vnetHdrLen is sizeof(struct virtio_net_hdr).
	vnetHdrLen = 10
	// lineSocketBuffer is each socket's send buffer, and its receive
	// buffer for the frames too large for a slot (packetSocket.copied).
	lineSocketBuffer = 16 << 20
	// lineMaxFrame is the largest frame read: a GSO frame of 64 KiB plus
	// headers and the virtio_net_hdr.
	lineMaxFrame = 65536 + 256
)

// Offsets in struct tpacket2_hdr (linux/if_packet.h).
const (
	tp2Status  = 0
	tp2Len     = 4
	tp2Snaplen = 8
	tp2Mac     = 12
	tp2Sec     = 16
	tp2Nsec    = 20
)

// packetSocket is one end of a delay line.
type packetSocket struct {
	// Immutable after openPacketSocket.
	fd   int
	ring []byte // ringFrames slots of ringFrameSize, mapped from the kernel

	// Owned by the goroutine that reads the ring.
	next int    // the slot the kernel fills next
	big  []byte // a frame too large for a slot, read from the socket queue
}

// openPacketSocket opens a raw packet socket on ifName, with the
// virtio_net_hdr on, its own transmissions ignored and a receive ring. It
// must run on a thread inside ifName's namespace (see inNetns).
func openPacketSocket(ifName string) (*packetSocket, error) {
	// Protocol 0: the socket receives nothing until bind names both the
	// interface and ETH_P_ALL, so no frame of another interface slips in
	// first.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("natlab: delay line socket: %w", err)
	}
	s := &packetSocket{fd: fd}
	fail := func(what string, err error) (*packetSocket, error) {
		s.close()
		return nil, fmt.Errorf("natlab: delay line %s %s: %w", ifName, what, err)
	}
	idx, err := interfaceIndex(ifName)
	if err != nil {
		return fail("index", err)
	}
	// The virtio_net_hdr and the ring version must be set before the ring.
	for _, o := range []struct {
		level, opt, val int
		name            string
	}{
		{unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1, "PACKET_VNET_HDR"},
		{unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING"},
		{unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2, "PACKET_VERSION"},
		// A frame larger than a slot (GSO) is queued whole on the socket
		// as well, and its slot says so (TP_STATUS_COPY).
		{unix.SOL_PACKET, unix.PACKET_COPY_THRESH, 1, "PACKET_COPY_THRESH"},
		{unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, lineSocketBuffer, "SO_RCVBUFFORCE"},
		{unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, lineSocketBuffer, "SO_SNDBUFFORCE"},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			return fail(o.name, err)
		}
	}
	req := unix.TpacketReq{
		Block_size: ringBlockSize,
		Block_nr:   ringFrames * ringFrameSize / ringBlockSize,
		Frame_size: ringFrameSize,
		Frame_nr:   ringFrames,
	}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fail("PACKET_RX_RING", err)
	}
	s.ring, err = unix.Mmap(fd, 0, ringFrames*ringFrameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail("mmap", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx}); err != nil {
		return fail("bind", err)
	}
	return s, nil
}

// interfaceIndex looks ifName up in the current thread's namespace.
func interfaceIndex(ifName string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	req, err := unix.NewIfreq(ifName)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, req); err != nil {
		return 0, err
	}
	return int(req.Uint32()), nil
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// ringFrame is a frame the kernel handed over in a ring slot.
type ringFrame struct {
	// data is the frame behind its virtio_net_hdr. It is a slice of the
	// ring, valid until release, or of packetSocket.big.
	data []byte
	// arrived is when the kernel put the frame in the ring (wall clock).
	arrived time.Time
	// lost: the frame did not fit its slot and no whole copy was queued
	// (the socket's receive buffer was full).
	lost bool
}

// peek returns the frame in the next slot, and false when the kernel has not
// filled it yet. The caller must release it before peeking again.
func (s *packetSocket) peek() (ringFrame, bool) {
	slot := s.ring[s.next*ringFrameSize : (s.next+1)*ringFrameSize]
	// The kernel writes the frame, then the status (with a write barrier);
	// an atomic load orders our reads of the frame after it.
	status := atomic.LoadUint32((*uint32)(unsafe.Pointer(&slot[tp2Status])))
	if status&unix.TP_STATUS_USER == 0 {
		return ringFrame{}, false
	}
	ne := binary.NativeEndian
	f := ringFrame{arrived: time.Unix(int64(ne.Uint32(slot[tp2Sec:])), int64(ne.Uint32(slot[tp2Nsec:])))}
	mac := int(ne.Uint16(slot[tp2Mac:]))
	snap := int(ne.Uint32(slot[tp2Snaplen:]))
	switch {
	case status&unix.TP_STATUS_COPY != 0:
		f.data = s.copied()
		f.lost = f.data == nil
	case snap < int(ne.Uint32(slot[tp2Len:])) || mac < vnetHdrLen || mac+snap > len(slot):
		f.lost = true
	default:
		f.data = slot[mac-vnetHdrLen : mac+snap]
	}
	return f, true
}

// copied reads the whole copy of a frame too large for its slot, which the
// kernel queued on the socket in ring order; nil if it is not there.
func (s *packetSocket) copied() []byte {
	if s.big == nil {
		s.big = make([]byte, lineMaxFrame)
	}
	for {
		n, _, err := unix.Recvfrom(s.fd, s.big, unix.MSG_DONTWAIT)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil || n <= vnetHdrLen:
			return nil
		}
		return s.big[:n]
	}
}

// release hands the slot peek returned back to the kernel.
func (s *packetSocket) release() {
	slot := s.ring[s.next*ringFrameSize:]
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&slot[tp2Status])), unix.TP_STATUS_KERNEL)
	s.next = (s.next + 1) % ringFrames
}

// drops returns the frames the ring had no free slot for since the last
// call (PACKET_STATISTICS resets on read).
func (s *packetSocket) drops() uint64 {
	st, err := unix.GetsockoptTpacketStats(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return 0
	}
	return uint64(st.Drops)
}

func (s *packetSocket) close() {
	if s.ring != nil {
		unix.Munmap(s.ring)
		s.ring = nil
	}
	unix.Close(s.fd)
}

// sendmmsg sends msgs on fd in one system call (golang.org/x/sys/unix has no
// wrapper). It returns how many were sent; sendmmsg stops at the first
// message the kernel refuses and reports the error only when that is the
// first one.
func sendmmsg(fd int, msgs []unix.Mmsghdr) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
