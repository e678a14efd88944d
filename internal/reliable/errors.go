package reliable

import "errors"

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
