package reliable

import (
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// churnHalf is one direction of a stream in TestConnStreamChurnLossy: what
// the writer means to do and what the reader has seen.
type churnHalf struct {
	size      int  // bytes the writer writes
	resetAt   int  // the writer resets after this many bytes; -1: it closes at size
	stopAt    int  // the reader stops reading after this many bytes; -1: it reads to the end
	written   int  // so far
	read      int  // so far
	writeDone bool // closed, reset, or stopped by the reader
	readDone  bool // EOF, the reset, or stopped
}

// churnStream is both halves of a stream: [0] from the client, [1] from
// the server.
type churnStream [2]churnHalf

// Many streams opened, written, closed, reset and stopped at random, on a
// path that loses, delays and reorders packets: every byte read is the
// byte written, every reset and stop reaches the other side with its
// code, and once both sides are done with a stream both forget it. Lost
// RESET_STREAM, STOP_SENDING and FIN frames are sent again, frames of
// streams already over are ignored, and path MTU probes go on meanwhile.
func TestConnStreamChurnLossy(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	for _, seed := range churnSeeds {
		rng := rand.New(rand.NewPCG(seed, 99))
		n := newConnPair(t, netPath{delay: 5 * time.Millisecond, loss: 0.05, rate: 20e6, reorder: 0.05, mtu: 1300}, seed,
			Config{MaxIncomingStreams: 32, MaxPacketSize: testMaxPacketSize})
		const total = 150
		streams := map[uint64]*churnStream{}
		half := func() churnHalf {
			h := churnHalf{size: rng.IntN(40 << 10), resetAt: -1, stopAt: -1}
			switch rng.IntN(4) {
			case 0:
				h.resetAt = rng.IntN(h.size + 1)
			case 1:
				h.stopAt = rng.IntN(h.size + 1)
			}
			return h
		}
		opened, done := 0, 0
		buf := make([]byte, 8<<10)
		n.run(time.Minute, func() bool {
			for len(streams)-done < 24 && opened < total {
				id, err := n.conns[0].OpenStream()
				if err == ErrStreamLimit {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				opened++
				streams[id] = &churnStream{half(), half()}
			}
			n.conns[1].AcceptStream()
			for id, s := range streams {
				for w := range 2 {
					churnWrite(t, n.conns[w], id, &s[w], buf)
					churnRead(t, n.conns[1-w], id, &s[w], buf)
				}
			}
			done = 0
			for id, s := range streams {
				if s[0].readDone && s[1].readDone && s[0].writeDone && s[1].writeDone &&
					n.conns[0].streams[id] == nil && n.conns[1].streams[id] == nil {
					done++
				}
			}
			return done == total
		})
		n.settle(10 * time.Second)
		t.Logf("seed %d: %d streams in %v; sent %v, dropped %v; packet sizes %d and %d", seed, total,
			time.Duration(n.now-int64(time.Second)), n.sent, n.dropped, n.conns[0].Stats().PacketSize, n.conns[1].Stats().PacketSize)
	}
}

// churnWrite writes what half h still means to write on stream id of c.
func churnWrite(t *testing.T, c *Conn, id uint64, h *churnHalf, buf []byte) {
	if h.writeDone || c.streams[id] == nil {
		return
	}
	for {
		end := h.size
		if h.resetAt >= 0 {
			end = h.resetAt
		}
		if h.written == end {
			break
		}
		m := min(len(buf), end-h.written)
		for i := range buf[:m] {
			buf[i] = pattern(uint64(h.written + i))
		}
		k, err := c.Write(id, buf[:m])
		if err != nil {
			// Only the reader's STOP_SENDING ends a write early.
			if !isReset(err, id+1) || h.stopAt < 0 {
				t.Fatalf("stream %d: write: %v", id, err)
			}
			h.writeDone = true
			return
		}
		if h.written += k; k < m {
			return
		}
	}
	if h.resetAt >= 0 {
		c.Reset(id, id+2)
	} else {
		c.CloseWrite(id)
	}
	h.writeDone = true
}

// churnRead reads half h on stream id of c, the reader's side.
func churnRead(t *testing.T, c *Conn, id uint64, h *churnHalf, buf []byte) {
	if h.readDone || c.streams[id] == nil {
		return
	}
	for {
		want := len(buf)
		if h.stopAt >= 0 {
			want = min(want, h.stopAt-h.read)
		}
		var k int
		var err error
		if want > 0 {
			k, err = c.Read(id, buf[:want])
		}
		for i := range buf[:k] {
			if buf[i] != pattern(uint64(h.read+i)) {
				t.Fatalf("stream %d: byte %d wrong", id, h.read+i)
			}
		}
		h.read += k
		switch {
		case h.stopAt >= 0 && h.read == h.stopAt && err == nil:
			c.StopReading(id, id+1)
			h.readDone = true
			return
		case errors.Is(err, io.EOF):
			if h.resetAt >= 0 || h.read != h.size {
				t.Fatalf("stream %d: EOF after %d bytes; the writer meant %d, reset at %d", id, h.read, h.size, h.resetAt)
			}
			h.readDone = true
			return
		case err != nil:
			if !isReset(err, id+2) || h.resetAt < 0 || h.read > h.resetAt {
				t.Fatalf("stream %d: read after %d bytes: %v (reset at %d)", id, h.read, err, h.resetAt)
			}
			h.readDone = true
			return
		case k == 0:
			return
		}
	}
}

// churnSeeds are TestConnStreamChurnLossy's runs (60 more, of 300
// streams, passed when it was written, and 20 at 20 % loss).
var churnSeeds = []uint64{1, 2}
