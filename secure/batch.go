package secure

import (
	"sync"
	"time"

	"github.com/swarmdb/swarmdb/internal/udpopt"
)

// SegmentWriter is what a DatagramConn's inner conn may also implement: WriteSegments
// sends b as datagrams of segSize bytes, the last one possibly shorter, in one go (UDP
// segmentation offload, see internal/udpopt). b holds at most batchMax datagrams and
// fits one IP packet.
//
// Over such a conn a DatagramConn does not send each datagram as it is written: Write
// seals it into a batch, and a goroutine of the conn's own sends the batch, each run of
// equal-size datagrams with one call. The goroutine runs only while there is sending
// to do: it starts with a batch and leaves after writerIdleExit without one, so an idle
// connection has none. A datagram waits only while the previous batch is
// being sent; a sender that writes faster than the system sends gets larger batches.
// The kernel's per-datagram work, most of what a bulk sender spends, is then paid once
// per run (on loopback, 44 datagrams of a bulk transfer cost about what 3 did).
type SegmentWriter interface {
	WriteSegments(b []byte, segSize int) error
}

const (
	// batchMax bounds the datagrams waiting in a batch; Write blocks beyond it. It is
	// the kernel's limit on segments per send, so no run needs cutting for it.
	batchMax = udpopt.MaxSegments
	// runMaxBytes bounds one WriteSegments call: one IP packet holds at most 65,535
	// bytes with its headers.
	runMaxBytes = 64000
)

// sendBatch is the batch a DatagramConn fills and its writer goroutine sends.
type sendBatch struct {
	w    SegmentWriter
	sent func(n, bytes int, err error) // told of every WriteSegments call

	mu       sync.Mutex
	room     *sync.Cond // signalled when the writer takes the batch
	buf      *[]byte    // sealed datagrams, back to back; from batchPool, nil when empty
	sizes    []int      // their lengths
	running  bool       // a writer goroutine is up
	stopping bool       // close has begun: no writer starts any more
	closed   bool       // close has sent the last batch: add fails

	wake    chan struct{} // 1-buffered: the batch went from empty to non-empty, or close began
	writers sync.WaitGroup

	// Owned by the writer, of which there is one at a time (running), and by close
	// once the last has left. They outlive a writer, so that a writer started for a
	// keepalive allocates nothing.
	idle  *time.Timer // the writer's writerIdleExit; made by the first writer
	spare []int       // the sizes array last sent, for take to swap in
}

// writerIdleExit is how long a batch writer waits for more before it leaves. Long
// enough that a bulk sender's writer never leaves (its batches come microseconds
// apart), short enough that a connection sending a keepalive every two seconds has no
// writer most of the time; starting one again costs a microsecond.
const writerIdleExit = 100 * time.Millisecond

// batchPool holds the batch buffers of all conns: a conn holds one only while it has
// datagrams waiting or being sent, so an idle connection keeps none of its bursts'
// memory. A new buffer holds one datagram and grows (to about 94 KB in a bulk
// transfer): a keepalive does not cost a bulk transfer's buffer.
var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, MaxMTU+PacketOverhead+nonceSize); return &b }}

func newSendBatch(w SegmentWriter, sent func(n, bytes int, err error)) *sendBatch {
	b := &sendBatch{w: w, sent: sent, wake: make(chan struct{}, 1)}
	b.room = sync.NewCond(&b.mu)
	return b
}

// add seals p with seal into the batch, waiting while the batch is full, and starts
// the writer if none is up. It reports false once the batch is closed.
func (b *sendBatch) add(seal func(dst []byte) []byte) bool {
	b.mu.Lock()
	for len(b.sizes) >= batchMax && !b.closed {
		b.room.Wait()
	}
	if b.closed {
		b.mu.Unlock()
		return false
	}
	if b.buf == nil {
		b.buf = batchPool.Get().(*[]byte)
		*b.buf = (*b.buf)[:0]
	}
	before := len(*b.buf)
	*b.buf = seal(*b.buf)
	b.sizes = append(b.sizes, len(*b.buf)-before)
	first := len(b.sizes) == 1
	start := !b.running && !b.stopping
	if start {
		b.running = true
		b.writers.Add(1)
	}
	b.mu.Unlock()
	if start {
		go b.run()
	} else if first {
		signal(b.wake)
	}
	return true
}

// take returns the waiting batch (buf nil when there is none), leaving sizes, empty, in
// its place, and whether close has begun.
func (b *sendBatch) take(sizes []int) (*[]byte, []int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	buf := b.buf
	b.buf = nil
	sizes, b.sizes = b.sizes, sizes[:0]
	b.room.Broadcast()
	return buf, sizes, b.stopping
}

// run is the writer: it sends batches until none comes for writerIdleExit, or close
// stops it.
func (b *sendBatch) run() {
	defer b.writers.Done()
	if b.idle == nil {
		b.idle = time.NewTimer(writerIdleExit)
	}
	for {
		if stopping := b.flush(); stopping {
			// Stopped here, not on every exit: once running is false the next
			// writer may already have reset it.
			b.idle.Stop()
			return
		}
		b.idle.Reset(writerIdleExit)
		select {
		case <-b.wake: // more to send, or close has begun
		case <-b.idle.C:
			b.mu.Lock()
			leave := len(b.sizes) == 0
			if leave {
				b.running = false
			}
			b.mu.Unlock()
			if leave {
				return
			}
		}
	}
}

// flush sends the waiting batch, if any, and reports whether close has begun.
func (b *sendBatch) flush() bool {
	var (
		buf      *[]byte
		stopping bool
	)
	buf, b.spare, stopping = b.take(b.spare)
	if buf != nil {
		b.send(*buf, b.spare, b.sent)
		batchPool.Put(buf)
	}
	return stopping
}

// close stops the writer and sends what is left (a closing session's last packets go
// out first); add fails from then on.
func (b *sendBatch) close() {
	b.mu.Lock()
	b.stopping = true
	b.mu.Unlock()
	// A writer sees stopping at its next flush: this wakes it if it waits, and if
	// the buffer is full, the wake-up already in it does.
	signal(b.wake)
	b.writers.Wait()
	b.mu.Lock()
	b.closed = true
	b.room.Broadcast()
	b.mu.Unlock()
	b.flush() // what was added while no writer was up
}

// send cuts a batch into runs (datagrams of one size, the last of a run possibly
// shorter) and sends each with one WriteSegments call.
func (b *sendBatch) send(buf []byte, sizes []int, sent func(n, bytes int, err error)) {
	off := 0
	for i := 0; i < len(sizes); {
		seg, total, j := sizes[i], sizes[i], i+1
		for j < len(sizes) && sizes[j] <= seg && total+sizes[j] <= runMaxBytes {
			total += sizes[j]
			j++
			if sizes[j-1] < seg {
				break // a shorter datagram ends the run
			}
		}
		err := b.w.WriteSegments(buf[off:off+total], seg)
		if err != nil && j-i > 1 {
			// One datagram can fail a whole run: a path MTU probe too large for
			// the local link (EMSGSIZE) runs with the data packet after it.
			// Each goes alone, so only what cannot go is lost.
			b.sendEach(buf[off:off+total], sizes[i:j], sent)
		} else {
			sent(j-i, total, err)
		}
		off += total
		i = j
	}
}

// sendEach sends a failed run's datagrams one WriteSegments call each.
func (b *sendBatch) sendEach(run []byte, sizes []int, sent func(n, bytes int, err error)) {
	off := 0
	for _, n := range sizes {
		sent(1, n, b.w.WriteSegments(run[off:off+n], n))
		off += n
	}
}
