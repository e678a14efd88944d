package reliable

import (
	"fmt"
	"io"
	"time"
)

// The receiving half of a stream (RFC 9000 §3.2): STREAM frames arrive at
// any offset, in any order, any number of times (§2.2); the application
// reads the bytes in order. The receiver gives the peer its flow-control
// window (§4.1, §4.2), checks the final size (§4.5), and handles the peer's
// RESET_STREAM and the application's wish to stop reading (STOP_SENDING,
// §3.5).
//
// Data is kept in the blocks of send_stream.go, at the offsets they cover:
// data beyond a gap goes straight into the block where it belongs, so when
// the gap fills nothing moves, and a byte is copied twice in all, from the
// packet and to the reader. A block goes back to the pool as soon as the
// application has read it, and when nothing is buffered none is held.
//
// Pure and not goroutine-safe: the connection owns its streams.

// StreamResetError is what a read returns once the peer has reset the
// stream (RFC 9000 §3.2, "Reset Recvd"): the data not yet read is gone.
// Code is the application's error code from the RESET_STREAM.
type StreamResetError struct {
	Code uint64
}

func (e *StreamResetError) Error() string {
	return fmt.Sprintf("reliable: stream reset by peer (code %d)", e.Code)
}

// stopState is where the STOP_SENDING a receiver owes is (RFC 9000 §13.3:
// it is sent until the stream is "Data Recvd" or "Reset Recvd").
type stopState uint8

const (
	stopNone stopState = iota
	stopOwed           // to be sent (again)
	stopSent           // in flight
)

// recvStream is the receiving half of a stream. Its offsets relate as
// readOff ≤ contig ≤ highest ≤ limit:
//
//	[0, readOff)        read by the application, blocks released
//	[readOff, contig)   received, in order: readable now
//	[contig, highest)   received where beyond says, missing elsewhere
type recvStream struct {
	id        uint64
	window    uint64 // how far beyond readOff the peer may send
	maxWindow uint64 // how far window may grow (window.go)
	tuner     windowTuner
	limit     uint64 // the highest limit advertised: InitialMaxStreamData or a MAX_STREAM_DATA sent
	readOff   uint64 // bytes the application has read
	contig    uint64 // every byte below it has arrived
	highest   uint64 // the highest offset received: what flow control charged
	final     uint64 // the final size, when finKnown

	beyond rangeSet // ranges received above contig

	// Blocks in offset order, from no lower than the block of readOff: one
	// is taken when data arrives for it and released once read past; none
	// is held when nothing is buffered.
	head, tail *block

	resetCode uint64
	stopCode  uint64
	finKnown  bool // a FIN or RESET_STREAM fixed the final size ("Size Known")
	resetRcvd bool // the peer reset the stream before all its data arrived
	stopped   bool // the application stopped reading
	appDone   bool // the application has seen EOF or the reset
	firstMax  bool // the first MAX_STREAM_DATA, advertising the whole window, is owed
	maxLost   bool // the last MAX_STREAM_DATA was lost
	stop      stopState
}

// newRecvStream returns the receiving half of stream id. window is how many
// bytes beyond those read the peer may send, zero meaning
// InitialMaxStreamData. The peer starts from InitialMaxStreamData (there are
// no transport parameters), so a larger window is advertised at once: the
// first MAX_STREAM_DATA is owed from the start.
func newRecvStream(id, window uint64) *recvStream {
	if window == 0 {
		window = InitialMaxStreamData
	}
	return &recvStream{
		id:        id,
		window:    window,
		maxWindow: window,
		limit:     InitialMaxStreamData,
		firstMax:  window > InitialMaxStreamData,
	}
}

// tuneWindow grows the window, if the reads since the last raise say it binds
// (window.go), as a raise is about to go out, and reports whether it grew.
func (s *recvStream) tuneWindow(now int64, srtt time.Duration) bool {
	old := s.window
	s.window = s.tuner.grow(now, srtt, s.readOff, s.window, s.maxWindow)
	return s.window > old
}

// discarding reports whether arriving data is dropped rather than kept: the
// peer reset the stream or the application stopped reading.
func (s *recvStream) discarding() bool { return s.resetRcvd || s.stopped }

// allReceived reports whether every byte up to a known final size has
// arrived ("Data Recvd").
func (s *recvStream) allReceived() bool { return s.finKnown && s.contig == s.final }

// onData takes a STREAM frame: data at offset, and whether it carries the
// FIN. It copies what it keeps, so the caller may reuse data. Duplicates and
// overlaps are harmless (RFC 9000 §2.2). newBytes is how far the frame moved
// the highest offset received, which the connection charges against its own
// limit. The errors, which close the connection, wrap ErrFlowControl (data
// beyond the limit advertised, RFC 9000 §4.1) or ErrFinalSize (a FIN that
// moves the final size or falls below data received, or data beyond the
// final size, §4.5).
func (s *recvStream) onData(offset uint64, data []byte, fin bool) (newBytes uint64, err error) {
	n := uint64(len(data))
	if offset > s.limit || n > s.limit-offset {
		return 0, fmt.Errorf("reliable: stream %d: data to offset %d, beyond the limit %d: %w", s.id, offset+n, s.limit, ErrFlowControl)
	}
	end := offset + n
	if err := s.checkFinal(end, fin); err != nil {
		return 0, err
	}
	if end > s.highest {
		newBytes, s.highest = end-s.highest, end
	}
	if s.resetRcvd {
		return newBytes, nil
	}
	start := max(offset, s.contig)
	if start >= end || s.beyond.covers(start, end) {
		return newBytes, nil
	}
	// Once the application stops reading, data is dropped on arrival but
	// its ranges are still tracked: the peer is done when they reach the
	// final size, even if it never sends the RESET_STREAM.
	if !s.stopped {
		s.store(start, data[start-offset:])
	}
	if start > s.contig {
		s.beyond.add(start, end)
		return newBytes, nil
	}
	s.contig = end
	for {
		lo, hi, ok := s.beyond.first()
		if !ok || lo > s.contig {
			break
		}
		s.contig = max(s.contig, hi)
		s.beyond.remove(lo, hi)
	}
	return newBytes, nil
}

// checkFinal applies RFC 9000 §4.5 to a frame that reaches end, fixing the
// final size when fin says this is it.
func (s *recvStream) checkFinal(end uint64, fin bool) error {
	if s.finKnown {
		if end > s.final || fin && end != s.final {
			return fmt.Errorf("reliable: stream %d: data to offset %d (fin %t), final size %d: %w", s.id, end, fin, s.final, ErrFinalSize)
		}
		return nil
	}
	if fin {
		if end < s.highest {
			return fmt.Errorf("reliable: stream %d: final size %d below data received to %d: %w", s.id, end, s.highest, ErrFinalSize)
		}
		s.finKnown, s.final = true, end
	}
	return nil
}

// store copies p, the stream's bytes from offset off, into their blocks.
func (s *recvStream) store(off uint64, p []byte) {
	for len(p) > 0 {
		b := s.blockFor(blockStart(off))
		c := copy(b.buf[off-b.off:], p)
		off += uint64(c)
		p = p[c:]
	}
}

// blockFor returns the block at off (a multiple of blockSize), taking one
// from the pool if there is none. In-order data finds it at the tail.
func (s *recvStream) blockFor(off uint64) *block {
	if s.tail != nil && s.tail.off == off {
		return s.tail
	}
	if s.tail == nil || s.tail.off < off {
		b := getBlock(off)
		if s.tail == nil {
			s.head = b
		} else {
			s.tail.next = b
		}
		s.tail = b
		return b
	}
	var prev *block
	b := s.head
	for b.off < off {
		prev, b = b, b.next
	}
	if b.off == off {
		return b
	}
	n := getBlock(off)
	n.next = b
	if prev == nil {
		s.head = n
	} else {
		prev.next = n
	}
	return n
}

// onReset takes the peer's RESET_STREAM (RFC 9000 §3.2, §19.4). Its final
// size is checked as a FIN's is (§4.5) and counts toward flow control like
// data (§4.4): newBytes is how far it moved the highest offset received.
// Unread data is dropped and the next read returns a *StreamResetError;
// but once every byte has arrived ("Data Recvd") the reset changes nothing,
// and the application reads to EOF (RFC 9000 §3.2 leaves this to us).
func (s *recvStream) onReset(code, finalSize uint64) (newBytes uint64, err error) {
	if finalSize > s.limit {
		return 0, fmt.Errorf("reliable: stream %d: reset with final size %d, beyond the limit %d: %w", s.id, finalSize, s.limit, ErrFlowControl)
	}
	// "Data Recvd" is a FIN's doing: the reset's final size, fixed below,
	// completes no data.
	dataRecvd := s.allReceived()
	if err := s.checkFinal(finalSize, true); err != nil {
		return 0, err
	}
	if finalSize > s.highest {
		newBytes, s.highest = finalSize-s.highest, finalSize
	}
	if s.resetRcvd || dataRecvd || s.appDone {
		return newBytes, nil
	}
	s.resetRcvd, s.resetCode = true, code
	s.releaseAll()
	s.beyond.clear()
	// §3.5: no STOP_SENDING for a stream the peer has reset.
	s.stop = stopNone
	return newBytes, nil
}

// read copies the next bytes in order into p. It returns n > 0 with a nil
// error, or 0 with io.EOF after the last byte, a *StreamResetError once the
// peer has reset the stream, io.ErrClosedPipe after stopReading, or (0,
// nil) when nothing is readable yet.
func (s *recvStream) read(p []byte) (n int, err error) {
	switch {
	case s.stopped:
		return 0, io.ErrClosedPipe
	case s.resetRcvd:
		s.appDone = true
		return 0, &StreamResetError{Code: s.resetCode}
	}
	for n < len(p) && s.readOff < s.contig {
		b := s.head // holds readOff: blocks before it were released as reads passed them
		end := min(s.contig, b.off+blockSize)
		c := copy(p[n:], b.buf[s.readOff-b.off:end-b.off])
		n += c
		s.readOff += uint64(c)
		if s.readOff == b.off+blockSize {
			s.releaseHead()
		}
	}
	if s.readOff == s.contig && s.beyond.empty() {
		// Nothing buffered: the partly read block goes back too, and the
		// range set's array if reordering made it grow one.
		s.releaseAll()
		s.beyond.clear()
	}
	if n > 0 {
		return n, nil
	}
	if s.allReceived() && s.readOff == s.final {
		s.appDone = true
		return 0, io.EOF
	}
	return 0, nil
}

// readable reports whether read would return data, EOF or the reset.
func (s *recvStream) readable() bool {
	if s.stopped {
		return false
	}
	return s.resetRcvd || s.readOff < s.contig || s.allReceived()
}

// stopReading drops what is buffered and discards what arrives from now on.
// A STOP_SENDING asks the peer to stop sending (RFC 9000 §3.5), unless
// nothing more can come: every byte is in or the peer has reset.
func (s *recvStream) stopReading(code uint64) {
	if s.stopped || s.appDone {
		return
	}
	s.stopped, s.stopCode = true, code
	s.releaseAll()
	if !s.resetRcvd && !s.allReceived() {
		s.stop = stopOwed
	}
}

// stopOwed returns the STOP_SENDING to send, if one is owed: its code. It
// stops being owed once the peer is done (RFC 9000 §13.3).
func (s *recvStream) stopOwed() (code uint64, owed bool) {
	return s.stopCode, s.stop == stopOwed && !s.resetRcvd && !s.allReceived()
}

// onStopSent records that the owed STOP_SENDING went out.
func (s *recvStream) onStopSent() {
	if s.stop == stopOwed {
		s.stop = stopSent
	}
}

// onStopLost owes the STOP_SENDING again.
func (s *recvStream) onStopLost() {
	if s.stop == stopSent {
		s.stop = stopOwed
	}
}

// maxDataOwed returns the limit a MAX_STREAM_DATA should advertise now, if
// one is due (RFC 9000 §4.2): the first one, when the window is larger than
// InitialMaxStreamData; then each time the application has read a
// windowUpdateFraction of the window since the last, so that the peer never
// waits for one while the reader keeps up (conn.go says why not half); and
// again when the last
// was lost (§13.3). None once the final size is known or the application
// stopped reading: the peer needs no more credit then.
func (s *recvStream) maxDataOwed() (max uint64, owed bool) {
	if s.finKnown || s.discarding() {
		return 0, false
	}
	max = s.readOff + s.window
	if s.maxLost {
		return max, true
	}
	if max > s.limit && (s.firstMax || max-s.limit >= s.window/windowUpdateFraction) {
		return max, true
	}
	return 0, false
}

// onMaxDataSent records that a MAX_STREAM_DATA advertising max went out:
// from now on the peer may send up to it.
func (s *recvStream) onMaxDataSent(max uint64) {
	if max > s.limit {
		s.limit = max
	}
	s.firstMax, s.maxLost = false, false
}

// onMaxDataLost makes a MAX_STREAM_DATA owed again, with the limit current
// when it is sent (RFC 9000 §13.3).
func (s *recvStream) onMaxDataLost() { s.maxLost = true }

// consumed returns the bytes the connection may count as consumed for its
// MAX_DATA: what the application has read, or after a reset or stopReading
// everything received, since no one will read it; the connection's credit
// must not leak with dropped streams (RFC 9000 §4.4, §4.5: a reset stream's
// final size counts in full). It only grows.
func (s *recvStream) consumed() uint64 {
	if s.discarding() {
		return s.highest
	}
	return s.readOff
}

// buffered returns the bytes received and not yet read.
func (s *recvStream) buffered() int {
	if s.discarding() {
		return 0
	}
	n := s.contig - s.readOff
	for _, r := range s.beyond.spans() {
		n += r.end - r.start
	}
	return int(n)
}

// finished reports whether the receiving half is over: the application has
// read EOF or the reset, or it stopped reading and the peer is done (every
// byte in, or reset).
func (s *recvStream) finished() bool {
	return s.appDone || s.stopped && (s.resetRcvd || s.allReceived())
}

func (s *recvStream) releaseHead() {
	b := s.head
	s.head = b.next
	if s.head == nil {
		s.tail = nil
	}
	putBlock(b)
}

func (s *recvStream) releaseAll() {
	for s.head != nil {
		s.releaseHead()
	}
}
