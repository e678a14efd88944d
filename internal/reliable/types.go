package reliable

import "time"

// Protocol constants: both sides assume them from the start (there are no
// transport parameters; see the package comment).
const (
	// InitialMaxData is the connection's flow-control limit before the peer's
	// first MAX_DATA.
	InitialMaxData = 1 << 20
	// InitialMaxStreamData is every stream's limit, in each direction, before
	// the first MAX_STREAM_DATA for it.
	InitialMaxStreamData = 256 << 10
	// InitialMaxStreams is how many streams each side may open before the
	// peer's first MAX_STREAMS.
	InitialMaxStreams = 100
	// MaxAckDelay is the longest a receiver holds back an ACK for an
	// ack-eliciting packet (RFC 9000 §13.2.1; QUIC's default max_ack_delay).
	MaxAckDelay = 25 * time.Millisecond
)

// FrameType is a frame's first byte (RFC 9000 §19). STREAM frames use
// FrameStream plus their flag bits.
type FrameType uint8

// The frame types this transport speaks; see the package comment.
const (
	FramePadding           FrameType = 0x00
	FramePing              FrameType = 0x01
	FrameAck               FrameType = 0x02
	FrameResetStream       FrameType = 0x04
	FrameStopSending       FrameType = 0x05
	FrameStream            FrameType = 0x08 // 0x08-0x0f: | 0x04 offset present, | 0x02 length present, | 0x01 FIN
	FrameMaxData           FrameType = 0x10
	FrameMaxStreamData     FrameType = 0x11
	FrameMaxStreams        FrameType = 0x12
	FrameDataBlocked       FrameType = 0x14
	FrameStreamDataBlocked FrameType = 0x15
	FrameConnectionClose   FrameType = 0x1d
)

// AckRange is an inclusive range of acknowledged packet numbers.
type AckRange struct {
	Smallest, Largest uint64
}

// Frame is one decoded frame: a tagged union, so that parsing a packet
// allocates nothing. Which fields mean something depends on Type:
//
//	PADDING            Length (how many padding bytes, the type byte included)
//	PING               —
//	ACK                AckRanges (largest first, descending, with at least one missing number between two ranges), AckDelay
//	RESET_STREAM       StreamID, Code, Offset (the final size)
//	STOP_SENDING       StreamID, Code
//	STREAM             StreamID, Offset, Data, Fin
//	MAX_DATA           Max
//	MAX_STREAM_DATA    StreamID, Max
//	MAX_STREAMS        Max
//	DATA_BLOCKED       Max (the limit the sender is blocked at)
//	STREAM_DATA_BLOCKED StreamID, Max
//	CONNECTION_CLOSE   Code, Reason
type Frame struct {
	Type      FrameType // for STREAM frames, FrameStream whatever the flag bits were
	StreamID  uint64
	Offset    uint64
	Max       uint64
	Code      uint64
	Length    int
	Data      []byte // STREAM: aliases the packet
	Fin       bool
	AckRanges []AckRange // ACK: ParseFrame appends to AckRanges[:0], reusing its array
	AckDelay  time.Duration
	Reason    []byte // CONNECTION_CLOSE: aliases the packet
}

// chunkKind says what a chunk of a sent packet was.
type chunkKind uint8

const (
	chunkStream        chunkKind = iota + 1 // stream data [offset, offset+length), fin
	chunkResetStream                        // a RESET_STREAM for id
	chunkStopSending                        // a STOP_SENDING for id
	chunkMaxStreamData                      // a MAX_STREAM_DATA for id (resend the current limit if lost)
	chunkMaxData                            // a MAX_DATA (resend the current limit if lost)
	chunkMaxStreams                         // a MAX_STREAMS (resend the current limit if lost)
	chunkPing                               // a PING: nothing to resend
	chunkMTUProbe                           // a path MTU probe of length bytes (pmtu.go): nothing to resend
)

// chunk is one retransmittable thing a packet carried, as the sender
// remembers it: enough to resend what was lost (stream data is resent from
// the stream's send buffer, a limit as its current value), never the bytes
// themselves.
type chunk struct {
	kind   chunkKind
	fin    bool
	length uint32
	id     uint64
	offset uint64
}

// maxChunks is how many chunks one packet may carry; the packet builder
// starts a new packet rather than carry more.
const maxChunks = 4

// sentPacket is what the sender keeps of a packet until it is acknowledged
// or declared lost (RFC 9002 §A.1.1).
type sentPacket struct {
	pn           uint64
	sentTime     int64 // ns on the caller's monotonic clock
	size         int   // bytes of the packet (before sealing)
	ackEliciting bool  // carries a frame other than ACK, PADDING or CONNECTION_CLOSE
	inFlight     bool  // counts toward bytes in flight: ack-eliciting or padded
	nchunks      uint8
	chunks       [maxChunks]chunk
}
