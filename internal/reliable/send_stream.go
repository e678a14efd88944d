package reliable

import "sync"

// The sending half of a stream (RFC 9000 §3.1): the bytes the application
// wrote, kept until the peer acknowledges them, cut into STREAM frames under
// the peer's flow-control limits (RFC 9000 §4.1), sent again when lost (RFC
// 9000 §13.3), ended by a FIN or abandoned by a RESET_STREAM.
//
// A stream's data lives in blocks of blockSize bytes, shared with the
// receiving half (recv_stream.go). Idle memory per connection is why this
// transport exists, so an idle stream holds no block: a block comes from a
// process-wide pool when data arrives and goes back the moment its last byte
// is acknowledged (send) or read (receive).
//
// Pure and not goroutine-safe: the connection owns its streams.

const (
	// blockSize is the size of a data block. Blocks sit at offsets that are
	// multiples of blockSize, so the block of an offset is found by masking
	// and a STREAM frame never has to gather from two blocks. 16 KiB is a
	// dozen full packets: few pool round trips for bulk data, and a small
	// message holds one block only until it is acknowledged or read.
	blockSize = 16 << 10
	blockMask = blockSize - 1
)

// block is one blockSize piece of a stream's data at offset off. A stream
// chains its blocks in offset order through next. The header and its buffer
// travel through the pool together, so neither is allocated once warm.
type block struct {
	next *block
	off  uint64
	buf  *[blockSize]byte
}

var blockPool = sync.Pool{New: func() any { return &block{buf: new([blockSize]byte)} }}

// getBlock takes a block from the pool for the data at offset off (a
// multiple of blockSize). Its bytes are whatever the last user left: only
// bytes a stream has written since are ever read.
func getBlock(off uint64) *block {
	b := blockPool.Get().(*block)
	b.next, b.off = nil, off
	return b
}

func putBlock(b *block) {
	b.next = nil
	blockPool.Put(b)
}

// blockStart is the offset of the block that holds off.
func blockStart(off uint64) uint64 { return off &^ blockMask }

// resetState is where a stream's RESET_STREAM is (RFC 9000 §3.1, "Reset
// Sent" and "Reset Recvd"; §13.3: it is sent until acknowledged).
type resetState uint8

const (
	resetNone  resetState = iota
	resetOwed             // to be sent (again)
	resetSent             // in flight
	resetAcked            // the peer has it: the sending half is over
)

// sendStream is the sending half of a stream. Its offsets relate as
// acked ≤ sent ≤ written, and sent ≤ peerMax:
//
//	[0, acked)        acknowledged, blocks released
//	[acked, sent)     sent; some of it acknowledged (ackedAbove) or lost (lost)
//	[sent, written)   written, never sent
type sendStream struct {
	id          uint64
	peerMax     uint64 // the peer's limit for this stream (RFC 9000 §4.1)
	bufferLimit int    // most bytes held, written but not acknowledged
	bufferMax   int    // how far bufferLimit may grow with the peer's window (setPeerMax)

	written uint64 // bytes the application wrote; the final size once closed
	sent    uint64 // the highest offset sent: what flow control has charged
	acked   uint64 // every byte below it is acknowledged

	// Blocks hold [blockStart(acked), written), none when acked == written.
	head, tail *block
	cur        *block // the block last sent new data from; nil or in the chain

	ackedAbove rangeSet // acknowledged ranges above acked
	lost       rangeSet // ranges in [acked, sent) to send again, none acknowledged

	resetCode  uint64
	closed     bool // close was called: written is the final size
	finPending bool // a FIN is to be sent (again) once the bytes before it are
	finAcked   bool
	rst        resetState
}

// newSendStream returns the sending half of stream id. peerMax is the
// peer's flow-control limit for it, InitialMaxStreamData until a
// MAX_STREAM_DATA raises it; bufferLimit bounds the bytes written and not yet
// acknowledged, zero or less meaning InitialMaxStreamData (what the peer
// takes before its first MAX_STREAM_DATA, so a fresh stream is not held back
// by its own buffer).
func newSendStream(id, peerMax uint64, bufferLimit int) *sendStream {
	if bufferLimit <= 0 {
		bufferLimit = InitialMaxStreamData
	}
	return &sendStream{id: id, peerMax: peerMax, bufferLimit: bufferLimit}
}

// buffered returns the bytes held: written and not yet acknowledged (bytes
// acknowledged beyond a gap are held until the gap is acknowledged).
func (s *sendStream) buffered() int { return int(s.written - s.acked) }

// writable returns how many bytes write would take now.
func (s *sendStream) writable() int {
	if s.closed || s.rst != resetNone {
		return 0
	}
	return max(0, s.bufferLimit-s.buffered())
}

// write copies as much of p as the buffer limit lets in and returns how much
// that was: 0 when the buffer is full or the stream closed or reset.
func (s *sendStream) write(p []byte) int {
	n := min(len(p), s.writable())
	for p = p[:n]; len(p) > 0; {
		if s.tail == nil || s.written >= s.tail.off+blockSize {
			b := getBlock(blockStart(s.written))
			if s.tail == nil {
				s.head = b
			} else {
				s.tail.next = b
			}
			s.tail = b
		}
		c := copy(s.tail.buf[s.written-s.tail.off:], p)
		s.written += uint64(c)
		p = p[c:]
	}
	return n
}

// ended reports whether write will never take anything again, and why: the
// stream was closed (FIN) or reset, with the reset's code.
func (s *sendStream) ended() (closed, reset bool, code uint64) {
	return s.closed, s.rst != resetNone, s.resetCode
}

// close ends the stream after the bytes written so far: written becomes the
// final size (RFC 9000 §4.5), and a FIN goes out with or after the last
// byte.
func (s *sendStream) close() {
	if s.closed || s.rst != resetNone {
		return
	}
	s.closed, s.finPending = true, true
}

// reset abandons the stream (RFC 9000 §3.1, §19.4): unsent and
// unacknowledged data is dropped and never sent again (§13.3), and a
// RESET_STREAM is owed whose final size is the highest offset sent, the
// flow-control credit the peer has seen used (§4.5). Once every byte and the
// FIN are acknowledged there is nothing to abandon, so reset does nothing
// then; nor does a second reset.
func (s *sendStream) reset(code uint64) {
	if s.rst != resetNone || s.finished() {
		return
	}
	s.rst, s.resetCode = resetOwed, code
	s.written, s.acked = s.sent, s.sent
	s.finPending = false
	s.releaseAll()
	s.ackedAbove.clear()
	s.lost.clear()
}

// creditLimit returns the offset below which new data may be sent: the
// peer's limit for the stream, or less if the connection's credit (RFC 9000
// §4.1, MAX_DATA) runs out first.
func (s *sendStream) creditLimit(connCredit uint64) uint64 {
	if connCredit < s.peerMax-s.sent {
		return s.sent + connCredit
	}
	return s.peerMax
}

// hasData reports whether next would return a chunk (with max > 0).
func (s *sendStream) hasData(connCredit uint64) bool {
	switch {
	case s.rst != resetNone:
		return false
	case !s.lost.empty():
		return true
	case s.sent < s.written:
		return s.creditLimit(connCredit) > s.sent
	default:
		return s.finPending
	}
}

// waiting reports whether the stream has data or a FIN it has not yet sent
// (or must send again), whether or not flow control lets it go now. A
// sender held back by flow control is not application-limited (BBR's sense:
// the application did give it data), as Linux's TCP does not count a
// receive-window limit as one either.
func (s *sendStream) waiting() bool {
	return s.rst == resetNone && (!s.lost.empty() || s.sent < s.written || s.finPending)
}

// next returns the next STREAM frame's worth: at most max bytes from offset,
// and whether the FIN goes with it. Lost ranges go first: their credit was
// charged when they were first sent, so they go even when flow control
// blocks new data. Then new data, below the peer's limit and within
// connCredit of the highest offset sent; newBytes is how far the chunk moved
// that offset, what the connection charges against its own limit. A FIN
// without data is a chunk too (data empty, fin true), once every byte before
// it has been sent; with max < 1 it is the only chunk next returns.
//
// data aliases the stream's buffer: copy it into the packet before the next
// call that changes the stream. A chunk never spans two blocks, so it may be
// shorter than max even when more data waits.
func (s *sendStream) next(max int, connCredit uint64) (offset uint64, data []byte, fin bool, newBytes uint64, ok bool) {
	if s.rst != resetNone {
		return 0, nil, false, 0, false
	}
	if max > 0 {
		if start, end, isLost := s.lost.first(); isLost {
			end = chunkEnd(start, end, max)
			s.lost.remove(start, end)
			b := s.blockAt(start, nil)
			// The FIN rides again on the last byte if it was lost too.
			fin = s.finPending && end == s.written
			if fin {
				s.finPending = false
			}
			return start, b.buf[start-b.off : end-b.off], fin, 0, true
		}
		if s.sent < s.written {
			limit := s.creditLimit(connCredit)
			if limit <= s.sent {
				return 0, nil, false, 0, false
			}
			start := s.sent
			end := chunkEnd(start, min(s.written, limit), max)
			b := s.blockAt(start, s.cur)
			s.cur = b
			s.sent = end
			fin = s.finPending && end == s.written
			if fin {
				s.finPending = false
			}
			return start, b.buf[start-b.off : end-b.off], fin, end - start, true
		}
	}
	if s.finPending && s.sent == s.written && s.lost.empty() {
		s.finPending = false
		return s.written, nil, true, 0, true
	}
	return 0, nil, false, 0, false
}

// chunkEnd returns where a chunk from start ends: at end, after maxLen
// bytes or at the end of start's block, whichever comes first.
func chunkEnd(start, end uint64, maxLen int) uint64 {
	end = min(end, blockStart(start)+blockSize)
	if uint64(maxLen) < end-start {
		end = start + uint64(maxLen)
	}
	return end
}

// blockAt returns the block that holds off, searching from hint when it is
// at or before off (sending new data moves forward a block at a time), else
// from the first block.
func (s *sendStream) blockAt(off uint64, hint *block) *block {
	b := s.head
	if hint != nil && hint.off <= off {
		b = hint
	}
	for off >= b.off+blockSize {
		b = b.next
	}
	return b
}

// onAcked records that the peer has the chunk [offset, offset+length) and,
// with fin, the FIN (RFC 9000 §3.1). Blocks whose bytes are all acknowledged
// go back to the pool at once.
func (s *sendStream) onAcked(offset uint64, length uint32, fin bool) {
	if s.rst != resetNone {
		return // the data is gone; only the RESET_STREAM matters now
	}
	if fin {
		s.finAcked, s.finPending = true, false
	}
	start, end := max(offset, s.acked), min(offset+uint64(length), s.sent)
	if start >= end {
		return
	}
	s.lost.remove(start, end)
	if start > s.acked {
		s.ackedAbove.add(start, end)
		return
	}
	s.acked = end
	// The gap below acknowledged ranges may have just closed.
	for {
		lo, hi, ok := s.ackedAbove.first()
		if !ok || lo > s.acked {
			break
		}
		s.acked = max(s.acked, hi)
		s.ackedAbove.remove(lo, hi)
	}
	for s.head != nil && s.head.off+blockSize <= s.acked {
		s.releaseHead()
	}
	if s.acked == s.written {
		// Idle: the partly used last block goes back too (the next write
		// takes a fresh one), and the range sets' arrays if losses made
		// them grow one; both sets are empty now.
		s.releaseAll()
		s.ackedAbove.clear()
		s.lost.clear()
	}
}

// onLost queues again whatever of the chunk [offset, offset+length), and
// with fin the FIN, the peer has not acknowledged (RFC 9000 §13.3; a later
// acknowledgement of the first copy may still arrive and is honoured).
func (s *sendStream) onLost(offset uint64, length uint32, fin bool) {
	if s.rst != resetNone {
		return
	}
	if fin && !s.finAcked {
		s.finPending = true
	}
	start, end := max(offset, s.acked), min(offset+uint64(length), s.sent)
	for _, a := range s.ackedAbove.spans() {
		if start >= end || a.start >= end {
			break
		}
		if a.end <= start {
			continue
		}
		s.lost.add(start, a.start) // empty when a starts at or before start
		start = a.end
	}
	s.lost.add(start, end)
}

// setPeerMax applies a MAX_STREAM_DATA: a limit only grows, and a smaller
// one (reordered, RFC 9000 §4.1) is ignored.
//
// The buffer limit grows with the peer's window (window.go): to twice what
// the peer lets us have outstanding, so that a loss does not starve the
// sender, but never past bufferMax, whatever the peer advertises. It never
// shrinks, so an ACK never takes room a writer was promised.
func (s *sendStream) setPeerMax(limit uint64) {
	if limit > s.peerMax {
		s.peerMax = limit
	}
	if s.peerMax > s.acked {
		s.bufferLimit = max(s.bufferLimit, int(min(2*(s.peerMax-s.acked), uint64(s.bufferMax))))
	}
}

// blockedAt reports whether new data waits on the peer's limit for the
// stream, and that limit: what a STREAM_DATA_BLOCKED carries (RFC 9000
// §4.1, §19.13).
func (s *sendStream) blockedAt() (limit uint64, blocked bool) {
	if s.rst != resetNone || s.sent >= s.written || s.sent < s.peerMax {
		return 0, false
	}
	return s.peerMax, true
}

// resetOwed returns the RESET_STREAM to send, if one is owed: its error
// code and final size.
func (s *sendStream) resetOwed() (code, finalSize uint64, owed bool) {
	return s.resetCode, s.sent, s.rst == resetOwed
}

// onResetSent records that the owed RESET_STREAM went out.
func (s *sendStream) onResetSent() {
	if s.rst == resetOwed {
		s.rst = resetSent
	}
}

// onResetLost owes the RESET_STREAM again, unless another copy was
// acknowledged meanwhile.
func (s *sendStream) onResetLost() {
	if s.rst == resetSent {
		s.rst = resetOwed
	}
}

// onResetAcked ends the sending half ("Reset Recvd").
func (s *sendStream) onResetAcked() {
	if s.rst != resetNone {
		s.rst = resetAcked
	}
}

// finished reports whether the sending half is over: every byte and the FIN
// acknowledged ("Data Recvd"), or the RESET_STREAM acknowledged ("Reset
// Recvd").
func (s *sendStream) finished() bool {
	if s.rst != resetNone {
		return s.rst == resetAcked
	}
	return s.finAcked && s.acked == s.written
}

func (s *sendStream) releaseHead() {
	b := s.head
	s.head = b.next
	if s.head == nil {
		s.tail = nil
	}
	if s.cur == b {
		s.cur = nil
	}
	putBlock(b)
}

func (s *sendStream) releaseAll() {
	for s.head != nil {
		s.releaseHead()
	}
}
