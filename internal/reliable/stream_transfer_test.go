package reliable

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

// The end-to-end test of the stream buffers: a sendStream and a recvStream
// joined by a simulated lossy link, with the connection's part (loss
// detection, flow control) modelled around them.

// lossyLink carries one stream's frames both ways between a sendStream and a
// recvStream, in ticks: a frame is lost, delayed (so reordered) or
// duplicated at random, and each side hears of the frames it sent what a
// connection's loss detection would tell it: acknowledged, or lost (also
// spuriously, when only the ACK was lost, and sometimes with the ACK
// arriving after all).
type lossyLink struct {
	rng    *rand.Rand
	loss   float64 // chance a frame, or an ACK, is lost
	dup    float64 // chance a frame arrives twice
	events map[int][]linkEvent
}

type linkEventKind uint8

const (
	linkData       linkEventKind = iota + 1 // a STREAM frame reaches the receiver
	linkAcked                               // the sender learns a chunk was acknowledged
	linkLost                                // the sender learns a chunk was lost
	linkMaxData                             // a MAX_STREAM_DATA reaches the sender
	linkMaxLost                             // the receiver learns its MAX_STREAM_DATA was lost
	linkReset                               // a RESET_STREAM reaches the receiver
	linkResetAcked                          // the sender learns its RESET_STREAM was acknowledged
	linkResetLost                           // the sender learns its RESET_STREAM was lost
	linkStop                                // a STOP_SENDING reaches the sender
	linkStopLost                            // the receiver learns its STOP_SENDING was lost
	linkNone                                // an acknowledgement nobody waits for
	linkLossDelay  = 12                     // ticks until a frame is declared lost
)

type linkEvent struct {
	kind linkEventKind
	off  uint64 // STREAM offset; RESET_STREAM final size
	n    uint32 // STREAM length
	data []byte
	fin  bool
	code uint64 // RESET_STREAM, STOP_SENDING
	max  uint64
}

func (l *lossyLink) at(tick int, e linkEvent) { l.events[tick] = append(l.events[tick], e) }

// send schedules what becomes of a frame sent at now: deliver reaches the
// other side, and the sending side learns acked or lost.
func (l *lossyLink) send(now int, deliver, acked, lost linkEvent) {
	if l.rng.Float64() < l.loss {
		l.at(now+linkLossDelay, lost)
		return
	}
	delay := 1 + l.rng.IntN(8)
	l.at(now+delay, deliver)
	if l.rng.Float64() < l.dup {
		l.at(now+1+l.rng.IntN(10), deliver)
	}
	switch r := l.rng.Float64(); {
	case r < l.loss: // the ACK is lost: a spurious loss
		l.at(now+linkLossDelay, lost)
	case r < l.loss*1.3: // the ACK comes after the loss was declared
		l.at(now+linkLossDelay, lost)
		l.at(now+linkLossDelay+1+l.rng.IntN(5), acked)
	default:
		l.at(now+delay+1+l.rng.IntN(4), acked)
	}
}

func (l *lossyLink) sendChunk(now int, off uint64, data []byte, fin bool) {
	c := linkEvent{off: off, n: uint32(len(data)), fin: fin}
	d, a, lost := c, c, c
	d.kind, d.data = linkData, bytes.Clone(data)
	a.kind, lost.kind = linkAcked, linkLost
	l.send(now, d, a, lost)
}

// TestStreamTransferLossy moves data from a sendStream to a recvStream over a
// lossy, reordering, duplicating link, with the connection's flow control
// modelled from newBytes and consumed, and checks every byte, the flow-control
// accounting, and that both halves finish holding no memory. Some transfers
// end early: the sender resets, or the receiver stops reading.
func TestStreamTransferLossy(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	const conn = 3 << 19
	for _, c := range []transferCase{
		{name: "16MiB", size: 16 << 20, loss: 0.05, dup: 0.03, connWindow: conn, seed: 1},
		{name: "heavy loss", size: 2 << 20, loss: 0.25, dup: 0.1, connWindow: conn, seed: 2},
		{name: "connection-limited", size: 2 << 20, loss: 0.05, dup: 0.03, connWindow: 200 << 10, seed: 3},
		{name: "no loss", size: 2 << 20, connWindow: conn, seed: 4},
		{name: "small", size: 1000, loss: 0.3, dup: 0.2, connWindow: conn, seed: 5},
		{name: "empty", size: 0, loss: 0.3, dup: 0.2, connWindow: conn, seed: 6},
		{name: "sender resets", size: 4 << 20, loss: 0.1, dup: 0.05, connWindow: conn, resetAt: 1 << 20, seed: 7},
		{name: "receiver stops", size: 4 << 20, loss: 0.1, dup: 0.05, connWindow: conn, stopAt: 1 << 20, seed: 8},
		{name: "receiver stops at once", size: 4 << 20, loss: 0.1, dup: 0.05, connWindow: conn, stopAt: 1, seed: 9},
		{name: "small window and buffer", size: 1 << 20, loss: 0.1, dup: 0.05, connWindow: conn, window: 5000, buffer: 3000, seed: 10},
	} {
		t.Run(c.name, func(t *testing.T) { streamTransfer(t, c) })
	}
	// Many short transfers, every parameter drawn from the seed.
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 5))
		c := transferCase{
			size:       rng.IntN(256 << 10),
			loss:       rng.Float64() * 0.3,
			dup:        rng.Float64() * 0.2,
			connWindow: 1 + rng.Uint64N(1<<20),
			seed:       seed,
		}
		switch rng.IntN(4) {
		case 0:
			c.resetAt = 1 + rng.IntN(c.size+1)
		case 1:
			if c.size > 0 {
				c.stopAt = 1 + rng.IntN(c.size)
			}
		}
		if rng.IntN(2) == 0 {
			c.window = 1 + rng.Uint64N(300<<10)
			c.buffer = 1 + rng.IntN(300<<10)
		}
		t.Run(fmt.Sprintf("random/%d", seed), func(t *testing.T) { streamTransfer(t, c) })
	}
}

type transferCase struct {
	name       string
	size       int
	loss, dup  float64
	connWindow uint64 // MAX_DATA granted beyond what the receiver consumed
	resetAt    int    // the sender resets once it has written this much; 0: never
	stopAt     int    // the receiver stops reading once it has read this much; 0: never
	window     uint64 // the receiver's stream window; 0: 1 MiB
	buffer     int    // the sender's buffer limit; 0: 512 KiB
	seed       uint64
}

func streamTransfer(t *testing.T, c transferCase) {
	const (
		maxTicks  = 1 << 20
		resetCode = 7
		stopCode  = 9
	)
	size := c.size
	rng := rand.New(rand.NewPCG(c.seed, 4))
	link := &lossyLink{rng: rng, loss: c.loss, dup: c.dup, events: make(map[int][]linkEvent)}
	if c.window == 0 {
		c.window = 1 << 20
	}
	if c.buffer == 0 {
		c.buffer = 512 << 10
	}
	snd := newSendStream(0, InitialMaxStreamData, c.buffer)
	rcv := newRecvStream(0, c.window)

	var (
		connMax  uint64 = InitialMaxData // the connection's limit (MAX_DATA), granted at once
		connSent uint64                  // newBytes the sender's connection charged
		connRcvd uint64                  // newBytes the receiver's connection charged
		got      int
		readErr  error // io.EOF or the reset, once read returned it
		chunks   int   // STREAM frames sent
		resent   int   // of them, resent data
		blocked  int   // times the sender stopped on the stream's limit
		stalled  int   // until this tick the application does not read
	)
	wbuf := make([]byte, 64<<10)
	rbuf := make([]byte, 64<<10)
	for now := 0; ; now++ {
		if now == maxTicks {
			t.Fatalf("stuck: read %d of %d, sent %d, acked %d, peerMax %d, limit %d", got, size, snd.sent, snd.acked, snd.peerMax, rcv.limit)
		}
		// The application writes what fits, and closes at the end, or
		// resets halfway.
		if w := int(snd.written); w < size {
			n := min(size-w, len(wbuf), snd.writable())
			fillStreamBytes(wbuf[:n], snd.written)
			if m := snd.write(wbuf[:n]); m != n {
				t.Fatalf("write = %d, want %d", m, n)
			}
		}
		if int(snd.written) == size {
			snd.close()
		}
		if c.resetAt > 0 && int(snd.written) >= c.resetAt {
			snd.reset(resetCode)
		}
		// The sender sends a burst, as congestion control lets it.
		if code, final, owed := snd.resetOwed(); owed {
			snd.onResetSent()
			e := linkEvent{kind: linkReset, code: code, off: final}
			link.send(now, e, linkEvent{kind: linkResetAcked}, linkEvent{kind: linkResetLost})
		}
		for range 1 + rng.IntN(40) {
			off, data, fin, newBytes, ok := snd.next(1+rng.IntN(1400), connMax-connSent)
			if !ok {
				if limit, ok := snd.blockedAt(); ok {
					blocked++
					if limit != snd.peerMax {
						t.Fatalf("blocked at %d, peer's limit %d", limit, snd.peerMax)
					}
				}
				break
			}
			connSent += newBytes
			if connSent > connMax || snd.sent > snd.peerMax || connSent != snd.sent {
				t.Fatalf("flow control: sent %d (conn %d), limits %d and %d", snd.sent, connSent, snd.peerMax, connMax)
			}
			chunks++
			if newBytes == 0 && len(data) > 0 {
				resent++
			}
			link.sendChunk(now, off, data, fin)
		}
		// What the link delivers this tick.
		for _, e := range link.events[now] {
			var nb uint64
			var err error
			switch e.kind {
			case linkData:
				nb, err = rcv.onData(e.off, e.data, e.fin)
			case linkAcked:
				snd.onAcked(e.off, e.n, e.fin)
			case linkLost:
				snd.onLost(e.off, e.n, e.fin)
			case linkMaxData:
				snd.setPeerMax(e.max)
			case linkMaxLost:
				rcv.onMaxDataLost()
			case linkReset:
				nb, err = rcv.onReset(e.code, e.off)
			case linkResetAcked:
				snd.onResetAcked()
			case linkResetLost:
				snd.onResetLost()
			case linkStop:
				snd.reset(e.code) // RFC 9000 §3.5
			case linkStopLost:
				rcv.onStopLost()
			}
			if err != nil {
				t.Fatalf("receiver: %v", err)
			}
			connRcvd += nb
			if connRcvd > connMax {
				t.Fatalf("receiver charged %d beyond the connection's limit %d", connRcvd, connMax)
			}
		}
		delete(link.events, now)
		// The application reads, sometimes not at all for a while, so the
		// windows fill and the sender blocks; or it stops reading.
		if rng.IntN(100) == 0 {
			stalled = now + rng.IntN(100)
		}
		if now >= stalled && rng.IntN(4) != 0 && readErr == nil && !rcv.stopped {
			n, err := rcv.read(rbuf[:1+rng.IntN(len(rbuf))])
			if n > 0 && !bytes.Equal(rbuf[:n], streamBytes(uint64(got), n)) {
				t.Fatalf("wrong bytes at %d", got)
			}
			got += n
			readErr = err
			if c.stopAt > 0 && got >= c.stopAt {
				rcv.stopReading(stopCode)
			}
		}
		if code, owed := rcv.stopOwed(); owed {
			rcv.onStopSent()
			link.send(now, linkEvent{kind: linkStop, code: code}, linkEvent{kind: linkNone}, linkEvent{kind: linkStopLost})
		}
		if max, owed := rcv.maxDataOwed(); owed {
			rcv.onMaxDataSent(max)
			link.send(now, linkEvent{kind: linkMaxData, max: max}, linkEvent{kind: linkNone}, linkEvent{kind: linkMaxLost})
		}
		connMax = max(connMax, rcv.consumed()+c.connWindow)
		if snd.finished() && rcv.finished() {
			t.Logf("%d ticks, %d chunks, %d resent, blocked %d times; read %d", now, chunks, resent, blocked, got)
			break
		}
	}
	if connSent != snd.sent || connRcvd != snd.sent || rcv.consumed() != snd.sent {
		t.Fatalf("connection charged %d and %d, consumed %d; the stream sent %d", connSent, connRcvd, rcv.consumed(), snd.sent)
	}
	var re *StreamResetError
	switch {
	case c.resetAt > 0:
		// If every byte and the FIN arrived first, the reset changes
		// nothing (RFC 9000 §3.2, "Data Recvd").
		if !errors.As(readErr, &re) && !(readErr == io.EOF && got == size) || re != nil && re.Code != resetCode {
			t.Fatalf("read %d, %v; want the reset", got, readErr)
		}
	case c.stopAt > 0:
		if got < c.stopAt || readErr != nil {
			t.Fatalf("read %d, %v after stopping at %d", got, readErr, c.stopAt)
		}
	default:
		if got != size || readErr != io.EOF || snd.sent != uint64(size) {
			t.Fatalf("read %d, %v; sent %d; want %d, EOF", got, readErr, snd.sent, size)
		}
	}
	if snd.head != nil || snd.buffered() != 0 || rcv.head != nil || rcv.buffered() != 0 {
		t.Fatal("memory held at the end")
	}
}
