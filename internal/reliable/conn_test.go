package reliable

import (
	"container/heap"
	"math/rand/v2"
	"testing"
	"time"
)

// A simulated path between two Conns, in virtual time: each direction has a
// one-way delay, random loss and optionally a bottleneck of a given rate
// with a drop-tail queue. Everything is deterministic for a seed, so a
// failure reproduces exactly.

type netPath struct {
	delay      time.Duration // one way
	loss       float64       // per packet, each direction
	rate       float64       // bytes per second at the bottleneck; 0: none
	queueBytes int           // the bottleneck's queue; 0: 256 KiB
	reorder    float64       // chance a packet is held back an extra delay/4
	mtu        int           // packets larger than this are dropped (a path MTU); 0: none
}

type netPacket struct {
	at   int64
	seq  int // tie-break: FIFO for equal times
	to   int
	data []byte
}

type netQueue []netPacket

func (q netQueue) Len() int { return len(q) }
func (q netQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q netQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *netQueue) Push(x any)   { *q = append(*q, x.(netPacket)) }
func (q *netQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// connPair runs two Conns over a netPath.
type connPair struct {
	t     testing.TB
	path  netPath
	rng   *rand.Rand
	now   int64
	conns [2]*Conn
	wire  netQueue
	seq   int
	// the bottleneck, per direction: when its link is free again, and the
	// bytes queued in front of it
	linkFree [2]int64
	buf      []byte

	sent, dropped, queueDrops, mtuDrops [2]int

	// Test hooks, per packet, in the order a packet meets them: watch sees
	// every packet a side sends, drop discards chosen ones, hold delays
	// chosen ones by an extra time (reordering them). from is the sender.
	watch func(from int, pkt []byte)
	drop  func(from int, pkt []byte) bool
	hold  func(from int, pkt []byte) time.Duration
	// alarm, when set, is an event of the test's own: step stops there.
	alarm int64
	// recvErr is the first error each side's Receive returned; with
	// allowErrors unset, any error fails the test.
	recvErr     [2]error
	allowErrors bool
}

func newConnPair(t testing.TB, path netPath, seed uint64, cfg Config) *connPair {
	n := &connPair{t: t, path: path, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), now: int64(time.Second)}
	if n.path.queueBytes == 0 {
		n.path.queueBytes = 256 << 10
	}
	for i := range n.conns {
		c := cfg
		c.Client = i == 0
		if c.Congestion == nil {
			c.Congestion = NewBBR(max(c.PacketSize, DefaultPacketSize), 0, seed+uint64(i))
		}
		n.conns[i] = NewConn(c)
	}
	n.buf = make([]byte, 0, 2048)
	return n
}

// flush sends every packet conn i has for now onto the wire.
func (n *connPair) flush(i int) {
	for {
		pkt := n.conns[i].Send(n.now, n.buf[:0])
		if pkt == nil {
			return
		}
		n.sent[i]++
		if n.watch != nil {
			n.watch(i, pkt)
		}
		if n.path.mtu > 0 && len(pkt) > n.path.mtu {
			n.dropped[i]++
			n.mtuDrops[i]++
			continue
		}
		if n.drop != nil && n.drop(i, pkt) {
			n.dropped[i]++
			continue
		}
		if n.rng.Float64() < n.path.loss {
			n.dropped[i]++
			continue
		}
		depart := n.now
		if n.path.rate > 0 {
			start := max(n.now, n.linkFree[i])
			queued := float64(start-n.now) / 1e9 * n.path.rate
			if int(queued) > n.path.queueBytes {
				n.dropped[i]++
				n.queueDrops[i]++
				continue
			}
			depart = start + int64(float64(len(pkt))/n.path.rate*1e9)
			n.linkFree[i] = depart
		}
		at := depart + int64(n.path.delay)
		if n.path.reorder > 0 && n.rng.Float64() < n.path.reorder {
			at += int64(n.path.delay / 4)
		}
		if n.hold != nil {
			at += int64(n.hold(i, pkt))
		}
		n.seq++
		heap.Push(&n.wire, netPacket{at: at, seq: n.seq, to: 1 - i, data: append([]byte(nil), pkt...)})
	}
}

// step advances virtual time to the next event (a packet arriving, a timer,
// the pacer) and handles it; it reports false when nothing is left to
// happen.
func (n *connPair) step() bool {
	next := int64(0)
	consider := func(t int64) {
		if t != 0 && (next == 0 || t < next) {
			next = t
		}
	}
	if len(n.wire) > 0 {
		consider(n.wire[0].at)
	}
	if n.alarm > n.now {
		consider(n.alarm)
	}
	for _, c := range n.conns {
		consider(c.Timer())
		consider(c.PacingDelay(n.now))
	}
	if next == 0 {
		return false
	}
	n.now = max(n.now, next)
	for len(n.wire) > 0 && n.wire[0].at <= n.now {
		p := heap.Pop(&n.wire).(netPacket)
		if err := n.conns[p.to].Receive(n.now, p.data); err != nil {
			if !n.allowErrors {
				n.t.Fatalf("conn %d: receive: %v", p.to, err)
			}
			if n.recvErr[p.to] == nil {
				n.recvErr[p.to] = err
			}
		}
	}
	for _, c := range n.conns {
		if t := c.Timer(); t != 0 && t <= n.now {
			c.OnTimer(n.now)
		}
	}
	return true
}

// pattern is the byte at offset i of a test stream.
func pattern(i uint64) byte { return byte(i*7 + i>>11) }

// transfer moves size bytes on one stream from conn 0 to conn 1 and returns
// how long it took in virtual time and the longest time the receiver went
// without reading anything new.
func (n *connPair) transfer(size int, limit time.Duration) (took, stall time.Duration) {
	n.t.Helper()
	a, b := n.conns[0], n.conns[1]
	id, err := a.OpenStream()
	if err != nil {
		n.t.Fatal(err)
	}
	start := n.now
	var written, read uint64
	chunk := make([]byte, 64<<10)
	rbuf := make([]byte, 64<<10)
	lastProgress := n.now
	var peer uint64
	accepted := false
	for read < uint64(size) {
		for written < uint64(size) {
			m := min(len(chunk), size-int(written))
			for i := range chunk[:m] {
				chunk[i] = pattern(written + uint64(i))
			}
			k, err := a.Write(id, chunk[:m])
			if err != nil {
				n.t.Fatal(err)
			}
			written += uint64(k)
			if written == uint64(size) {
				if err := a.CloseWrite(id); err != nil {
					n.t.Fatal(err)
				}
			}
			if k < m {
				break
			}
		}
		if !accepted {
			peer, accepted = b.AcceptStream()
		}
		if accepted {
			for {
				k, err := b.Read(peer, rbuf)
				for i := range rbuf[:k] {
					if rbuf[i] != pattern(read+uint64(i)) {
						n.t.Fatalf("byte %d: got %#x, want %#x", read+uint64(i), rbuf[i], pattern(read+uint64(i)))
					}
				}
				if k > 0 {
					read += uint64(k)
					stall = max(stall, time.Duration(n.now-lastProgress))
					lastProgress = n.now
				}
				if k == 0 || err != nil {
					break
				}
			}
		}
		n.flush(0)
		n.flush(1)
		if read >= uint64(size) {
			break
		}
		if !n.step() {
			n.t.Fatalf("nothing left to happen after %d of %d bytes read", read, size)
		}
		if time.Duration(n.now-start) > limit {
			n.t.Fatalf("%d of %d bytes after %v of virtual time", read, size, limit)
		}
	}
	return time.Duration(n.now - start), stall
}

func TestConnTransferClean(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	n := newConnPair(t, netPath{delay: 10 * time.Millisecond, rate: 50e6}, 1, Config{})
	took, stall := n.transfer(16<<20, time.Minute)
	rate := float64(16<<20) / took.Seconds() / 1e6
	t.Logf("16 MiB in %v (%.1f MB/s at a 50 MB/s bottleneck), longest stall %v, packets %v sent %v dropped", took, rate, stall, n.sent, n.dropped)
	if rate < 35 {
		t.Errorf("%.1f MB/s through a 50 MB/s bottleneck", rate)
	}
}

func TestConnTransferLossy(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	for _, seed := range []uint64{1, 2, 3} {
		n := newConnPair(t, netPath{delay: 20 * time.Millisecond, loss: 0.02, rate: 50e6, reorder: 0.01}, seed, Config{})
		took, stall := n.transfer(16<<20, time.Minute)
		t.Logf("seed %d: 16 MiB in %v (%.1f MB/s), longest stall %v, sent %v dropped %v", seed, took, float64(16<<20)/took.Seconds()/1e6, stall, n.sent, n.dropped)
		if stall > 300*time.Millisecond {
			t.Errorf("seed %d: the receiver stalled for %v", seed, stall)
		}
	}
}

// run flushes both sides and advances virtual time until done reports true.
// It fails the test if nothing is left to happen first, or after limit.
func (n *connPair) run(limit time.Duration, done func() bool) {
	n.t.Helper()
	start := n.now
	for {
		n.flush(0)
		n.flush(1)
		if done() {
			return
		}
		n.flush(0) // what done did may have made something to send
		n.flush(1)
		if !n.step() {
			n.t.Fatalf("nothing left to happen after %v", time.Duration(n.now-start))
		}
		if time.Duration(n.now-start) > limit {
			n.t.Fatalf("not done after %v of virtual time", limit)
		}
	}
}

// settle runs until nothing is left to happen: no packet on the wire, no
// timer armed, nothing waiting on the pacer. It fails the test if that takes
// longer than limit (two sides that keep answering each other never settle)
// and returns how long it took.
func (n *connPair) settle(limit time.Duration) time.Duration {
	n.t.Helper()
	start := n.now
	for {
		n.flush(0)
		n.flush(1)
		if !n.step() {
			return time.Duration(n.now - start)
		}
		if time.Duration(n.now-start) > limit {
			n.t.Fatalf("still busy after %v of virtual time", limit)
		}
	}
}

// inject delivers a hand-made packet of frames from conn from to the other
// at once and returns what Receive said. It takes from's next packet number
// and records the packet as one that awaits no ACK, so that the peer's ACK
// of it is legal.
func (n *connPair) inject(from int, frames []byte) error {
	c := n.conns[from]
	p := sentPacket{pn: c.nextPN, sentTime: n.now}
	c.nextPN++
	c.rec.onSent(&p)
	pkt := append(AppendVarint(nil, p.pn), frames...)
	return n.conns[1-from].Receive(n.now, pkt)
}

// packetFrames decodes a packet the Conn built; each frame is a copy.
func packetFrames(t testing.TB, pkt []byte) (pn uint64, frames []Frame) {
	t.Helper()
	pn, k, err := ParseVarint(pkt)
	if err != nil {
		t.Fatalf("packet number: %v", err)
	}
	for b := pkt[k:]; len(b) > 0; {
		var f Frame
		m, err := ParseFrame(b, &f)
		if err != nil {
			t.Fatalf("packet %d: %v", pn, err)
		}
		frames = append(frames, f)
		b = b[m:]
	}
	return pn, frames
}

// readAll reads stream id of c until Read returns nothing or an error.
func readAll(c *Conn, id uint64) ([]byte, error) {
	var out []byte
	buf := make([]byte, 16<<10)
	for {
		k, err := c.Read(id, buf)
		out = append(out, buf[:k]...)
		if k == 0 || err != nil {
			return out, err
		}
	}
}
