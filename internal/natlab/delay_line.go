package natlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The delay line: this kernel has no netem (nat.md; transport.md §4), so a
// shaped link is a namespace holding two veth ends that no IP stack uses,
// bridged by two AF_PACKET sockets in this process. Each frame read on one
// end is held for the configured delay and then written to the other end, in
// order. A bottleneck with a real queue is tc's tbf on the egress of both
// ends: frames the line writes pass the qdisc like any transmitted frame.
//
// Two details would make a naive line lie:
//   - veth hands frames over with checksums still to be done
//     (CHECKSUM_PARTIAL): the copy an AF_PACKET socket reads carries an
//     unfinished UDP/TCP checksum, and TSO/GSO frames can be far larger than
//     the MTU. Both sockets use PACKET_VNET_HDR, so every frame is read with a
//     virtio_net_hdr that says what is left to do, and written back with it:
//     the kernel finishes the checksum (or segments) on the other side, as
//     if the frame had crossed a plain veth.
//   - a packet socket also sees the frames its own interface transmits,
//     including the ones the line itself writes; PACKET_IGNORE_OUTGOING
//     drops those before they reach us.
//
// Neighbour discovery (ARP, IPv6 neighbour solicitations and adverts)
// crosses the line at once (isNeighbourDiscovery). The lab's upstream is one
// flat segment, so a router resolves every lab address it talks to, where a
// real one resolves only its ISP's gateway, one short hop away and long
// before. Delayed, the resolution added a whole extra RTT to the first
// packet toward each new address — 86 ms instead of 40 ms for the first
// round trip over two 20 ms lines, which a start-up that times waits by
// its first RTTs (the NAT check) paid three times over.
const (
	// lineQueueFrames bounds frames held in one direction. At 80 ms one way
	// and 100 MiB/s that is about 7000 frames of 1.2 KB; beyond the bound
	// frames are dropped and counted (Overflow), as a full router buffer
	// would.
	lineQueueFrames = 1 << 15
	// lineSmallFrame is the pooled buffer size: every non-GSO frame fits.
	lineSmallFrame = 2048
	// lineMaxFrame is the largest frame read: a GSO frame of 64 KiB plus
	// headers and the virtio_net_hdr.
	lineMaxFrame = 65536 + 256
	// lineSocketBuffer is each packet socket's kernel buffer, so a burst
	// while the reader is descheduled queues instead of dropping.
	lineSocketBuffer = 16 << 20
	// linePoll bounds how long a blocked read waits before it checks for
	// Close (SO_RCVTIMEO), since closing a socket does not wake a reader.
	linePoll = 100 * time.Millisecond
	// vnetHdrLen is sizeof(struct virtio_net_hdr).
	vnetHdrLen = 10
)

// LineStats counts what a delay line did, both directions together.
type LineStats struct {
	Frames   uint64 // forwarded
	Bytes    uint64 // forwarded, frame bytes without the virtio_net_hdr
	Overflow uint64 // dropped because a direction held lineQueueFrames
	// TxErrors are writes the kernel refused; a full tbf queue (ENOBUFS)
	// is the expected one, which is the bottleneck's tail drop.
	TxErrors uint64
	// KernelDrops are frames the packet sockets' buffers dropped before the
	// line read them (PACKET_STATISTICS): the line was too slow.
	KernelDrops uint64
}

// delayLine forwards frames between two interfaces of the current thread's
// namespace with a delay. Create it with newDelayLine (inside the
// namespace), then start; close stops it and waits.
type delayLine struct {
	// Immutable after newDelayLine.
	fds  [2]int // AF_PACKET sockets bound to end 0 and end 1
	done chan struct{}
	wg   sync.WaitGroup

	delay atomic.Int64 // one-way delay in nanoseconds, both directions

	frames, bytes, overflow, txErrors atomic.Uint64
	kdrops                            atomic.Uint64 // accumulated PACKET_STATISTICS drops

	closeOnce sync.Once
	pool      sync.Pool // *[]byte of lineSmallFrame
}

// heldFrame is a frame waiting for its time.
type heldFrame struct {
	buf  *[]byte // pooled, or nil when data is a one-off GSO frame
	data []byte
	due  time.Time
}

// newDelayLine opens the two packet sockets. It must run on a thread inside
// the namespace that holds ifA and ifB (see inNetns).
func newDelayLine(ifA, ifB string) (*delayLine, error) {
	l := &delayLine{done: make(chan struct{})}
	l.pool.New = func() any { b := make([]byte, lineSmallFrame); return &b }
	for i, name := range []string{ifA, ifB} {
		fd, err := openLineSocket(name)
		if err != nil {
			for _, f := range l.fds[:i] {
				unix.Close(f)
			}
			return nil, err
		}
		l.fds[i] = fd
	}
	return l, nil
}

// openLineSocket opens a raw packet socket bound to ifName, with the
// virtio_net_hdr on, its own transmissions ignored and large buffers.
func openLineSocket(ifName string) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return -1, fmt.Errorf("natlab: delay line socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("natlab: delay line %s %s: %w", ifName, what, err)
	}
	idx, err := interfaceIndex(ifName)
	if err != nil {
		return fail("index", err)
	}
	for _, o := range []struct {
		level, opt, val int
		name            string
	}{
		{unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1, "PACKET_VNET_HDR"},
		{unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING"},
		{unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, lineSocketBuffer, "SO_RCVBUFFORCE"},
		{unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, lineSocketBuffer, "SO_SNDBUFFORCE"},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			return fail(o.name, err)
		}
	}
	tv := unix.NsecToTimeval(linePoll.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fail("SO_RCVTIMEO", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx}); err != nil {
		return fail("bind", err)
	}
	return fd, nil
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

// setDelay changes the one-way delay; frames already held keep theirs.
func (l *delayLine) setDelay(d time.Duration) { l.delay.Store(int64(d)) }

// start starts one reader and one writer per direction.
func (l *delayLine) start() {
	for dir := range 2 {
		q := make(chan heldFrame, lineQueueFrames)
		l.wg.Add(2)
		go l.readLoop(l.fds[dir], l.fds[1-dir], q)
		go l.writeLoop(l.fds[1-dir], q)
	}
}

// readLoop reads frames from fd, stamps their due time and queues them;
// neighbour discovery goes straight out of out.
func (l *delayLine) readLoop(fd, out int, q chan<- heldFrame) {
	defer l.wg.Done()
	defer close(q)
	big := make([]byte, lineMaxFrame)
	for {
		n, _, err := unix.Recvfrom(fd, big, 0)
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return // the interface went away: the lab is being torn down
		}
		if n <= vnetHdrLen {
			continue
		}
		if isNeighbourDiscovery(big[vnetHdrLen:n]) {
			l.write(out, big[:n])
			continue
		}
		f := heldFrame{due: time.Now().Add(time.Duration(l.delay.Load()))}
		if n <= lineSmallFrame {
			f.buf = l.pool.Get().(*[]byte)
			f.data = (*f.buf)[:copy(*f.buf, big[:n])]
		} else {
			f.data = append([]byte(nil), big[:n]...)
		}
		select {
		case q <- f:
		default:
			l.overflow.Add(1)
			l.put(f)
		}
	}
}

// writeLoop writes each queued frame to fd once it is due.
func (l *delayLine) writeLoop(fd int, q <-chan heldFrame) {
	defer l.wg.Done()
	for f := range q {
		if wait := time.Until(f.due); wait > 0 {
			select {
			case <-time.After(wait):
			case <-l.done:
				l.put(f)
				continue // drain until the reader closes q
			}
		}
		l.write(fd, f.data)
		l.put(f)
	}
}

// write sends one frame (with its virtio_net_hdr) out of fd and counts it.
func (l *delayLine) write(fd int, frame []byte) {
	if _, err := unix.Write(fd, frame); err != nil {
		l.txErrors.Add(1)
		return
	}
	l.frames.Add(1)
	l.bytes.Add(uint64(len(frame) - vnetHdrLen))
}

// isNeighbourDiscovery reports an Ethernet frame carrying ARP or an IPv6
// neighbour discovery message (ICMPv6 types 133–137, which have no
// extension headers before them).
func isNeighbourDiscovery(eth []byte) bool {
	const ethHdr, ipv6Hdr = 14, 40
	if len(eth) < ethHdr {
		return false
	}
	switch binary.BigEndian.Uint16(eth[12:14]) {
	case unix.ETH_P_ARP:
		return true
	case unix.ETH_P_IPV6:
		ip := eth[ethHdr:]
		return len(ip) > ipv6Hdr && ip[6] == unix.IPPROTO_ICMPV6 && ip[ipv6Hdr] >= 133 && ip[ipv6Hdr] <= 137
	}
	return false
}

func (l *delayLine) put(f heldFrame) {
	if f.buf != nil {
		l.pool.Put(f.buf)
	}
}

// stats returns the counters, including the sockets' kernel drops since the
// last call (PACKET_STATISTICS resets on read, so they are accumulated).
func (l *delayLine) stats() LineStats {
	return LineStats{
		Frames: l.frames.Load(), Bytes: l.bytes.Load(), Overflow: l.overflow.Load(),
		TxErrors: l.txErrors.Load(), KernelDrops: l.kernelDrops(),
	}
}

func (l *delayLine) kernelDrops() uint64 {
	for _, fd := range l.fds {
		if st, err := unix.GetsockoptTpacketStats(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			l.kdrops.Add(uint64(st.Drops))
		}
	}
	return l.kdrops.Load()
}

// close stops the line and waits for its goroutines. Idempotent.
func (l *delayLine) close() {
	l.closeOnce.Do(func() {
		close(l.done)
		l.wg.Wait()
		for _, fd := range l.fds {
			unix.Close(fd)
		}
	})
}
