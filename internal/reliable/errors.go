package reliable

import (
	"errors"
	"fmt"
)

// Errors. A peer that breaks the protocol gets the connection closed; the
// error says why and wraps one of these.
var (
	// ErrFrame: a frame could not be decoded (truncated, unknown type, a
	// value out of range).
	ErrFrame = errors.New("reliable: malformed frame")
	// ErrProtocol: a well-formed frame the protocol forbids here, such as an
	// ACK for a packet never sent or a frame for a stream the peer may not
	// open.
	ErrProtocol = errors.New("reliable: protocol violation")
	// ErrFlowControl: the peer sent beyond a limit we gave it (RFC 9000 §4).
	ErrFlowControl = errors.New("reliable: flow control violated")
	// ErrFinalSize: a stream's final size changed, or data arrived beyond it
	// (RFC 9000 §4.5).
	ErrFinalSize = errors.New("reliable: final size changed")
	// ErrStreamLimit: opening the stream would exceed what the peer allows.
	ErrStreamLimit = errors.New("reliable: stream limit reached")
)

// ErrStreamClosed: the stream is not open here: never opened, or over and
// forgotten.
var ErrStreamClosed = errors.New("reliable: stream closed")

// CloseError is why a connection ended: a CONNECTION_CLOSE sent (Remote
// false) or received (Remote true). Code is the application's, or
// CodeProtocolError.
type CloseError struct {
	Code   uint64
	Reason string
	Remote bool
}

func (e *CloseError) Error() string {
	side := "local"
	if e.Remote {
		side = "remote"
	}
	if e.Reason == "" {
		return fmt.Sprintf("reliable: connection closed (%s, code %d)", side, e.Code)
	}
	return fmt.Sprintf("reliable: connection closed (%s, code %d): %s", side, e.Code, e.Reason)
}

// CodeProtocolError is the CONNECTION_CLOSE code of a connection closed
// because the peer broke the protocol; the reason says how. Applications
// use codes below it.
const CodeProtocolError = 1 << 32
