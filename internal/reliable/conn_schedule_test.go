package reliable

import (
	"testing"
	"time"
)

// How a Conn shares the path: between its streams (round robin, RFC 9000
// §2.2 leaves the order to the sender) and between the two directions.

// Bulk streams share a bottleneck evenly: each of four streams kept full
// gets about a quarter of the bytes.
func TestConnStreamsShareEvenly(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	n := newConnPair(t, netPath{delay: 10 * time.Millisecond, rate: 20e6}, 1, Config{})
	a, b := n.conns[0], n.conns[1]
	const streams = 4
	var ids []uint64
	for range streams {
		id, _ := a.OpenStream()
		ids = append(ids, id)
	}
	chunk := make([]byte, 64<<10)
	rbuf := make([]byte, 64<<10)
	read := map[uint64]int{}
	end := n.now + int64(500*time.Millisecond)
	n.run(2*time.Second, func() bool {
		for _, id := range ids {
			for a.Writable(id) > 0 {
				a.Write(id, chunk)
			}
		}
		for _, ok := b.AcceptStream(); ok; _, ok = b.AcceptStream() {
		}
		for _, id := range ids {
			if b.streams[id] == nil {
				continue
			}
			for {
				k, _ := b.Read(id, rbuf)
				if k == 0 {
					break
				}
				read[id] += k
			}
		}
		return n.now >= end
	})
	total := 0
	for _, k := range read {
		total += k
	}
	t.Logf("%.1f MB/s in all; per stream %v", float64(total)/0.5/1e6, read)
	for _, id := range ids {
		if share := float64(read[id]) / float64(total); share < 0.8/streams || share > 1.2/streams {
			t.Errorf("stream %d got %.0f %% of the bytes", id, 100*share)
		}
	}
}

// Bulk transfers both ways at once, on one stream's two halves: each
// direction gets most of its bottleneck, ACKs riding on the other's data,
// and every byte arrives.
func TestConnBothDirections(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	n := newConnPair(t, netPath{delay: 10 * time.Millisecond, rate: 20e6}, 1, Config{})
	a, b := n.conns[0], n.conns[1]
	const size = 4 << 20
	id, _ := a.OpenStream()
	var written, read [2]int // by the side that writes
	var eof [2]bool
	chunk := make([]byte, 64<<10)
	rbuf := make([]byte, 64<<10)
	start := n.now
	var took [2]time.Duration
	n.run(10*time.Second, func() bool {
		b.AcceptStream()
		for w, c := range n.conns {
			if written[w] == size || c.streams[id] == nil {
				continue
			}
			for written[w] < size {
				m := min(len(chunk), size-written[w])
				for i := range chunk[:m] {
					chunk[i] = pattern(uint64(written[w] + i))
				}
				k, _ := c.Write(id, chunk[:m])
				if written[w] += k; k < m {
					break
				}
			}
			if written[w] == size {
				c.CloseWrite(id)
			}
		}
		for w := range 2 {
			r := n.conns[1-w]
			if eof[w] || r.streams[id] == nil {
				continue
			}
			for {
				k, err := r.Read(id, rbuf)
				for i := range rbuf[:k] {
					if rbuf[i] != pattern(uint64(read[w]+i)) {
						t.Fatalf("direction %d: byte %d wrong", w, read[w]+i)
					}
				}
				read[w] += k
				if err != nil {
					eof[w] = true
					took[w] = time.Duration(n.now - start)
				}
				if k == 0 || err != nil {
					break
				}
			}
		}
		return eof[0] && eof[1]
	})
	for w := range 2 {
		rate := float64(size) / took[w].Seconds() / 1e6
		t.Logf("direction %d: 4 MiB in %v, %.1f MB/s", w, took[w], rate)
		if read[w] != size || rate < 10 { // STARTUP included
			t.Errorf("direction %d: %d bytes at %.1f MB/s through 20 MB/s", w, read[w], rate)
		}
	}
}
