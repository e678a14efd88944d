package reliable

import (
	"bytes"
	"math"
	"runtime"
	"testing"
	"unsafe"
)

// streamBytes returns n bytes of stream data from offset off: a byte depends on
// its offset, so misplaced data shows.
func streamBytes(off uint64, n int) []byte {
	p := make([]byte, n)
	fillStreamBytes(p, off)
	return p
}

func fillStreamBytes(p []byte, off uint64) {
	for i := range p {
		o := off + uint64(i)
		p[i] = byte(o ^ o>>8 ^ o>>16*7)
	}
}

// sentChunk is a chunk as a test remembers it.
type sentChunk struct {
	off      uint64
	data     []byte
	fin      bool
	newBytes uint64
}

// mustNext calls next and fails unless it returns a chunk; the data is
// copied, as a packet builder would.
func mustNext(t *testing.T, s *sendStream, max int, credit uint64) sentChunk {
	t.Helper()
	off, data, fin, nb, ok := s.next(max, credit)
	if !ok {
		t.Fatalf("next(%d, %d): nothing to send", max, credit)
	}
	return sentChunk{off, bytes.Clone(data), fin, nb}
}

func mustNotNext(t *testing.T, s *sendStream, max int, credit uint64) {
	t.Helper()
	if s.hasData(credit) {
		t.Errorf("hasData(%d) = true", credit)
	}
	if off, data, fin, _, ok := s.next(max, credit); ok {
		t.Fatalf("next(%d, %d) = offset %d, %d bytes, fin %t; want nothing", max, credit, off, len(data), fin)
	}
}

func checkChunk(t *testing.T, c sentChunk, off uint64, n int, fin bool) {
	t.Helper()
	if c.off != off || len(c.data) != n || c.fin != fin {
		t.Fatalf("chunk at %d, %d bytes, fin %t; want %d, %d, %t", c.off, len(c.data), c.fin, off, n, fin)
	}
	if !bytes.Equal(c.data, streamBytes(off, n)) {
		t.Fatalf("chunk at %d: wrong bytes", off)
	}
}

func blockCount(b *block) int {
	n := 0
	for ; b != nil; b = b.next {
		n++
	}
	return n
}

const unlimitedCredit = math.MaxUint64

func TestSendStreamChunking(t *testing.T) {
	s := newSendStream(0, 1<<20, 1<<20)
	const n = 40000
	if got := s.write(streamBytes(0, n)); got != n {
		t.Fatalf("write = %d", got)
	}
	if got := s.buffered(); got != n {
		t.Fatalf("buffered = %d", got)
	}
	var off uint64
	for off < n {
		if !s.hasData(unlimitedCredit) {
			t.Fatalf("hasData false at %d", off)
		}
		c := mustNext(t, s, 1200, unlimitedCredit)
		want := min(1200, n-int(off), blockSize-int(off%blockSize))
		checkChunk(t, c, off, want, false)
		if c.newBytes != uint64(want) {
			t.Fatalf("newBytes %d, want %d", c.newBytes, want)
		}
		if c.off/blockSize != (c.off+uint64(len(c.data))-1)/blockSize {
			t.Fatalf("chunk [%d, %d) spans two blocks", c.off, c.off+uint64(len(c.data)))
		}
		off += uint64(len(c.data))
	}
	mustNotNext(t, s, 1200, unlimitedCredit)

	// Small writes land in the same block, and a chunk takes them together.
	s = newSendStream(0, 1<<20, 1<<20)
	for i := range 10 {
		s.write(streamBytes(uint64(i*10), 10))
	}
	checkChunk(t, mustNext(t, s, 1200, unlimitedCredit), 0, 100, false)
	if got := blockCount(s.head); got != 1 {
		t.Errorf("%d blocks for 100 bytes", got)
	}
}

func TestSendStreamBufferLimit(t *testing.T) {
	s := newSendStream(0, 1<<20, 10000)
	if got := s.writable(); got != 10000 {
		t.Fatalf("writable = %d", got)
	}
	if got := s.write(streamBytes(0, 20000)); got != 10000 {
		t.Fatalf("write = %d, want 10000", got)
	}
	if got := s.write(streamBytes(10000, 1)); got != 0 || s.writable() != 0 {
		t.Fatalf("full buffer: write = %d, writable = %d", got, s.writable())
	}
	c := mustNext(t, s, 4000, unlimitedCredit)
	if got := s.writable(); got != 0 {
		t.Fatalf("sending frees nothing, writable = %d", got)
	}
	s.onAcked(c.off, uint32(len(c.data)), false)
	if got := s.writable(); got != 4000 {
		t.Fatalf("writable = %d after 4000 acknowledged", got)
	}
	if got := s.write(streamBytes(10000, 5000)); got != 4000 {
		t.Fatalf("write = %d", got)
	}
	if got := s.buffered(); got != 10000 {
		t.Fatalf("buffered = %d", got)
	}

	if got := newSendStream(0, 0, 0).writable(); got != InitialMaxStreamData {
		t.Errorf("zero bufferLimit: writable = %d, want InitialMaxStreamData", got)
	}
}

func TestSendStreamFlowControl(t *testing.T) {
	s := newSendStream(4, 5000, 1<<20)
	s.write(streamBytes(0, 10000))

	// The connection's credit bounds new data too, and newBytes adds up to
	// what the stream sent.
	c := mustNext(t, s, 1200, 100)
	checkChunk(t, c, 0, 100, false)
	if c.newBytes != 100 {
		t.Fatalf("newBytes = %d", c.newBytes)
	}
	mustNotNext(t, s, 1200, 0)
	if _, blocked := s.blockedAt(); blocked {
		t.Error("blocked on the stream's limit while the connection's limit is what stops it")
	}
	var total = c.newBytes
	for s.hasData(unlimitedCredit) {
		c := mustNext(t, s, 1200, unlimitedCredit)
		total += c.newBytes
	}
	if total != 5000 || s.sent != 5000 {
		t.Fatalf("sent %d (newBytes %d) under a limit of 5000", s.sent, total)
	}
	if limit, blocked := s.blockedAt(); !blocked || limit != 5000 {
		t.Fatalf("blockedAt = %d, %t; want 5000, true", limit, blocked)
	}
	s.setPeerMax(4000) // reordered and smaller: ignored
	mustNotNext(t, s, 1200, unlimitedCredit)
	s.setPeerMax(6000)
	if _, blocked := s.blockedAt(); blocked {
		t.Error("still blocked after MAX_STREAM_DATA")
	}
	c = mustNext(t, s, 1200, unlimitedCredit)
	checkChunk(t, c, 5000, 1000, false)
	if c.newBytes != 1000 {
		t.Fatalf("newBytes = %d", c.newBytes)
	}

	// Lost data goes out again even with no credit left, and costs none.
	s.onLost(1000, 1000, false)
	c = mustNext(t, s, 1200, 0)
	checkChunk(t, c, 1000, 1000, false)
	if c.newBytes != 0 {
		t.Fatalf("resent data charged %d bytes", c.newBytes)
	}

	// Nothing written: not blocked.
	if _, blocked := newSendStream(0, 0, 0).blockedAt(); blocked {
		t.Error("an empty stream is blocked")
	}
}

func TestSendStreamRetransmission(t *testing.T) {
	s := newSendStream(0, 1<<20, 1<<20)
	s.write(streamBytes(0, 5000))
	var chunks []sentChunk
	for s.hasData(unlimitedCredit) {
		chunks = append(chunks, mustNext(t, s, 1000, unlimitedCredit))
	}
	if len(chunks) != 5 {
		t.Fatalf("%d chunks", len(chunks))
	}
	// Lose 1 and 3, acknowledge the rest: the lost ones come back in order.
	for _, i := range []int{0, 2, 4} {
		s.onAcked(chunks[i].off, 1000, false)
	}
	s.onLost(3000, 1000, false)
	s.onLost(1000, 1000, false)
	checkChunk(t, mustNext(t, s, 1200, unlimitedCredit), 1000, 1000, false)
	checkChunk(t, mustNext(t, s, 1200, unlimitedCredit), 3000, 1000, false)
	mustNotNext(t, s, 1200, unlimitedCredit)
	s.onAcked(1000, 1000, false)
	s.onAcked(3000, 1000, false)
	if s.acked != 5000 || s.buffered() != 0 {
		t.Fatalf("acked %d, buffered %d", s.acked, s.buffered())
	}

	// A lost range partly acknowledged before it is resent (a spurious
	// loss whose first copy's ACK arrives late) goes out without the
	// acknowledged part; a lost range partly acknowledged earlier is queued
	// without it.
	s = newSendStream(0, 1<<20, 1<<20)
	s.write(streamBytes(0, 8000))
	mustNext(t, s, 4000, unlimitedCredit)
	mustNext(t, s, 4000, unlimitedCredit)
	s.onLost(0, 4000, false)
	s.onAcked(1000, 500, false)
	s.onAcked(6000, 1000, false)
	s.onLost(4000, 4000, false)
	want := []struct {
		off uint64
		n   int
	}{{0, 1000}, {1500, 1200}, {2700, 1200}, {3900, 1200}, {5100, 900}, {7000, 1000}}
	for _, w := range want {
		checkChunk(t, mustNext(t, s, 1200, unlimitedCredit), w.off, w.n, false)
	}
	mustNotNext(t, s, 1200, unlimitedCredit)

	// Lost again after part of the retransmission is acknowledged.
	s.onAcked(0, 1000, false)
	s.onLost(1500, 1200, false)
	s.onAcked(1500, 600, false) // the first copy's ACK after all
	checkChunk(t, mustNext(t, s, 1200, unlimitedCredit), 2100, 600, false)

	// A loss for bytes already acknowledged queues nothing.
	s.onLost(0, 1000, false)
	s.onLost(6000, 1000, false)
	mustNotNext(t, s, 1200, unlimitedCredit)
}

func TestSendStreamFin(t *testing.T) {
	t.Run("with the last data", func(t *testing.T) {
		s := newSendStream(0, 1<<20, 1<<20)
		s.write(streamBytes(0, 2000))
		s.close()
		if got := s.write([]byte{1}); got != 0 {
			t.Fatalf("write after close = %d", got)
		}
		checkChunk(t, mustNext(t, s, 1200, unlimitedCredit), 0, 1200, false)
		checkChunk(t, mustNext(t, s, 1200, unlimitedCredit), 1200, 800, true)
		mustNotNext(t, s, 1200, unlimitedCredit)
		s.onAcked(1200, 800, true)
		if s.finished() {
			t.Fatal("finished with bytes unacknowledged")
		}
		s.onAcked(0, 1200, false)
		if !s.finished() {
			t.Fatal("not finished with every byte and the FIN acknowledged")
		}
	})
	t.Run("alone", func(t *testing.T) {
		s := newSendStream(0, 1<<20, 1<<20)
		s.write(streamBytes(0, 100))
		checkChunk(t, mustNext(t, s, 1200, unlimitedCredit), 0, 100, false)
		s.close()
		c := mustNext(t, s, 1200, 0) // a FIN costs no credit
		checkChunk(t, c, 100, 0, true)
		mustNotNext(t, s, 1200, unlimitedCredit)
		s.onAcked(100, 0, true)
		if s.finished() {
			t.Fatal("finished with bytes unacknowledged")
		}
		s.onAcked(0, 100, false)
		if !s.finished() {
			t.Fatal("not finished")
		}
	})
	t.Run("empty stream", func(t *testing.T) {
		s := newSendStream(0, 0, 0) // not even credit for one byte
		s.close()
		if !s.hasData(0) {
			t.Fatal("no FIN to send")
		}
		checkChunk(t, mustNext(t, s, 0, 0), 0, 0, true)
		s.onAcked(0, 0, true)
		if !s.finished() {
			t.Fatal("not finished")
		}
	})
	t.Run("waits for the data before it", func(t *testing.T) {
		s := newSendStream(0, 1000, 1<<20)
		s.write(streamBytes(0, 2000))
		s.close()
		checkChunk(t, mustNext(t, s, 1200, unlimitedCredit), 0, 1000, false)
		mustNotNext(t, s, 1200, unlimitedCredit) // blocked at 1000: no FIN yet
		s.setPeerMax(2000)
		checkChunk(t, mustNext(t, s, 1200, unlimitedCredit), 1000, 1000, true)
	})
	t.Run("lost with its data", func(t *testing.T) {
		s := newSendStream(0, 1<<20, 1<<20)
		s.write(streamBytes(0, 100))
		s.close()
		checkChunk(t, mustNext(t, s, 1200, unlimitedCredit), 0, 100, true)
		s.onLost(0, 100, true)
		checkChunk(t, mustNext(t, s, 60, unlimitedCredit), 0, 60, false)
		checkChunk(t, mustNext(t, s, 60, unlimitedCredit), 60, 40, true)
		mustNotNext(t, s, 1200, unlimitedCredit)
	})
	t.Run("lost alone", func(t *testing.T) {
		s := newSendStream(0, 1<<20, 1<<20)
		s.write(streamBytes(0, 100))
		mustNext(t, s, 1200, unlimitedCredit)
		s.close()
		checkChunk(t, mustNext(t, s, 1200, unlimitedCredit), 100, 0, true)
		s.onAcked(0, 100, false)
		s.onLost(100, 0, true)
		if !s.hasData(0) {
			t.Fatal("lost FIN not queued")
		}
		checkChunk(t, mustNext(t, s, 1200, 0), 100, 0, true)
		s.onAcked(100, 0, true)
		if !s.finished() {
			t.Fatal("not finished")
		}
	})
	t.Run("lost, then acknowledged late", func(t *testing.T) {
		s := newSendStream(0, 1<<20, 1<<20)
		s.close()
		mustNext(t, s, 1200, unlimitedCredit)
		s.onLost(0, 0, true)
		s.onAcked(0, 0, true)
		mustNotNext(t, s, 1200, unlimitedCredit)
		if !s.finished() {
			t.Fatal("not finished")
		}
		s.onLost(0, 0, true) // a second copy's loss, after the ACK
		mustNotNext(t, s, 1200, unlimitedCredit)
	})
	t.Run("lost with other losses before it", func(t *testing.T) {
		s := newSendStream(0, 1<<20, 1<<20)
		s.write(streamBytes(0, 300))
		mustNext(t, s, 100, unlimitedCredit)
		mustNext(t, s, 100, unlimitedCredit)
		s.close()
		checkChunk(t, mustNext(t, s, 100, unlimitedCredit), 200, 100, true)
		s.onLost(200, 100, true)
		s.onLost(0, 100, false)
		checkChunk(t, mustNext(t, s, 1200, unlimitedCredit), 0, 100, false)
		checkChunk(t, mustNext(t, s, 1200, unlimitedCredit), 200, 100, true)
	})
}

func TestSendStreamReset(t *testing.T) {
	s := newSendStream(0, 1<<20, 1<<20)
	s.write(streamBytes(0, 5000))
	c := mustNext(t, s, 3000, unlimitedCredit)
	s.onAcked(0, 1000, false)
	s.reset(7)
	if code, final, owed := s.resetOwed(); !owed || code != 7 || final != 3000 {
		t.Fatalf("resetOwed = %d, %d, %t; want 7, 3000 (the highest offset sent), true", code, final, owed)
	}
	s.reset(8) // the first code stands
	if code, _, _ := s.resetOwed(); code != 7 {
		t.Fatalf("code %d after a second reset", code)
	}
	if s.head != nil || s.buffered() != 0 || !s.lost.empty() || !s.ackedAbove.empty() {
		t.Fatalf("reset kept data: %d blocks, %d buffered", blockCount(s.head), s.buffered())
	}
	if got := s.write([]byte{1}); got != 0 || s.writable() != 0 {
		t.Fatalf("write after reset = %d, writable %d", got, s.writable())
	}
	s.onLost(c.off, uint32(len(c.data)), false) // lost data is not resent (RFC 9000 §13.3)
	s.close()
	mustNotNext(t, s, 1200, unlimitedCredit)
	if _, blocked := s.blockedAt(); blocked {
		t.Error("blocked after reset")
	}
	s.onAcked(c.off, uint32(len(c.data)), true)
	if s.finished() {
		t.Fatal("finished before the RESET_STREAM is acknowledged")
	}
	s.onResetSent()
	if _, _, owed := s.resetOwed(); owed {
		t.Fatal("still owed after it was sent")
	}
	s.onResetLost()
	if _, final, owed := s.resetOwed(); !owed || final != 3000 {
		t.Fatal("not owed again after it was lost")
	}
	s.onResetSent()
	s.onResetAcked()
	s.onResetLost() // a second copy's loss
	if _, _, owed := s.resetOwed(); owed || !s.finished() {
		t.Fatalf("owed %t, finished %t after the ACK", owed, s.finished())
	}

	// Once everything is acknowledged there is nothing to reset.
	s = newSendStream(0, 1<<20, 1<<20)
	s.write(streamBytes(0, 10))
	s.close()
	mustNext(t, s, 1200, unlimitedCredit)
	s.onAcked(0, 10, true)
	s.reset(1)
	if _, _, owed := s.resetOwed(); owed || !s.finished() {
		t.Fatal("reset after the end")
	}

	// A stream reset before it sent anything has final size 0.
	s = newSendStream(0, 1<<20, 1<<20)
	s.write(streamBytes(0, 10))
	s.reset(3)
	if _, final, owed := s.resetOwed(); !owed || final != 0 {
		t.Fatalf("final size %d", final)
	}
}

// TestSendStreamReleasesBlocks checks that a block goes back as soon as all
// of it is acknowledged, and that an idle stream holds nothing.
func TestSendStreamReleasesBlocks(t *testing.T) {
	s := newSendStream(0, 1<<20, 1<<20)
	s.write(streamBytes(0, 3*blockSize+100))
	if got := blockCount(s.head); got != 4 {
		t.Fatalf("%d blocks", got)
	}
	var chunks []sentChunk
	for s.hasData(unlimitedCredit) {
		chunks = append(chunks, mustNext(t, s, 1200, unlimitedCredit))
	}
	// Acknowledge everything but the first chunk: nothing can go.
	for _, c := range chunks[1:] {
		s.onAcked(c.off, uint32(len(c.data)), false)
	}
	if got := blockCount(s.head); got != 4 {
		t.Fatalf("%d blocks with the first bytes unacknowledged", got)
	}
	s.onAcked(0, uint32(len(chunks[0].data)), false)
	if s.head != nil || s.tail != nil || s.cur != nil {
		t.Fatalf("%d blocks held with everything acknowledged", blockCount(s.head))
	}
	if s.ackedAbove.big != nil || s.lost.big != nil || !s.ackedAbove.empty() {
		t.Fatal("range sets hold memory")
	}

	// In order, each block goes as its last byte is acknowledged.
	s.write(streamBytes(s.written, 2*blockSize))
	start := s.written - 2*blockSize
	for s.hasData(unlimitedCredit) {
		c := mustNext(t, s, 1200, unlimitedCredit)
		s.onAcked(c.off, uint32(len(c.data)), false)
		held := blockCount(s.head)
		wantHeld := int((blockStart(s.written-1)-blockStart(s.acked))/blockSize) + 1
		if s.acked == s.written {
			wantHeld = 0
		}
		if held != wantHeld {
			t.Fatalf("acked %d of [%d, %d): %d blocks, want %d", s.acked, start, s.written, held, wantHeld)
		}
	}

	// Writing again after the stream went idle mid-block works: the new
	// block sits where the offsets say.
	s.write(streamBytes(s.written, 10))
	checkChunk(t, mustNext(t, s, 1200, unlimitedCredit), s.written-10, 10, false)
}

// TestSendStreamAllocs checks the send path allocates nothing once warm:
// blocks come from the pool and go back to it.
func TestSendStreamAllocs(t *testing.T) {
	s := newSendStream(0, math.MaxUint64>>2, 1<<20)
	p := streamBytes(0, 1200)
	cycle := func() {
		s.write(p)
		off, data, _, _, _ := s.next(1200, unlimitedCredit)
		s.onAcked(off, uint32(len(data)), false)
	}
	for range 100 {
		cycle()
	}
	if n := testing.AllocsPerRun(1000, cycle); n != 0 {
		t.Errorf("lock-step: %v allocations per chunk, want 0", n)
	}

	// With a window of chunks in flight, a lost one now and then, and
	// acknowledgements out of order.
	s = newSendStream(0, math.MaxUint64>>2, 1<<20)
	type inflight struct {
		off uint64
		n   uint32
	}
	var fl []inflight
	i := 0
	window := func() {
		i++
		s.write(p)
		for s.hasData(unlimitedCredit) {
			off, data, _, _, _ := s.next(1200, unlimitedCredit)
			fl = append(fl, inflight{off, uint32(len(data))})
		}
		if len(fl) < 200 {
			return
		}
		switch i % 50 {
		case 0:
			s.onLost(fl[0].off, fl[0].n, false)
		case 25:
			fl[0], fl[1] = fl[1], fl[0]
			fallthrough
		default:
			s.onAcked(fl[0].off, fl[0].n, false)
		}
		fl = append(fl[:0], fl[1:]...)
	}
	for range 1000 {
		window()
	}
	if n := testing.AllocsPerRun(2000, window); n != 0 {
		t.Errorf("window: %v allocations per chunk, want 0", n)
	}
}

// BenchmarkSendStream measures the send path a chunk at a time: write 1200
// bytes, take them as a chunk, and acknowledge a chunk.
func BenchmarkSendStream(b *testing.B) {
	p := streamBytes(0, 1200)
	b.Run("lockstep", func(b *testing.B) {
		s := newSendStream(0, math.MaxUint64>>2, 1<<20)
		b.SetBytes(int64(len(p)))
		b.ReportAllocs()
		for b.Loop() {
			s.write(p)
			off, data, _, _, _ := s.next(1200, unlimitedCredit)
			s.onAcked(off, uint32(len(data)), false)
		}
	})
	// A megabyte in flight, acknowledged in order: the blocks cycle
	// through the pool as they would on a fast path.
	b.Run("window", func(b *testing.B) {
		s := newSendStream(0, math.MaxUint64>>2, 2<<20)
		type inflight struct {
			off uint64
			n   uint32
		}
		fl := make([]inflight, 0, 2048)
		head := 0
		b.SetBytes(int64(len(p)))
		b.ReportAllocs()
		for b.Loop() {
			s.write(p)
			for s.hasData(unlimitedCredit) {
				off, data, _, _, _ := s.next(1200, unlimitedCredit)
				fl = append(fl, inflight{off, uint32(len(data))})
			}
			if s.buffered() > 1<<20 {
				s.onAcked(fl[head].off, fl[head].n, false)
				head++
				if head == 1024 {
					fl = append(fl[:0], fl[head:]...)
					head = 0
				}
			}
		}
	})
}

// maxIdleStream is the most memory an idle stream half may hold: the reason
// for this transport is idle memory per connection.
const maxIdleStream = 300

// heapPerIdle makes n objects with mk, which leaves each idle, and returns
// the heap they hold each, as the runtime counts it (size classes
// included), once the pool's blocks are collected.
func heapPerIdle(n int, mk func() any) float64 {
	keep := make([]any, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range keep {
		keep[i] = mk()
	}
	// Twice: the pool's victim cache survives one collection.
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(keep)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// TestSendStreamIdleMemory checks what a sendStream holds once everything it
// sent is acknowledged, after traffic with losses and reordered ACKs.
func TestSendStreamIdleMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("heap measurement")
	}
	p := streamBytes(0, 40000)
	mk := func() any {
		s := newSendStream(0, 1<<20, 1<<20)
		s.write(p)
		var cs []sentChunk
		for s.hasData(unlimitedCredit) {
			off, data, fin, _, _ := s.next(1200, unlimitedCredit)
			cs = append(cs, sentChunk{off: off, data: data, fin: fin})
		}
		for i := len(cs) - 1; i >= 0; i -= 2 { // every other chunk lost: many spans
			s.onLost(cs[i].off, uint32(len(cs[i].data)), false)
		}
		for i := len(cs) - 2; i >= 0; i -= 2 {
			s.onAcked(cs[i].off, uint32(len(cs[i].data)), false)
		}
		for s.hasData(unlimitedCredit) {
			off, data, _, _, _ := s.next(1200, unlimitedCredit)
			s.onAcked(off, uint32(len(data)), false)
		}
		if s.buffered() != 0 || s.head != nil || s.lost.big != nil || s.ackedAbove.big != nil {
			panic("not idle")
		}
		return s
	}
	per := heapPerIdle(2000, mk)
	t.Logf("idle sendStream: %.0f bytes (struct %d)", per, unsafe.Sizeof(sendStream{}))
	if per > maxIdleStream {
		t.Errorf("an idle sendStream holds %.0f bytes, want at most %d", per, maxIdleStream)
	}
}
