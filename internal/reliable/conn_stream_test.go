package reliable

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"
)

// Streams over a Conn pair: opening and accepting, scheduling, the ends of a
// stream (FIN, RESET_STREAM, STOP_SENDING), forgetting streams, stream
// limits and flow control, in virtual time on the simulated path of
// conn_test.go.

// Streams opened by each side appear at the other's AcceptStream in the
// order they were opened, whatever order they were first written in, with
// both sides opening at once.
func TestConnAcceptInOrder(t *testing.T) {
	n := newConnPair(t, netPath{delay: 5 * time.Millisecond}, 1, Config{})
	var opened [2][]uint64
	for side, c := range n.conns {
		for range 4 {
			id, err := c.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			opened[side] = append(opened[side], id)
		}
		for _, id := range slices.Backward(opened[side]) {
			if _, err := c.Write(id, fmt.Appendf(nil, "side %d stream %d", side, id)); err != nil {
				t.Fatal(err)
			}
		}
	}
	var accepted [2][]uint64
	n.run(time.Second, func() bool {
		for side, c := range n.conns {
			for id, ok := c.AcceptStream(); ok; id, ok = c.AcceptStream() {
				accepted[side] = append(accepted[side], id)
			}
		}
		return len(accepted[0]) == 4 && len(accepted[1]) == 4
	})
	for side := range 2 {
		if !slices.Equal(accepted[side], opened[1-side]) {
			t.Errorf("side %d accepted %v, the peer opened %v", side, accepted[side], opened[1-side])
		}
	}
	n.settle(time.Second)
	for side, c := range n.conns {
		for _, id := range accepted[side] {
			got, err := readAll(c, id)
			if want := fmt.Sprintf("side %d stream %d", 1-side, id); string(got) != want || err != nil {
				t.Errorf("side %d stream %d: read %q, %v; want %q", side, id, got, err, want)
			}
		}
	}
}

// A stream opened and not yet used is invisible to the peer: no packet
// goes for it. Its first frame brings the window with it.
func TestConnOpenedStreamInvisibleUntilUsed(t *testing.T) {
	n := newConnPair(t, netPath{delay: 5 * time.Millisecond}, 1, Config{})
	a, b := n.conns[0], n.conns[1]
	var first []Frame // the first packet that names a stream
	n.watch = func(from int, pkt []byte) {
		_, frames := packetFrames(t, pkt)
		for _, f := range frames {
			switch f.Type {
			case FrameStream, FrameResetStream, FrameStopSending, FrameMaxStreamData, FrameStreamDataBlocked:
				if first == nil {
					first = frames
				}
			}
		}
	}
	id, _ := a.OpenStream()
	n.settle(time.Second)
	if _, ok := b.AcceptStream(); ok || first != nil {
		t.Fatalf("an unused stream: accepted %t, frames sent %v", ok, first)
	}
	a.Write(id, []byte("now"))
	n.settle(time.Second)
	if got, ok := b.AcceptStream(); !ok || got != id {
		t.Fatalf("accepted %d, %t", got, ok)
	}
	if len(first) != 2 || first[0].Type != FrameMaxStreamData || first[1].Type != FrameStream {
		t.Errorf("first packet: %v", first)
	}
}

// Round robin: a bulk transfer keeps its stream's send buffer full, and a
// small message written on another stream meanwhile still arrives within
// about the path's delay plus its queue, not behind the bulk data.
func TestConnRoundRobinSmallStream(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	const delay = 10 * time.Millisecond
	n := newConnPair(t, netPath{delay: delay, rate: 20e6}, 1, Config{})
	a, b := n.conns[0], n.conns[1]
	bulk, _ := a.OpenStream()
	small, _ := a.OpenStream()
	chunk := make([]byte, 64<<10)
	rbuf := make([]byte, 64<<10)
	msg := bytes.Repeat([]byte("m"), 200)

	var sentAt []int64 // when each small message was written
	var latencies []time.Duration
	var smallRead, bulkRead int
	var accepted []uint64
	nextMsg := n.now + int64(200*time.Millisecond) // BBR has left STARTUP
	end := n.now + int64(time.Second)
	n.run(2*time.Second, func() bool {
		for a.Writable(bulk) > 0 {
			a.Write(bulk, chunk)
		}
		if n.now >= nextMsg {
			if k, err := a.Write(small, msg); k != len(msg) || err != nil {
				t.Fatalf("small write: %d, %v", k, err)
			}
			sentAt = append(sentAt, n.now)
			nextMsg += int64(50 * time.Millisecond)
		}
		for id, ok := b.AcceptStream(); ok; id, ok = b.AcceptStream() {
			accepted = append(accepted, id)
		}
		for _, id := range accepted {
			for {
				k, _ := b.Read(id, rbuf)
				if k == 0 {
					break
				}
				if id != small {
					bulkRead += k
					continue
				}
				for smallRead += k; len(latencies) < smallRead/len(msg); {
					latencies = append(latencies, time.Duration(n.now-sentAt[len(latencies)]))
				}
			}
		}
		return n.now >= end
	})
	if len(latencies) < 15 {
		t.Fatalf("%d small messages arrived", len(latencies))
	}
	worst := slices.Max(latencies)
	rate := float64(bulkRead) / 1e6 // in one second
	t.Logf("bulk %.1f MB/s; small message latency: worst %v, all %v", rate, worst, latencies)
	if rate < 10 {
		t.Errorf("bulk stream moved %.1f MB/s through 20 MB/s", rate)
	}
	// The one-way delay, plus at most the bottleneck's queue (BBR keeps it
	// near one BDP, 4 ms here) and a pacing burst; the bulk stream's
	// megabytes of buffered data would take seconds.
	if worst > 3*delay {
		t.Errorf("a small message took %v behind the bulk stream (one-way delay %v)", worst, delay)
	}
}

// A FIN ends the stream with io.EOF after its data, and once both halves
// are over both sides forget the stream.
func TestConnFinAndForget(t *testing.T) {
	n := newConnPair(t, netPath{delay: 5 * time.Millisecond}, 1, Config{})
	a, b := n.conns[0], n.conns[1]
	id, _ := a.OpenStream()
	a.Write(id, []byte("request"))
	a.CloseWrite(id)
	var got []byte
	var err error
	accepted := false
	n.run(time.Second, func() bool {
		if _, ok := b.AcceptStream(); ok {
			accepted = true
		}
		if accepted {
			var p []byte
			p, err = readAll(b, id)
			got = append(got, p...)
		}
		return err != nil
	})
	if string(got) != "request" || err != io.EOF {
		t.Fatalf("read %q, %v; want the request and EOF", got, err)
	}
	if _, err := b.Write(id, []byte("response")); err != nil {
		t.Fatal(err)
	}
	b.CloseWrite(id)
	got, err = nil, nil
	n.run(time.Second, func() bool {
		var p []byte
		p, err = readAll(a, id)
		got = append(got, p...)
		return err != nil
	})
	if string(got) != "response" || err != io.EOF {
		t.Fatalf("read %q, %v; want the response and EOF", got, err)
	}
	n.settle(time.Second)
	for side, c := range n.conns {
		if len(c.streams) != 0 {
			t.Errorf("side %d still holds %d streams", side, len(c.streams))
		}
		if _, err := c.Read(id, make([]byte, 1)); err != ErrStreamClosed {
			t.Errorf("side %d: read of a forgotten stream: %v, want ErrStreamClosed", side, err)
		}
	}
}

// A reset stream: the peer's Read returns a *StreamResetError with the
// code, and data of the stream that arrives after the reset (a packet held
// back on the path) changes nothing.
func TestConnResetStream(t *testing.T) {
	n := newConnPair(t, netPath{delay: 10 * time.Millisecond}, 1, Config{})
	a, b := n.conns[0], n.conns[1]
	id, _ := a.OpenStream()
	held := 0
	n.hold = func(from int, pkt []byte) time.Duration {
		if from != 0 {
			return 0
		}
		_, frames := packetFrames(t, pkt)
		for _, f := range frames {
			if f.Type == FrameStream && f.Offset > 0 && held == 0 {
				held++
				return 100 * time.Millisecond
			}
		}
		return 0
	}
	a.Write(id, make([]byte, 20<<10))
	n.flush(0)
	if err := a.Reset(id, 7); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write(id, []byte("x")); !isReset(err, 7) {
		t.Fatalf("write after reset: %v", err)
	}
	n.run(time.Second, func() bool { return b.streams[id] != nil && b.Readable(id) })
	if _, ok := b.AcceptStream(); !ok {
		t.Fatal("stream not accepted")
	}
	if _, err := readAll(b, id); !isReset(err, 7) {
		t.Fatalf("read: %v, want the reset with code 7", err)
	}
	if held != 1 {
		t.Fatalf("%d packets held back", held)
	}
	b.Wake(nil)
	b.CloseWrite(id)
	n.run(time.Second, func() bool {
		_, err := readAll(a, id)
		return err == io.EOF
	})
	n.settle(time.Second) // the held packet arrives here
	if wake := b.Wake(nil); slices.Contains(wake, id) {
		t.Errorf("late data woke the reset stream: %v", wake)
	}
	for side, c := range n.conns {
		if len(c.streams) != 0 {
			t.Errorf("side %d still holds %d streams", side, len(c.streams))
		}
	}
	if b.consumedData != b.recvData {
		t.Errorf("the reset stream's bytes are not given back: consumed %d of %d", b.consumedData, b.recvData)
	}
}

func isReset(err error, code uint64) bool {
	var re *StreamResetError
	return errors.As(err, &re) && re.Code == code
}

// StopReading sends STOP_SENDING; the peer answers with RESET_STREAM and its
// Write fails with a *StreamResetError carrying the code (RFC 9000 §3.5).
func TestConnStopReading(t *testing.T) {
	n := newConnPair(t, netPath{delay: 10 * time.Millisecond}, 1, Config{})
	a, b := n.conns[0], n.conns[1]
	id, _ := a.OpenStream()
	a.Write(id, make([]byte, 4<<10))
	n.run(time.Second, func() bool { return b.streams[id] != nil && b.Readable(id) })
	b.AcceptStream()
	if err := b.StopReading(id, 9); err != nil {
		t.Fatal(err)
	}
	var werr error
	n.run(time.Second, func() bool {
		_, werr = a.Write(id, make([]byte, 1<<10))
		return werr != nil
	})
	if !isReset(werr, 9) {
		t.Fatalf("write after STOP_SENDING: %v, want a reset with code 9", werr)
	}
	if wake := a.Wake(nil); !slices.Contains(wake, id) {
		t.Errorf("the STOP_SENDING did not wake the writer: %v", wake)
	}
	b.CloseWrite(id)
	n.run(time.Second, func() bool {
		_, err := readAll(a, id)
		return err == io.EOF
	})
	n.settle(time.Second)
	for side, c := range n.conns {
		if len(c.streams) != 0 {
			t.Errorf("side %d still holds %d streams", side, len(c.streams))
		}
	}
}

// exchange is one request/response stream of TestConnManyStreamsForgotten.
type exchange struct {
	reqRead, respRead []byte
	accepted, reqDone bool
}

// Streams are forgotten once both halves are over and the peer's slots come
// back with MAX_STREAMS: 5000 request/response streams, up to 12 at a time,
// with MaxIncomingStreams 16 (the server raises the limit each time half of
// it is over, so the client at times waits for a slot).
func TestConnManyStreamsForgotten(t *testing.T) {
	const total, concurrent = 5000, 12
	n := newConnPair(t, netPath{delay: 2 * time.Millisecond}, 1, Config{MaxIncomingStreams: 16})
	a, b := n.conns[0], n.conns[1]
	live := map[uint64]*exchange{}
	opened, done, limited := 0, 0, 0
	maxLive := 0
	n.run(time.Minute, func() bool {
		for len(live) < concurrent && opened < total {
			id, err := a.OpenStream()
			if err == ErrStreamLimit {
				limited++ // wait for the server's MAX_STREAMS
				break
			}
			if err != nil {
				t.Fatalf("stream %d: %v", opened, err)
			}
			opened++
			live[id] = &exchange{}
			a.Write(id, fmt.Appendf(nil, "request %d", id))
			a.CloseWrite(id)
		}
		for id, ok := b.AcceptStream(); ok; id, ok = b.AcceptStream() {
			if live[id] == nil {
				t.Fatalf("accepted %d, never opened", id)
			}
			live[id].accepted = true
		}
		for id, x := range live {
			if x.accepted && !x.reqDone {
				p, err := readAll(b, id)
				x.reqRead = append(x.reqRead, p...)
				if err == io.EOF {
					x.reqDone = true
					b.Write(id, fmt.Appendf(nil, "response to %s", x.reqRead))
					b.CloseWrite(id)
				} else if err != nil {
					t.Fatalf("stream %d: server read: %v", id, err)
				}
			}
			p, err := readAll(a, id)
			x.respRead = append(x.respRead, p...)
			if err == io.EOF {
				if want := fmt.Sprintf("response to request %d", id); string(x.respRead) != want {
					t.Fatalf("stream %d: %q", id, x.respRead)
				}
				delete(live, id)
				done++
			} else if err != nil {
				t.Fatalf("stream %d: client read: %v", id, err)
			}
		}
		maxLive = max(maxLive, len(a.streams), len(b.streams))
		return done == total
	})
	n.settle(time.Second)
	t.Logf("%d streams in %v of virtual time; at most %d held; the peer's limit is %d; %d times at the limit", total,
		time.Duration(n.now-int64(time.Second)), maxLive, a.peerMaxStreams, limited)
	for side, c := range n.conns {
		if len(c.streams) != 0 || len(c.active) != 0 || len(c.acceptQueue) != 0 {
			t.Errorf("side %d holds %d streams, %d active, %d to accept", side, len(c.streams), len(c.active), len(c.acceptQueue))
		}
	}
	if b.peerClosed != total || a.peerMaxStreams < total {
		t.Errorf("server forgot %d of %d streams; the client may open %d", b.peerClosed, total, a.peerMaxStreams)
	}
}

// OpenStream fails with ErrStreamLimit once the peer's limit is used up and
// works again once the peer has forgotten streams and said so. With
// MaxIncomingStreams 16, below InitialMaxStreams, the peer first has the
// initial 100 (there are no transport parameters to say less), then the
// streams it closed plus 16.
func TestConnStreamLimit(t *testing.T) {
	n := newConnPair(t, netPath{delay: 5 * time.Millisecond}, 1, Config{MaxIncomingStreams: 16})
	a, b := n.conns[0], n.conns[1]
	openAll := func() []uint64 {
		var ids []uint64
		for {
			id, err := a.OpenStream()
			if err != nil {
				if err != ErrStreamLimit {
					t.Fatal(err)
				}
				return ids
			}
			a.CloseWrite(id)
			ids = append(ids, id)
		}
	}
	first := openAll()
	if len(first) != InitialMaxStreams {
		t.Fatalf("opened %d streams, want %d", len(first), InitialMaxStreams)
	}
	n.settle(time.Second)
	if _, err := a.OpenStream(); err != ErrStreamLimit {
		t.Fatalf("open with every slot taken: %v", err)
	}
	// The server ends its halves; the client reads the EOFs.
	for id, ok := b.AcceptStream(); ok; id, ok = b.AcceptStream() {
		if _, err := readAll(b, id); err != io.EOF {
			t.Fatalf("stream %d: %v", id, err)
		}
		b.CloseWrite(id)
	}
	n.settle(time.Second)
	for _, id := range first {
		if _, err := readAll(a, id); err != io.EOF {
			t.Fatalf("stream %d: %v", id, err)
		}
	}
	n.settle(time.Second)
	if more := openAll(); len(more) != 16 {
		t.Fatalf("after the peer closed %d streams: opened %d more, want 16", b.peerClosed, len(more))
	}
}

// A reader that does not read stops the writer at its stream window, and
// several streams together at the connection window; once it reads,
// everything arrives intact.
func TestConnFlowControlStopsWriter(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	for _, tc := range []struct {
		name           string
		streams        int
		stream, conn   uint64
		wantPerStream  uint64 // what each stream sends before the reader reads
		wantConnection uint64
	}{
		{"stream window", 1, 512 << 10, 4 << 20, 512 << 10, 512 << 10},
		{"connection window", 3, 512 << 10, 1280 << 10, 0, 1280 << 10},
		// Windows below the initial limits (RFC 9000's transport parameters
		// would say less; there are none) leave the peer the initial ones.
		{"windows below the initial limits", 6, 64 << 10, 128 << 10, 0, InitialMaxData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newConnPair(t, netPath{delay: 5 * time.Millisecond, rate: 50e6}, 1, Config{StreamWindow: tc.stream, ConnWindow: tc.conn})
			a, b := n.conns[0], n.conns[1]
			const size = 768 << 10 // more than every window here
			data := make([]byte, size)
			for i := range data {
				data[i] = pattern(uint64(i))
			}
			var ids []uint64
			written := map[uint64]int{}
			for range tc.streams {
				id, _ := a.OpenStream()
				ids = append(ids, id)
			}
			write := func() {
				for _, id := range ids {
					if written[id] == size {
						continue
					}
					k, err := a.Write(id, data[written[id]:])
					if err != nil {
						t.Fatal(err)
					}
					if written[id] += k; written[id] == size {
						a.CloseWrite(id)
					}
				}
			}
			write()
			n.settle(10 * time.Second)
			write()
			n.settle(10 * time.Second)
			var total uint64
			for _, id := range ids {
				sent := a.streams[id].send.sent
				total += sent
				if tc.wantPerStream != 0 && sent != tc.wantPerStream {
					t.Errorf("stream %d sent %d bytes to a reader that does not read, want %d", id, sent, tc.wantPerStream)
				}
			}
			if total != tc.wantConnection || b.recvData != total {
				t.Errorf("%d bytes sent, %d received, want %d", total, b.recvData, tc.wantConnection)
			}
			got := map[uint64][]byte{}
			eof := map[uint64]bool{}
			n.run(10*time.Second, func() bool {
				write()
				for _, ok := b.AcceptStream(); ok; _, ok = b.AcceptStream() {
				}
				for _, id := range ids {
					if eof[id] {
						continue
					}
					p, err := readAll(b, id)
					got[id] = append(got[id], p...)
					if err == io.EOF {
						eof[id] = true
					} else if err != nil {
						t.Fatal(err)
					}
				}
				return len(eof) == len(ids)
			})
			for _, id := range ids {
				if !bytes.Equal(got[id], data) {
					t.Errorf("stream %d: %d bytes read, not what was written", id, len(got[id]))
				}
			}
		})
	}
}

// A reader that reads a little and then pauses, with windows below the
// initial limits: the peer may still use the initial limits it started
// from (there are no transport parameters to say less), and must not be
// told it broke the smaller ones while data it sent under them arrives.
func TestConnSmallWindowsPausingReader(t *testing.T) {
	n := newConnPair(t, netPath{delay: 5 * time.Millisecond, rate: 50e6}, 1, Config{StreamWindow: 64 << 10, ConnWindow: 128 << 10})
	a, b := n.conns[0], n.conns[1]
	const size = 2 << 20
	id, _ := a.OpenStream()
	written, read := 0, 0
	rbuf := make([]byte, 16<<10)
	var resume int64
	n.run(10*time.Second, func() bool {
		if written < size {
			k, _ := a.Write(id, make([]byte, min(64<<10, size-written)))
			if written += k; written == size {
				a.CloseWrite(id)
			}
		}
		b.AcceptStream()
		if b.streams[id] == nil || n.now < resume {
			return false
		}
		if resume == 0 {
			// Read 1 KiB, then nothing for 100 ms while the rest of the
			// initial limits arrives.
			k, _ := b.Read(id, rbuf[:1<<10])
			read += k
			resume = n.now + int64(100*time.Millisecond)
			n.alarm = resume
			return false
		}
		p, err := readAll(b, id)
		read += len(p)
		return err == io.EOF
	})
	if read != size {
		t.Fatalf("read %d of %d bytes", read, size)
	}
	if b.recvData <= 128<<10+1<<10 {
		t.Errorf("the pause did not test it: %d bytes arrived", b.recvData)
	}
}

// A bulk transfer's packets are full: STREAM frames take all the room a
// packet has left after their own header.
func TestConnPacketsFull(t *testing.T) {
	n := newConnPair(t, netPath{delay: 5 * time.Millisecond}, 1, Config{})
	sizes := map[int]int{}
	n.watch = func(from int, pkt []byte) {
		if from == 0 {
			sizes[len(pkt)]++
		}
	}
	n.transfer(1<<20, 10*time.Second)
	full := sizes[DefaultPacketSize]
	t.Logf("%d of %d packets full", full, n.sent[0])
	if full < n.sent[0]*9/10 {
		t.Errorf("%d of %d packets full; sizes %v", full, n.sent[0], sizes)
	}
}
