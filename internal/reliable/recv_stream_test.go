package reliable

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"unsafe"
)

func mustData(t *testing.T, s *recvStream, off uint64, n int, fin bool) uint64 {
	t.Helper()
	nb, err := s.onData(off, streamBytes(off, n), fin)
	if err != nil {
		t.Fatalf("onData(%d, %d bytes, fin %t): %v", off, n, fin, err)
	}
	return nb
}

// readChecked reads until read returns nothing or an error, checking the bytes.
func readChecked(t *testing.T, s *recvStream, buf []byte) (n int, err error) {
	t.Helper()
	for {
		off := s.readOff
		m, err := s.read(buf)
		if m > 0 && err != nil {
			t.Fatalf("read = %d, %v", m, err)
		}
		if !bytes.Equal(buf[:m], streamBytes(off, m)) {
			t.Fatalf("read at %d: wrong bytes", off)
		}
		n += m
		if m == 0 || err != nil {
			return n, err
		}
	}
}

func TestRecvStreamInOrder(t *testing.T) {
	s := newRecvStream(0, 0)
	if s.readable() {
		t.Fatal("readable when empty")
	}
	if n, err := s.read(make([]byte, 10)); n != 0 || err != nil {
		t.Fatalf("read on empty = %d, %v", n, err)
	}
	if nb := mustData(t, s, 0, 1000, false); nb != 1000 {
		t.Fatalf("newBytes = %d", nb)
	}
	if nb := mustData(t, s, 1000, 500, true); nb != 500 {
		t.Fatalf("newBytes = %d", nb)
	}
	if !s.readable() || s.buffered() != 1500 {
		t.Fatalf("readable %t, buffered %d", s.readable(), s.buffered())
	}
	buf := make([]byte, 700)
	if n, err := readChecked(t, s, buf); n != 1500 || err != io.EOF {
		t.Fatalf("read %d, %v; want 1500, EOF", n, err)
	}
	if !s.finished() || s.consumed() != 1500 || s.head != nil {
		t.Fatalf("finished %t, consumed %d, %d blocks", s.finished(), s.consumed(), blockCount(s.head))
	}
	if n, err := s.read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after EOF = %d, %v", n, err)
	}
	s.stopReading(1) // too late: nothing to stop
	if _, owed := s.stopOwed(); owed || s.stopped {
		t.Fatal("stopReading after EOF took effect")
	}

	// A FIN without data, after the data.
	s = newRecvStream(0, 0)
	mustData(t, s, 0, 100, false)
	readChecked(t, s, buf)
	if s.readable() || s.head != nil {
		t.Fatalf("readable %t, %d blocks after reading everything", s.readable(), blockCount(s.head))
	}
	mustData(t, s, 100, 0, true)
	if n, err := s.read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read = %d, %v; want EOF", n, err)
	}
	if !s.finished() {
		t.Fatal("not finished")
	}

	// A read into an empty buffer reads nothing and is not EOF.
	s = newRecvStream(0, 0)
	mustData(t, s, 0, 10, true)
	if n, err := s.read(nil); n != 0 || err != nil {
		t.Fatalf("read(nil) = %d, %v", n, err)
	}
}

// TestRecvStreamReorder delivers a stream in shuffled, duplicated and
// overlapping pieces, reading as it goes.
func TestRecvStreamReorder(t *testing.T) {
	const size = 5*blockSize + 777
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 2))
		s := newRecvStream(0, 1<<20)
		s.onMaxDataSent(1 << 20)
		type piece struct {
			off uint64
			n   int
		}
		var pieces []piece
		for off := 0; off < size; {
			n := min(1+rng.IntN(3000), size-off)
			pieces = append(pieces, piece{uint64(off), n})
			// Now and then a piece that overlaps its neighbours.
			if rng.IntN(4) == 0 {
				lo := max(0, off-rng.IntN(2000))
				pieces = append(pieces, piece{uint64(lo), min(size-lo, n+rng.IntN(4000))})
			}
			off += n
		}
		// Duplicates.
		for range len(pieces) / 5 {
			pieces = append(pieces, pieces[rng.IntN(len(pieces))])
		}
		rng.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })

		var total uint64
		var got int
		buf := make([]byte, 1+rng.IntN(5000))
		for _, p := range pieces {
			fin := p.off+uint64(p.n) == size
			total += mustData(t, s, p.off, p.n, fin)
			n, err := readChecked(t, s, buf)
			got += n
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
		}
		n, err := readChecked(t, s, buf)
		got += n
		if got != size || err != io.EOF {
			t.Fatalf("seed %d: read %d of %d, %v", seed, got, size, err)
		}
		if total != size {
			t.Fatalf("seed %d: newBytes add up to %d, want %d", seed, total, size)
		}
		if s.head != nil || !s.beyond.empty() || s.beyond.big != nil {
			t.Fatalf("seed %d: memory held after EOF", seed)
		}
	}
}

// TestRecvStreamGap checks that out-of-order data waits in its block until
// the gap fills, and that blocks go as they are read.
func TestRecvStreamGap(t *testing.T) {
	s := newRecvStream(0, 0)
	buf := make([]byte, 4*blockSize)
	if nb := mustData(t, s, 2*blockSize+10, 100, false); nb != 2*blockSize+110 {
		t.Fatalf("newBytes = %d", nb)
	}
	if s.readable() {
		t.Fatal("readable with a gap at 0")
	}
	if nb := mustData(t, s, 10, 100, false); nb != 0 {
		t.Fatalf("newBytes = %d for data below the highest offset", nb)
	}
	if got := blockCount(s.head); got != 2 {
		t.Fatalf("%d blocks", got)
	}
	if s.buffered() != 200 {
		t.Fatalf("buffered = %d", s.buffered())
	}
	mustData(t, s, 0, 10, false)
	if n, _ := readChecked(t, s, buf); n != 110 {
		t.Fatalf("read %d, want 110", n)
	}
	// Fill the rest of the gap with one frame that spans three blocks.
	mustData(t, s, 110, 2*blockSize-100, false)
	if got := blockCount(s.head); got != 3 {
		t.Fatalf("%d blocks", got)
	}
	if n, _ := readChecked(t, s, buf); n != 2*blockSize {
		t.Fatalf("read %d", n)
	}
	if s.head != nil || s.buffered() != 0 || s.consumed() != 2*blockSize+110 {
		t.Fatalf("%d blocks, buffered %d, consumed %d", blockCount(s.head), s.buffered(), s.consumed())
	}
}

func TestRecvStreamFlowControl(t *testing.T) {
	s := newRecvStream(8, InitialMaxStreamData)
	mustData(t, s, InitialMaxStreamData-10, 10, false) // up to the limit exactly
	if _, err := s.onData(InitialMaxStreamData-10, make([]byte, 11), false); !errors.Is(err, ErrFlowControl) {
		t.Fatalf("beyond the limit: %v", err)
	}
	if _, err := s.onData(1<<62, nil, false); !errors.Is(err, ErrFlowControl) {
		t.Fatalf("far beyond the limit: %v", err)
	}
	if _, err := s.onData(^uint64(0)-5, make([]byte, 10), false); !errors.Is(err, ErrFlowControl) {
		t.Fatalf("offset overflow: %v", err)
	}
	if _, err := s.onReset(0, InitialMaxStreamData+1); !errors.Is(err, ErrFlowControl) {
		t.Fatalf("reset beyond the limit: %v", err)
	}
	// The limit is what was advertised, not what the window would allow.
	s = newRecvStream(0, 1<<20)
	if _, err := s.onData(InitialMaxStreamData, []byte{1}, false); !errors.Is(err, ErrFlowControl) {
		t.Fatalf("beyond InitialMaxStreamData before any MAX_STREAM_DATA: %v", err)
	}
	max, owed := s.maxDataOwed()
	if !owed || max != 1<<20 {
		t.Fatalf("maxDataOwed = %d, %t", max, owed)
	}
	s.onMaxDataSent(max)
	mustData(t, s, 1<<20-1, 1, false)
	if _, err := s.onData(1<<20, []byte{1}, false); !errors.Is(err, ErrFlowControl) {
		t.Fatalf("beyond the advertised limit: %v", err)
	}
}

func TestRecvStreamFinalSize(t *testing.T) {
	for _, c := range []struct {
		name string
		do   func(s *recvStream) error
	}{
		{"data beyond the final size", func(s *recvStream) error {
			s.onData(0, streamBytes(0, 100), true)
			_, err := s.onData(100, []byte{1}, false)
			return err
		}},
		{"FIN moved down", func(s *recvStream) error {
			s.onData(0, streamBytes(0, 100), true)
			_, err := s.onData(0, streamBytes(0, 90), true)
			return err
		}},
		{"FIN moved up", func(s *recvStream) error {
			s.onData(50, nil, true)
			_, err := s.onData(50, streamBytes(50, 10), true)
			return err
		}},
		{"FIN below data received", func(s *recvStream) error {
			s.onData(100, streamBytes(100, 100), false)
			_, err := s.onData(0, streamBytes(0, 100), true)
			return err
		}},
		{"reset moves the final size", func(s *recvStream) error {
			s.onData(0, streamBytes(0, 100), true)
			_, err := s.onReset(1, 99)
			return err
		}},
		{"reset below data received", func(s *recvStream) error {
			s.onData(0, streamBytes(0, 100), false)
			_, err := s.onReset(1, 99)
			return err
		}},
		{"data beyond a reset's final size", func(s *recvStream) error {
			s.onReset(1, 50)
			_, err := s.onData(40, streamBytes(40, 20), false)
			return err
		}},
		{"FIN after a reset, elsewhere", func(s *recvStream) error {
			s.onReset(1, 50)
			_, err := s.onData(10, streamBytes(10, 20), true)
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.do(newRecvStream(0, 0)); !errors.Is(err, ErrFinalSize) {
				t.Fatalf("err = %v, want ErrFinalSize", err)
			}
		})
	}

	// The same FIN again, and data below it, are fine.
	s := newRecvStream(0, 0)
	mustData(t, s, 0, 100, true)
	mustData(t, s, 50, 50, true)
	mustData(t, s, 20, 30, false)
	mustData(t, s, 100, 0, true)
	if _, err := s.onReset(1, 100); err != nil {
		t.Fatalf("reset with the same final size: %v", err)
	}
}

func TestRecvStreamReset(t *testing.T) {
	s := newRecvStream(0, 0)
	mustData(t, s, 0, 1000, false)
	mustData(t, s, 3000, 1000, false)
	nb, err := s.onReset(5, 6000)
	if err != nil || nb != 2000 {
		t.Fatalf("onReset = %d, %v; want 2000 new bytes", nb, err)
	}
	if s.head != nil || s.buffered() != 0 || !s.beyond.empty() {
		t.Fatal("reset kept data")
	}
	if s.consumed() != 6000 {
		t.Fatalf("consumed = %d, want the final size", s.consumed())
	}
	if !s.readable() || s.finished() {
		t.Fatalf("readable %t, finished %t before the application saw the reset", s.readable(), s.finished())
	}
	if nb := mustData(t, s, 1000, 2000, false); nb != 0 { // late data: dropped
		t.Fatalf("newBytes = %d", nb)
	}
	if nb, err := s.onReset(6, 6000); err != nil || nb != 0 {
		t.Fatalf("second reset = %d, %v", nb, err)
	}
	n, err := s.read(make([]byte, 100))
	var re *StreamResetError
	if n != 0 || !errors.As(err, &re) || re.Code != 5 {
		t.Fatalf("read = %d, %v; want a StreamResetError with code 5", n, err)
	}
	if err.Error() == "" || !s.finished() {
		t.Fatal("not finished after the application saw the reset")
	}
	if _, owed := s.maxDataOwed(); owed {
		t.Error("MAX_STREAM_DATA owed after reset")
	}

	// With every byte in, a reset changes nothing: the data is read to EOF.
	s = newRecvStream(0, 0)
	mustData(t, s, 0, 1000, true)
	if _, err := s.onReset(5, 1000); err != nil {
		t.Fatal(err)
	}
	if n, err := readChecked(t, s, make([]byte, 4000)); n != 1000 || err != io.EOF {
		t.Fatalf("read %d, %v; want all, EOF", n, err)
	}

	// A reset for a stream with nothing received charges its whole final
	// size.
	s = newRecvStream(0, 0)
	if nb, err := s.onReset(1, 500); nb != 500 || err != nil {
		t.Fatalf("onReset = %d, %v", nb, err)
	}
}

func TestRecvStreamStopReading(t *testing.T) {
	s := newRecvStream(0, 1<<20)
	s.onMaxDataSent(1 << 20)
	mustData(t, s, 0, 1000, false)
	mustData(t, s, 2000, 1000, false)
	readChecked(t, s, make([]byte, 500))
	s.stopReading(9)
	if s.head != nil || s.buffered() != 0 {
		t.Fatal("stopReading kept data")
	}
	if s.consumed() != 3000 {
		t.Fatalf("consumed = %d, want everything received", s.consumed())
	}
	if n, err := s.read(make([]byte, 10)); n != 0 || err == nil || s.readable() {
		t.Fatalf("read after stopReading = %d, %v", n, err)
	}
	if _, owed := s.maxDataOwed(); owed {
		t.Error("MAX_STREAM_DATA owed after stopReading")
	}
	code, owed := s.stopOwed()
	if !owed || code != 9 {
		t.Fatalf("stopOwed = %d, %t", code, owed)
	}
	s.onStopSent()
	if _, owed := s.stopOwed(); owed {
		t.Fatal("owed after sent")
	}
	s.onStopLost()
	if _, owed := s.stopOwed(); !owed {
		t.Fatal("not owed after lost")
	}
	s.onStopSent()

	// Data still arrives: counted for flow control, not kept.
	if nb := mustData(t, s, 3000, 1000, false); nb != 1000 {
		t.Fatalf("newBytes = %d", nb)
	}
	if s.head != nil || s.consumed() != 4000 || s.finished() {
		t.Fatalf("%d blocks, consumed %d, finished %t", blockCount(s.head), s.consumed(), s.finished())
	}
	// The peer's answer, a RESET_STREAM (RFC 9000 §3.5), ends it.
	if nb, err := s.onReset(1, 5000); nb != 1000 || err != nil {
		t.Fatalf("onReset = %d, %v", nb, err)
	}
	if !s.finished() || s.consumed() != 5000 {
		t.Fatalf("finished %t, consumed %d", s.finished(), s.consumed())
	}
	s.onStopLost()
	if _, owed := s.stopOwed(); owed {
		t.Fatal("STOP_SENDING owed after the peer reset")
	}

	// Or every byte arriving does, the last ones after stopReading.
	s = newRecvStream(0, 0)
	mustData(t, s, 1000, 1000, true)
	s.stopReading(1)
	if _, owed := s.stopOwed(); !owed {
		t.Fatal("STOP_SENDING not owed with bytes missing")
	}
	mustData(t, s, 0, 1000, false)
	if _, owed := s.stopOwed(); owed || !s.finished() {
		t.Fatalf("owed %t, finished %t with every byte in", owed, s.finished())
	}

	// Nothing is owed when the peer had already finished.
	s = newRecvStream(0, 0)
	mustData(t, s, 0, 1000, true)
	s.stopReading(1)
	if _, owed := s.stopOwed(); owed || !s.finished() {
		t.Fatalf("owed %t, finished %t", owed, s.finished())
	}
	s = newRecvStream(0, 0)
	s.onReset(3, 10)
	s.stopReading(1)
	if _, owed := s.stopOwed(); owed || !s.finished() {
		t.Fatalf("after reset: owed %t, finished %t", owed, s.finished())
	}
}

func TestRecvStreamMaxData(t *testing.T) {
	const window = 1 << 20
	s := newRecvStream(0, window)
	max, owed := s.maxDataOwed()
	if !owed || max != window {
		t.Fatalf("first maxDataOwed = %d, %t; want the whole window at once", max, owed)
	}
	s.onMaxDataSent(max)
	if _, owed := s.maxDataOwed(); owed {
		t.Fatal("owed after sent")
	}
	s.onMaxDataLost()
	if max, owed := s.maxDataOwed(); !owed || max != window {
		t.Fatalf("after loss: %d, %t", max, owed)
	}
	s.onMaxDataSent(window)

	buf := make([]byte, 64<<10)
	var off uint64
	feed := func(n int) {
		for n > 0 {
			c := min(n, 1200)
			mustData(t, s, off, c, false)
			off += uint64(c)
			n -= c
			readChecked(t, s, buf)
		}
	}
	const step = window / windowUpdateFraction
	feed(step - 1)
	if _, owed := s.maxDataOwed(); owed {
		t.Fatal("owed before a quarter of the window was read")
	}
	feed(1)
	max, owed = s.maxDataOwed()
	if !owed || max != step+window {
		t.Fatalf("after a quarter of the window: %d, %t", max, owed)
	}
	feed(1000) // not sent yet: the value follows the reads
	max, _ = s.maxDataOwed()
	if max != step+window+1000 {
		t.Fatalf("max = %d", max)
	}
	s.onMaxDataSent(max)
	s.onMaxDataSent(window) // an older value does not lower the limit
	if s.limit != max {
		t.Fatalf("limit = %d, want %d", s.limit, max)
	}
	// A lost one is owed again with the current value.
	s.onMaxDataLost()
	feed(10)
	if got, owed := s.maxDataOwed(); !owed || got != max+10 {
		t.Fatalf("after loss: %d, %t", got, owed)
	}
	s.onMaxDataSent(max + 10)
	// Once the final size is known, the peer needs no more.
	mustData(t, s, off, 0, true)
	s.onMaxDataLost()
	feed(0)
	if _, owed := s.maxDataOwed(); owed {
		t.Fatal("owed with the final size known")
	}

	// A window no larger than the initial limit owes nothing at first, and
	// then at half a window past the initial limit.
	s = newRecvStream(0, 64<<10)
	if _, owed := s.maxDataOwed(); owed {
		t.Fatal("owed at once for a window below InitialMaxStreamData")
	}
	off = 0
	feed(InitialMaxStreamData - 32<<10)
	if max, owed := s.maxDataOwed(); !owed || max != InitialMaxStreamData+32<<10 {
		t.Fatalf("maxDataOwed = %d, %t", max, owed)
	}
	if _, owed := newRecvStream(0, InitialMaxStreamData).maxDataOwed(); owed {
		t.Fatal("owed at once for the initial window")
	}
}

// TestRecvStreamAllocs checks the receive path allocates nothing once warm,
// in order and reordered.
func TestRecvStreamAllocs(t *testing.T) {
	p := streamBytes(0, 1200)
	buf := make([]byte, 32<<10)
	s := newRecvStream(0, 1<<20)
	var off uint64
	inOrder := func() {
		s.onMaxDataSent(off + 1<<20)
		s.onData(off, p, false)
		off += 1200
		s.read(buf)
	}
	for range 100 {
		inOrder()
	}
	if n := testing.AllocsPerRun(1000, inOrder); n != 0 {
		t.Errorf("in order: %v allocations per chunk, want 0", n)
	}
	// Each pair of chunks swapped, and the reader a few chunks behind.
	s = newRecvStream(0, 1<<20)
	off = 0
	reordered := func() {
		s.onMaxDataSent(off + 1<<20)
		s.onData(off+1200, p, false)
		s.onData(off, p, false)
		off += 2400
		if s.buffered() > 10000 {
			s.read(buf)
		}
	}
	for range 100 {
		reordered()
	}
	if n := testing.AllocsPerRun(1000, reordered); n != 0 {
		t.Errorf("reordered: %v allocations per pair, want 0", n)
	}
}

// BenchmarkRecvStream measures the receive path a 1200-byte chunk at a time,
// the reader taking 16 KiB reads.
func BenchmarkRecvStream(b *testing.B) {
	p := streamBytes(0, 1200)
	buf := make([]byte, 16<<10)
	b.Run("inorder", func(b *testing.B) {
		s := newRecvStream(0, 1<<20)
		var off uint64
		b.SetBytes(int64(len(p)))
		b.ReportAllocs()
		for b.Loop() {
			s.onMaxDataSent(off + 1<<20)
			s.onData(off, p, false)
			off += uint64(len(p))
			if s.buffered() >= len(buf) {
				s.read(buf)
			}
		}
	})
	// Chunks arrive in groups of 16 in a shuffled order: most land beyond a
	// gap and wait in their block.
	b.Run("reordered", func(b *testing.B) {
		s := newRecvStream(0, 1<<20)
		rng := rand.New(rand.NewPCG(1, 1))
		var order [16]uint64
		for i := range order {
			order[i] = uint64(i)
		}
		var base uint64
		i := 0
		b.SetBytes(int64(len(p)))
		b.ReportAllocs()
		for b.Loop() {
			if i == len(order) {
				i = 0
				base += uint64(len(order) * len(p))
				rng.Shuffle(len(order), func(x, y int) { order[x], order[y] = order[y], order[x] })
			}
			s.onMaxDataSent(base + 1<<20)
			s.onData(base+order[i]*uint64(len(p)), p, false)
			i++
			if s.buffered() >= len(buf) {
				s.read(buf)
			}
		}
	})
}

// TestRecvStreamIdleMemory checks what a recvStream holds once the
// application has read everything that arrived, reordered.
func TestRecvStreamIdleMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("heap measurement")
	}
	buf := make([]byte, 64<<10)
	p := streamBytes(0, 1200)
	mk := func() any {
		s := newRecvStream(0, 1<<20)
		s.onMaxDataSent(1 << 20)
		for i := 9; i >= 0; i-- { // backwards: many spans beyond the gap
			s.onData(uint64(i*2400), p, false)
		}
		for i := range 10 {
			s.onData(uint64(i*2400+1200), p, false)
		}
		s.read(buf)
		if s.buffered() != 0 || s.head != nil || s.beyond.big != nil || s.readOff != 24000 {
			panic("not idle")
		}
		return s
	}
	per := heapPerIdle(2000, mk)
	t.Logf("idle recvStream: %.0f bytes (struct %d)", per, unsafe.Sizeof(recvStream{}))
	if per > maxIdleStream {
		t.Errorf("an idle recvStream holds %.0f bytes, want at most %d", per, maxIdleStream)
	}
}
