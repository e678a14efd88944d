package natlab

import (
	"encoding/binary"
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
// It is built to cost little per frame, because it shares the machine with
// the transports measured through it (two lines, two endpoints and the bench
// on two cores): one goroutine per direction, no channel or timer per frame,
// frames read from a receive ring without a system call (packet_ring.go) and
// written in batches of up to lineBatch with one sendmmsg.
//
// Timing: a frame is due its delay after the kernel stamped it into the
// ring, and leaves at its due time or later, never before. The direction
// sleeps in ppoll until the first held frame is due or a frame arrives.
// (Sleeping past arrivals while holding frames, to take them in batches,
// saved no measurable CPU in the bench, where a busy line finds frames
// waiting anyway, and would have delayed neighbour discovery.)
//
// Three details would make a naive line lie:
//   - veth hands frames over with checksums still to be done
//     (CHECKSUM_PARTIAL): the copy an AF_PACKET socket reads carries an
//     unfinished UDP/TCP checksum, and TSO/GSO frames can be far larger than
//     the MTU. Both sockets use PACKET_VNET_HDR, so every frame is read with a
//     virtio_net_hdr that says what is left to do, and written back with it:
//     the kernel finishes the checksum (or segments) on the other side, as
//     if the frame had crossed a plain veth. (The lab's veths segment GSO
//     before it reaches a router, see vethPair, so in the lab every frame
//     fits a ring slot; a larger one arrives whole through the socket queue.)
//   - a packet socket also sees the frames its own interface transmits,
//     including the ones the line itself writes; PACKET_IGNORE_OUTGOING
//     drops those before they reach us.
//   - sendmmsg stops at the first frame the kernel refuses (a full tbf
//     queue: ENOBUFS) without saying so; the line sends it again as the
//     first of the next call, which reports the refusal, and counts it
//     dropped (TxErrors) only then.
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
	// lineSmallFrame is a held frame's reusable buffer: every frame that
	// fits a ring slot fits.
	lineSmallFrame = ringFrameSize
	// lineBatch is the most frames one sendmmsg sends.
	lineBatch = 64
	// lineTake is the most frames taken from the ring before sending the
	// due ones: a direction slower than the arrivals (under -race) would
	// otherwise never stop taking, and fill its queue with frames it does
	// not send.
	lineTake = 4 * lineBatch
	// lineMaxAge bounds how old a kernel timestamp may be to be believed;
	// beyond it (a wall clock step) the frame counts as arriving when read.
	lineMaxAge = time.Second
)

// LineStats counts what a delay line did, both directions together.
type LineStats struct {
	Frames   uint64 // forwarded
	Bytes    uint64 // forwarded, frame bytes without the virtio_net_hdr
	Overflow uint64 // dropped because a direction held lineQueueFrames
	// TxErrors are writes the kernel refused; a full tbf queue (ENOBUFS)
	// is the expected one, which is the bottleneck's tail drop.
	TxErrors uint64
	// KernelDrops are frames the packet sockets dropped before the line
	// read them: the receive ring was full (PACKET_STATISTICS), so the line
	// was too slow, or a frame too large for a ring slot found the socket's
	// buffer full.
	KernelDrops uint64
}

// delayLine forwards frames between two interfaces of the current thread's
// namespace with a delay. Create it with newDelayLine (inside the
// namespace), then start; close stops it and waits.
type delayLine struct {
	// Immutable after newDelayLine.
	socks [2]*packetSocket // bound to end 0 and end 1
	dirs  [2]*lineDir      // from end 0 to end 1, and back
	epoch time.Time        // held frames' due times count from here
	wg    sync.WaitGroup

	delay  atomic.Int64 // one-way delay in nanoseconds, both directions
	closed atomic.Bool

	frames, bytes, overflow, txErrors atomic.Uint64
	kdrops                            atomic.Uint64 // accumulated ring and copy drops

	closeOnce sync.Once

	// mu guards released, which is set once the sockets and eventfds are
	// closed: signal and stats use them from other goroutines, and a
	// closed descriptor's number may already name another file.
	mu       sync.Mutex
	released bool
}

// newDelayLine opens the two packet sockets. It must run on a thread inside
// the namespace that holds ifA and ifB (see inNetns).
func newDelayLine(ifA, ifB string) (*delayLine, error) {
	l := &delayLine{epoch: time.Now()}
	for i, name := range []string{ifA, ifB} {
		s, err := openPacketSocket(name)
		if err != nil {
			l.release()
			return nil, err
		}
		l.socks[i] = s
	}
	for i := range l.dirs {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			l.release()
			return nil, fmt.Errorf("natlab: delay line eventfd: %w", err)
		}
		l.dirs[i] = &lineDir{l: l, in: l.socks[i], out: l.socks[1-i].fd, wake: fd, q: newFrameQueue(lineQueueFrames)}
	}
	return l, nil
}

// setDelay changes the one-way delay; frames already held keep theirs.
func (l *delayLine) setDelay(d time.Duration) {
	l.delay.Store(int64(d))
	l.signal()
}

// signal wakes both directions.
func (l *delayLine) signal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	for _, d := range l.dirs {
		unix.Write(d.wake, one[:]) //nolint:errcheck // only EAGAIN: already signalled
	}
}

// start starts one goroutine per direction.
func (l *delayLine) start() {
	for _, d := range l.dirs {
		l.wg.Add(1)
		go d.run()
	}
}

// now is the monotonic time since the line's epoch.
func (l *delayLine) now() time.Duration { return time.Since(l.epoch) }

// lineDir is one direction of the line: frames arriving in in's ring are held
// and written to out. Everything in it is owned by its goroutine.
type lineDir struct {
	l    *delayLine
	in   *packetSocket
	out  int
	wake int // eventfd: the line's close and setDelay
	q    frameQueue

	msgs [lineBatch]unix.Mmsghdr // sendmmsg's arguments
	iovs [lineBatch]unix.Iovec
	poll [2]unix.PollFd
}

// run forwards until the line closes.
func (d *lineDir) run() {
	defer d.l.wg.Done()
	for {
		d.take()
		d.send()
		if !d.wait() {
			return
		}
	}
}

// take moves up to lineTake frames waiting in the ring into the queue,
// stamped with their due time; neighbour discovery goes straight out.
func (d *lineDir) take() {
	t := time.Now()
	now := t.Sub(d.l.epoch)
	delay := time.Duration(d.l.delay.Load())
	for range lineTake {
		f, ok := d.in.peek()
		if !ok {
			break
		}
		switch {
		case f.lost:
			d.l.kdrops.Add(1)
		case isNeighbourDiscovery(f.data[vnetHdrLen:]):
			d.writeNow(f.data)
		default:
			// Due its delay after the kernel stamped it. A frame that
			// arrived after t has a negative age. A stamp further off is
			// a stepped wall clock: then it counts from now, late but
			// never early.
			age := t.Sub(f.arrived)
			due := now - age + delay
			if age > lineMaxAge || age < -lineMaxAge {
				due = d.l.now() + delay
			}
			if !d.q.push(f.data, due) {
				d.l.overflow.Add(1)
			}
		}
		d.in.release()
	}
}

// send writes every held frame that is due, in order, lineBatch at a time.
func (d *lineDir) send() {
	for d.q.len() > 0 {
		now := d.l.now()
		k := 0
		for k < lineBatch && k < d.q.len() {
			f := d.q.at(k)
			if f.due > now {
				break
			}
			d.iovs[k] = unix.Iovec{Base: &f.data[0]}
			d.iovs[k].SetLen(len(f.data))
			d.msgs[k] = unix.Mmsghdr{Hdr: unix.Msghdr{Iov: &d.iovs[k], Iovlen: 1}}
			k++
		}
		if k == 0 {
			return
		}
		for i := 0; i < k; {
			n, err := sendmmsg(d.out, d.msgs[i:k])
			switch {
			case err == unix.EINTR:
			case err != nil:
				// The kernel refused frame i (ENOBUFS: the tbf queue
				// is full): the bottleneck's tail drop.
				d.l.txErrors.Add(1)
				i++
			default:
				for _, f := range d.iovs[i : i+n] {
					d.l.bytes.Add(f.Len - vnetHdrLen)
				}
				d.l.frames.Add(uint64(n))
				i += n
			}
		}
		for range k {
			d.q.pop()
		}
	}
}

// writeNow sends one frame (with its virtio_net_hdr) at once and counts it.
func (d *lineDir) writeNow(frame []byte) {
	if _, err := unix.Write(d.out, frame); err != nil {
		d.l.txErrors.Add(1)
		return
	}
	d.l.frames.Add(1)
	d.l.bytes.Add(uint64(len(frame) - vnetHdrLen))
}

// wait sleeps until a frame arrives, the first held frame is due, or the
// line is woken. It returns false once the line closes.
func (d *lineDir) wait() bool {
	if d.l.closed.Load() {
		return false
	}
	var timeout *unix.Timespec // nil: none
	if d.q.len() > 0 {
		left := d.q.at(0).due - d.l.now()
		if left <= 0 {
			return true
		}
		ts := unix.NsecToTimespec(left.Nanoseconds())
		timeout = &ts
	}
	d.poll[0] = unix.PollFd{Fd: int32(d.in.fd), Events: unix.POLLIN}
	d.poll[1] = unix.PollFd{Fd: int32(d.wake), Events: unix.POLLIN}
	if _, err := unix.Ppoll(d.poll[:], timeout, nil); err != nil && err != unix.EINTR {
		// Not expected with valid descriptors; look again later rather
		// than spin or give up.
		time.Sleep(time.Millisecond)
	}
	if d.poll[0].Revents&unix.POLLERR != 0 {
		// The interface went down (ENETDOWN); reading the error clears it.
		// Frames come again if it comes back up.
		unix.GetsockoptInt(d.in.fd, unix.SOL_SOCKET, unix.SO_ERROR) //nolint:errcheck
	}
	if d.poll[1].Revents&unix.POLLIN != 0 {
		var b [8]byte
		unix.Read(d.wake, b[:]) //nolint:errcheck
	}
	return !d.l.closed.Load()
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

// stats returns the counters, including the sockets' kernel drops since the
// last call (PACKET_STATISTICS resets on read, so they are accumulated).
func (l *delayLine) stats() LineStats {
	l.mu.Lock()
	if !l.released {
		for _, s := range l.socks {
			l.kdrops.Add(s.drops())
		}
	}
	l.mu.Unlock()
	return LineStats{
		Frames: l.frames.Load(), Bytes: l.bytes.Load(), Overflow: l.overflow.Load(),
		TxErrors: l.txErrors.Load(), KernelDrops: l.kdrops.Load(),
	}
}

// close stops the line and waits for its goroutines. Idempotent.
func (l *delayLine) close() {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		l.signal()
		l.wg.Wait()
		l.release()
	})
}

// release closes what newDelayLine opened.
func (l *delayLine) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.released = true
	for _, s := range l.socks {
		if s != nil {
			l.kdrops.Add(s.drops()) // what stats would have read
			s.close()
		}
	}
	for _, d := range l.dirs {
		if d != nil {
			unix.Close(d.wake)
		}
	}
}

// frameQueue is a direction's held frames, oldest first: a ring of
// lineQueueFrames entries whose buffers are allocated on first use and then
// reused, so a steady flow allocates nothing.
type frameQueue struct {
	frames      []heldFrame
	head, count int
}

// heldFrame is a frame waiting for its time.
type heldFrame struct {
	buf  []byte        // lineSmallFrame bytes, reused; nil until first needed
	data []byte        // the frame with its virtio_net_hdr: in buf, or its own
	due  time.Duration // since the line's epoch
}

func newFrameQueue(n int) frameQueue { return frameQueue{frames: make([]heldFrame, n)} }

func (q *frameQueue) len() int { return q.count }

// at returns the i-th oldest frame.
func (q *frameQueue) at(i int) *heldFrame { return &q.frames[(q.head+i)%len(q.frames)] }

// push copies frame in at the tail; false when the queue is full.
func (q *frameQueue) push(frame []byte, due time.Duration) bool {
	if q.count == len(q.frames) {
		return false
	}
	f := q.at(q.count)
	if len(frame) <= lineSmallFrame {
		if f.buf == nil {
			f.buf = make([]byte, lineSmallFrame)
		}
		f.data = f.buf[:copy(f.buf, frame)]
	} else {
		f.data = append([]byte(nil), frame...)
	}
	f.due = due
	q.count++
	return true
}

// pop drops the oldest frame.
func (q *frameQueue) pop() {
	q.frames[q.head].data = nil
	q.head = (q.head + 1) % len(q.frames)
	q.count--
}
