package node

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/swarmdb/swarmdb/secure"
)

// What a pipe (StartPipe, `swarmdb pipe`) sends on stream 0, each
// direction on its own. A secure.Stream keeps message boundaries (one Write
// of at most secure.DefaultMaxMessageSize bytes is one message,
// ReadMessage returns it whole), so every message is one frame:
//
//	+------+------------------------+
//	| 'd'  | data (1..65535 bytes)  |   a piece of the sender's input
//	+------+------------------------+
//	| 'e'  | total (8 bytes, BE)    |   end of input: the sender read EOF after total bytes
//	+------+------------------------+
//
// A direction is complete only when its 'e' frame arrived and its total is
// the number of data bytes received; then the stream ends (EOF). A stream
// that ends without it was cut short: the sender was stopped or lost before
// the end of its input, however gracefully its connection closed. Without
// this frame a Ctrl-C on the sending side looked like a finished transfer.
const (
	pipeFrameData = 'd'
	pipeFrameEnd  = 'e'

	// pipeFrameMax is the largest frame: one secure stream message.
	pipeFrameMax = secure.DefaultMaxMessageSize
	// pipeFrameStart is the first read buffer's size (sendPipe).
	pipeFrameStart = 4 << 10
	// pipeEndFrameLen is the size of an end frame.
	pipeEndFrameLen = 1 + 8
)

// errPipeFrame: the peer sent something that is not a pipe frame.
var errPipeFrame = errors.New("not a pipe frame")

// pipeFrame is one parsed frame: data, or the end with the sender's total.
type pipeFrame struct {
	end   bool
	data  []byte // aliases the parsed buffer
	total uint64 // end frames: data bytes sent before it
}

// appendPipeData appends a data frame carrying p.
func appendPipeData(b, p []byte) []byte {
	return append(append(b, pipeFrameData), p...)
}

// appendPipeEnd appends the end frame for total bytes of data.
func appendPipeEnd(b []byte, total uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, pipeFrameEnd), total)
}

// parsePipeFrame parses one message read from the stream.
func parsePipeFrame(b []byte) (pipeFrame, error) {
	if len(b) == 0 {
		return pipeFrame{}, fmt.Errorf("%w: empty message", errPipeFrame)
	}
	if len(b) > pipeFrameMax {
		return pipeFrame{}, fmt.Errorf("%w: %d bytes", errPipeFrame, len(b))
	}
	switch b[0] {
	case pipeFrameData:
		if len(b) == 1 {
			return pipeFrame{}, fmt.Errorf("%w: data frame without data", errPipeFrame)
		}
		return pipeFrame{data: b[1:]}, nil
	case pipeFrameEnd:
		if len(b) != pipeEndFrameLen {
			return pipeFrame{}, fmt.Errorf("%w: end frame of %d bytes", errPipeFrame, len(b))
		}
		return pipeFrame{end: true, total: binary.BigEndian.Uint64(b[1:])}, nil
	}
	return pipeFrame{}, fmt.Errorf("%w: type 0x%02x", errPipeFrame, b[0])
}
