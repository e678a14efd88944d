package reliable

import (
	"fmt"
	"time"
)

// Frame encodings, the subset of RFC 9000 §19 listed in the package comment.
// Every frame starts with its type, itself a varint (§12.4); all the types we
// speak are below 0x40, so the type is one byte and a first byte of 0x40 or
// more is a type we do not speak. Fields marked (i) are varints (varint.go);
// the appenders write the shortest encodings and ParseFrame accepts any.
//
// A packet is frames back to back. Only STREAM without its LEN bit and
// PADDING have no end of their own: the first runs to the end of the packet,
// the second over every 0x00 byte that follows it.

// STREAM type bits (RFC 9000 §19.8), added to FrameStream.
const (
	streamBitOff = 0x04 // an Offset field is present; without it the offset is 0
	streamBitLen = 0x02 // a Length field is present; without it the data runs to the packet end
	streamBitFin = 0x01 // the data ends the stream
)

// frameTransportClose is CONNECTION_CLOSE's transport variant (RFC 9000
// §19.19), which we neither send nor accept.
const frameTransportClose FrameType = 0x1c

// maxStreamsLimit is the largest MAX_STREAMS value: a larger one would allow
// stream IDs beyond maxVarint (RFC 9000 §19.11).
const maxStreamsLimit = 1 << 60

// maxAckDelayMicros is the largest ACK Delay, in microseconds, that a
// time.Duration holds; ParseFrame clamps larger ones to it.
const maxAckDelayMicros = uint64(1<<63-1) / uint64(time.Microsecond)

// String returns the frame type's RFC 9000 name; any of the STREAM types
// (0x08-0x0f) is "STREAM".
func (t FrameType) String() string {
	switch t {
	case FramePadding:
		return "PADDING"
	case FramePing:
		return "PING"
	case FrameAck:
		return "ACK"
	case FrameResetStream:
		return "RESET_STREAM"
	case FrameStopSending:
		return "STOP_SENDING"
	case FrameMaxData:
		return "MAX_DATA"
	case FrameMaxStreamData:
		return "MAX_STREAM_DATA"
	case FrameMaxStreams:
		return "MAX_STREAMS"
	case FrameDataBlocked:
		return "DATA_BLOCKED"
	case FrameStreamDataBlocked:
		return "STREAM_DATA_BLOCKED"
	case FrameConnectionClose:
		return "CONNECTION_CLOSE"
	}
	if t&^0x07 == FrameStream {
		return "STREAM"
	}
	return fmt.Sprintf("FrameType(0x%02x)", uint8(t))
}

// PADDING (RFC 9000 §19.1), one byte; n of them in a row pad a packet, here
// for path MTU probes:
//
//	+------+------+-----+------+
//	| 0x00 | 0x00 | ... | 0x00 |   n bytes
//	+------+------+-----+------+
//
// AppendPadding appends n zero bytes (none if n <= 0).
func AppendPadding(b []byte, n int) []byte {
	if n <= 0 {
		return b
	}
	return append(b, make([]byte, n)...)
}

// PING (RFC 9000 §19.2), only its type; it elicits an ACK:
//
//	+------+
//	| 0x01 |
//	+------+
func AppendPing(b []byte) []byte {
	return append(b, byte(FramePing))
}

// ACK (RFC 9000 §19.3), type 0x02 (no ECN counts):
//
//	+------+----------------------+---------------+---------------------+
//	| 0x02 | Largest Acknowledged | ACK Delay (i) | ACK Range Count (i) |
//	|      | (i)                  | microseconds  |                     |
//	+------+----------------------+---------------+---------------------+
//	| First ACK Range (i) | { Gap (i) | ACK Range Length (i) } x Count  |
//	+---------------------+---------------------------------------------+
//
// The ranges run from the largest down (§19.3.1). Largest Acknowledged is the
// first range's Largest and First ACK Range its Largest-Smallest. Each further
// range is coded against the Smallest of the one before it (prev):
//
//	Gap              = prev.Smallest - Largest - 2  (unacknowledged numbers between, less one)
//	ACK Range Length = Largest - Smallest
//
// ACK Delay is in microseconds: ack_delay_exponent is fixed at 0 (doc.go),
// not RFC 9000 §18.2's default of 3, as there are no transport parameters.
//
// AppendAck appends an ACK for ranges, which must be non-empty, within
// [0, 2^62-1], descending, and separated by at least one unacknowledged
// number (ranges that touch are one range); anything else is a programming
// error and panics. A negative delay is sent as 0; delay is truncated to
// whole microseconds.
func AppendAck(b []byte, ranges []AckRange, delay time.Duration) []byte {
	checkAckRanges(ranges)
	b = append(b, byte(FrameAck))
	b = AppendVarint(b, ranges[0].Largest)
	b = AppendVarint(b, ackDelayMicros(delay))
	b = AppendVarint(b, uint64(len(ranges)-1))
	b = AppendVarint(b, ranges[0].Largest-ranges[0].Smallest)
	for i := 1; i < len(ranges); i++ {
		r := &ranges[i]
		b = AppendVarint(b, ranges[i-1].Smallest-r.Largest-2)
		b = AppendVarint(b, r.Largest-r.Smallest)
	}
	return b
}

// AckSize returns len(AppendAck(nil, ranges, delay)) without encoding it, so
// that a packet builder can see whether an ACK fits. Its ranges must be as
// AppendAck requires.
func AckSize(ranges []AckRange, delay time.Duration) int {
	checkAckRanges(ranges)
	n := 1 + VarintLen(ranges[0].Largest) + VarintLen(ackDelayMicros(delay)) +
		VarintLen(uint64(len(ranges)-1)) + VarintLen(ranges[0].Largest-ranges[0].Smallest)
	for i := 1; i < len(ranges); i++ {
		r := &ranges[i]
		n += VarintLen(ranges[i-1].Smallest-r.Largest-2) + VarintLen(r.Largest-r.Smallest)
	}
	return n
}

// checkAckRanges panics unless ranges are as AppendAck requires.
func checkAckRanges(ranges []AckRange) {
	if len(ranges) == 0 {
		panic("reliable: ACK without ranges")
	}
	if ranges[0].Largest > maxVarint {
		panic(fmt.Sprintf("reliable: ACK of packet %d", ranges[0].Largest))
	}
	for i, r := range ranges {
		if r.Smallest > r.Largest {
			panic(fmt.Sprintf("reliable: ACK range [%d, %d] inverted", r.Smallest, r.Largest))
		}
		if i > 0 && r.Largest+1 >= ranges[i-1].Smallest {
			panic(fmt.Sprintf("reliable: ACK range [%d, %d] not below [%d, %d] with a gap",
				r.Smallest, r.Largest, ranges[i-1].Smallest, ranges[i-1].Largest))
		}
	}
}

// ackDelayMicros is the ACK Delay field for delay: whole microseconds, 0 for
// a negative delay.
func ackDelayMicros(delay time.Duration) uint64 {
	if delay <= 0 {
		return 0
	}
	return uint64(delay / time.Microsecond)
}

// RESET_STREAM (RFC 9000 §19.4): the sender abandons stream id at finalSize
// bytes:
//
//	+------+---------------+-----------------------------------+----------------+
//	| 0x04 | Stream ID (i) | Application Protocol Error Code (i) | Final Size (i) |
//	+------+---------------+-----------------------------------+----------------+
func AppendResetStream(b []byte, id, code, finalSize uint64) []byte {
	b = append(b, byte(FrameResetStream))
	b = AppendVarint(b, id)
	b = AppendVarint(b, code)
	return AppendVarint(b, finalSize)
}

// STOP_SENDING (RFC 9000 §19.5): the receiver asks the peer to stop sending on
// stream id:
//
//	+------+---------------+-------------------------------------+
//	| 0x05 | Stream ID (i) | Application Protocol Error Code (i) |
//	+------+---------------+-------------------------------------+
func AppendStopSending(b []byte, id, code uint64) []byte {
	b = append(b, byte(FrameStopSending))
	b = AppendVarint(b, id)
	return AppendVarint(b, code)
}

// STREAM (RFC 9000 §19.8), types 0x08-0x0f; the low three bits are flags:
//
//	  7 6 5 4 3  2   1   0
//	+-----------+---+---+---+
//	| 0 0 0 0 1 |OFF|LEN|FIN|
//	+-----------+---+---+---+
//
//	+------+---------------+--------------+--------------+-------------+
//	| type | Stream ID (i) | [Offset (i)] | [Length (i)] | Stream Data |
//	+------+---------------+--------------+--------------+-------------+
//
// Offset is present if OFF is set, else the offset is 0; Length if LEN is set,
// else the data runs to the end of the packet. FIN marks the data's end as the
// stream's end (its final size is Offset+Length). Offset+Length is at most
// 2^62-1 (§19.8).
//
// AppendStream appends a STREAM frame for data at offset of stream id. It sets
// OFF only if offset > 0 and LEN only if withLength: a frame without LEN must
// be the packet's last. The caller keeps offset+len(data) within 2^62-1.
func AppendStream(b []byte, id, offset uint64, data []byte, fin, withLength bool) []byte {
	t := byte(FrameStream)
	if offset > 0 {
		t |= streamBitOff
	}
	if withLength {
		t |= streamBitLen
	}
	if fin {
		t |= streamBitFin
	}
	b = append(b, t)
	b = AppendVarint(b, id)
	if offset > 0 {
		b = AppendVarint(b, offset)
	}
	if withLength {
		b = AppendVarint(b, uint64(len(data)))
	}
	return append(b, data...)
}

// StreamOverhead returns the bytes AppendStream writes around n bytes of data:
// the type, Stream ID, Offset (if offset > 0) and Length (if withLength).
func StreamOverhead(id, offset uint64, n int, withLength bool) int {
	o := 1 + VarintLen(id)
	if offset > 0 {
		o += VarintLen(offset)
	}
	if withLength {
		o += VarintLen(uint64(n))
	}
	return o
}

// MAX_DATA (RFC 9000 §19.9): the connection-level flow-control limit, in
// bytes of stream data summed over all streams:
//
//	+------+------------------+
//	| 0x10 | Maximum Data (i) |
//	+------+------------------+
func AppendMaxData(b []byte, max uint64) []byte {
	b = append(b, byte(FrameMaxData))
	return AppendVarint(b, max)
}

// MAX_STREAM_DATA (RFC 9000 §19.10): stream id's flow-control limit, an
// offset:
//
//	+------+---------------+-------------------------+
//	| 0x11 | Stream ID (i) | Maximum Stream Data (i) |
//	+------+---------------+-------------------------+
func AppendMaxStreamData(b []byte, id, max uint64) []byte {
	b = append(b, byte(FrameMaxStreamData))
	b = AppendVarint(b, id)
	return AppendVarint(b, max)
}

// MAX_STREAMS (RFC 9000 §19.11), type 0x12 (bidirectional; we have no
// unidirectional streams): how many streams the peer may open in all:
//
//	+------+---------------------+
//	| 0x12 | Maximum Streams (i) |
//	+------+---------------------+
//
// The limit is at most 2^60, or stream IDs would pass 2^62-1; a larger one
// is a programming error and panics.
func AppendMaxStreams(b []byte, max uint64) []byte {
	if max > maxStreamsLimit {
		panic(fmt.Sprintf("reliable: MAX_STREAMS %d beyond 2^60", max))
	}
	b = append(b, byte(FrameMaxStreams))
	return AppendVarint(b, max)
}

// DATA_BLOCKED (RFC 9000 §19.12): the sender has data to send but is held at
// the connection limit max:
//
//	+------+------------------+
//	| 0x14 | Maximum Data (i) |
//	+------+------------------+
func AppendDataBlocked(b []byte, max uint64) []byte {
	b = append(b, byte(FrameDataBlocked))
	return AppendVarint(b, max)
}

// STREAM_DATA_BLOCKED (RFC 9000 §19.13): the sender is held at stream id's
// limit max:
//
//	+------+---------------+-------------------------+
//	| 0x15 | Stream ID (i) | Maximum Stream Data (i) |
//	+------+---------------+-------------------------+
func AppendStreamDataBlocked(b []byte, id, max uint64) []byte {
	b = append(b, byte(FrameStreamDataBlocked))
	b = AppendVarint(b, id)
	return AppendVarint(b, max)
}

// CONNECTION_CLOSE (RFC 9000 §19.19), type 0x1d, the application variant; we
// never send the transport variant 0x1c, which carries a Frame Type field
// after the Error Code, and reject it:
//
//	+------+----------------+------------------------------+---------------+
//	| 0x1d | Error Code (i) | Reason Phrase Length (i)     | Reason Phrase |
//	+------+----------------+------------------------------+---------------+
//
// The reason is for people (RFC 9000 says UTF-8); nothing checks it.
func AppendConnectionClose(b []byte, code uint64, reason []byte) []byte {
	b = append(b, byte(FrameConnectionClose))
	b = AppendVarint(b, code)
	b = AppendVarint(b, uint64(len(reason)))
	return append(b, reason...)
}

// ParseFrame decodes the frame at the start of b into *f and returns its
// length in bytes; the next frame, if any, starts at b[n:]. Every field of *f
// that the frame does not set is zeroed; AckRanges is refilled from
// f.AckRanges[:0], so a Frame reused across packets stops allocating once its
// array has grown; Data and Reason alias b (capacity capped at their length).
// A run of PADDING bytes is one frame of Length n.
//
// The error wraps ErrFrame if the frame is truncated, of a type we do not
// speak (doc.go), or holds a value out of range: ACK ranges below packet 0,
// a STREAM frame ending beyond 2^62-1, MAX_STREAMS beyond 2^60. *f is then
// meaningless. An ACK Delay too long for a time.Duration is clamped to the
// longest whole microseconds one.
func ParseFrame(b []byte, f *Frame) (n int, err error) {
	*f = Frame{AckRanges: f.AckRanges[:0]}
	if len(b) == 0 {
		return 0, fmt.Errorf("%w: empty", ErrFrame)
	}
	t := FrameType(b[0])
	f.Type = t
	c := cursor{b: b, n: 1}
	switch t {
	case FramePadding:
		for c.n < len(b) && b[c.n] == 0 {
			c.n++
		}
		f.Length = c.n
		return c.n, nil
	case FramePing:
		return 1, nil
	case FrameAck:
		return parseAck(b, f)
	case FrameResetStream:
		f.StreamID = c.varint()
		f.Code = c.varint()
		f.Offset = c.varint()
	case FrameStopSending:
		f.StreamID = c.varint()
		f.Code = c.varint()
	case FrameMaxData, FrameDataBlocked:
		f.Max = c.varint()
	case FrameMaxStreams:
		f.Max = c.varint()
		if !c.short && f.Max > maxStreamsLimit {
			return 0, fmt.Errorf("%w: MAX_STREAMS %d beyond 2^60", ErrFrame, f.Max)
		}
	case FrameMaxStreamData, FrameStreamDataBlocked:
		f.StreamID = c.varint()
		f.Max = c.varint()
	case FrameConnectionClose:
		f.Code = c.varint()
		f.Reason = c.bytes(c.varint())
	case frameTransportClose:
		return 0, fmt.Errorf("%w: transport CONNECTION_CLOSE (0x1c)", ErrFrame)
	default:
		if t&^0x07 != FrameStream {
			return 0, fmt.Errorf("%w: unknown frame type 0x%02x", ErrFrame, b[0])
		}
		return parseStream(b, f)
	}
	if c.short {
		return 0, fmt.Errorf("%w: %v truncated", ErrFrame, t)
	}
	return c.n, nil
}

// parseStream is ParseFrame for a STREAM frame, b[0] in 0x08-0x0f.
func parseStream(b []byte, f *Frame) (int, error) {
	t := b[0]
	f.Type = FrameStream
	f.Fin = t&streamBitFin != 0
	c := cursor{b: b, n: 1}
	f.StreamID = c.varint()
	if t&streamBitOff != 0 {
		f.Offset = c.varint()
	}
	length := uint64(len(b) - c.n)
	if t&streamBitLen != 0 {
		length = c.varint()
	}
	f.Data = c.bytes(length)
	if c.short {
		return 0, fmt.Errorf("%w: STREAM truncated", ErrFrame)
	}
	// Both are below 2^62, so the sum cannot overflow.
	if f.Offset+length > maxVarint {
		return 0, fmt.Errorf("%w: STREAM %d ends at %d, beyond 2^62-1",
			ErrFrame, f.StreamID, f.Offset+length)
	}
	return c.n, nil
}

// parseAck is ParseFrame for an ACK frame; see AppendAck for the encoding.
func parseAck(b []byte, f *Frame) (int, error) {
	c := cursor{b: b, n: 1}
	largest := c.varint()
	delay := c.varint()
	count := c.varint()
	first := c.varint()
	if c.short {
		return 0, fmt.Errorf("%w: ACK truncated", ErrFrame)
	}
	// Each further range takes at least two bytes; a count the rest of the
	// packet cannot hold is cut off, and checking it here bounds the loop.
	if count > uint64(len(b)-c.n)/2 {
		return 0, fmt.Errorf("%w: ACK of %d ranges truncated", ErrFrame, count)
	}
	if first > largest {
		return 0, fmt.Errorf("%w: ACK first range %d below packet 0 from %d",
			ErrFrame, first, largest)
	}
	smallest := largest - first
	f.AckRanges = append(f.AckRanges, AckRange{Smallest: smallest, Largest: largest})
	for range count {
		gap := c.varint()
		length := c.varint()
		if c.short {
			return 0, fmt.Errorf("%w: ACK truncated", ErrFrame)
		}
		// largest = smallest - gap - 2 must not go below 0 (§19.3.1); gap
		// is below 2^62, so gap+2 cannot overflow.
		if gap+2 > smallest {
			return 0, fmt.Errorf("%w: ACK gap %d below packet 0 from %d", ErrFrame, gap, smallest)
		}
		largest = smallest - gap - 2
		if length > largest {
			return 0, fmt.Errorf("%w: ACK range length %d below packet 0 from %d",
				ErrFrame, length, largest)
		}
		smallest = largest - length
		f.AckRanges = append(f.AckRanges, AckRange{Smallest: smallest, Largest: largest})
	}
	f.AckDelay = time.Duration(min(delay, maxAckDelayMicros)) * time.Microsecond
	return c.n, nil
}

// cursor reads fields from a frame: b is the frame and what follows it, n how
// far reading has got. The first read that runs off the end sets short, and
// every read after it returns a zero value, so a parser reads all its fields
// and checks short once.
type cursor struct {
	b     []byte
	n     int
	short bool
}

// varint reads a varint.
func (c *cursor) varint() uint64 {
	if c.short {
		return 0
	}
	v, n, err := ParseVarint(c.b[c.n:])
	if err != nil {
		c.short = true
		return 0
	}
	c.n += n
	return v
}

// bytes reads the next n bytes: a slice of b, its capacity capped so that an
// append to it cannot overwrite what follows.
func (c *cursor) bytes(n uint64) []byte {
	if c.short || n > uint64(len(c.b)-c.n) {
		c.short = true
		return nil
	}
	end := c.n + int(n)
	p := c.b[c.n:end:end]
	c.n = end
	return p
}
