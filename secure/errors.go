package secure

import "errors"

// Errors returned by this package. Callers test them with errors.Is; they are always
// wrapped with context.
var (
	// ErrInvalidKey: an Ed25519 key has the wrong length, is not a canonical encoding of a
	// point, or is not in the prime-order subgroup.
	ErrInvalidKey = errors.New("secure: invalid key")

	// ErrHandshake: a handshake message failed to authenticate or is malformed. On the
	// initiator this is not fatal: the state machine can read another msg2.
	ErrHandshake = errors.New("secure: handshake failed")

	// ErrVersion: a handshake envelope carries a version this code does not speak.
	ErrVersion = errors.New("secure: unknown version")

	// ErrCipher: a handshake's two sides share no outer cipher, or the responder chose
	// one the initiator did not offer. Both come from an authenticated peer breaking the
	// protocol, so on the initiator it is fatal.
	ErrCipher = errors.New("secure: no common cipher")

	// ErrIdentityMismatch: the Ed25519 key in the initiator's envelope does not convert to
	// the Noise static key that authenticated the message.
	ErrIdentityMismatch = errors.New("secure: identity does not match static key")

	// ErrPayloadTooLarge: a handshake payload exceeds MaxHandshakePayload.
	ErrPayloadTooLarge = errors.New("secure: handshake payload too large")

	// ErrHandshakeState: a handshake method was called out of order, or after a fatal
	// error.
	ErrHandshakeState = errors.New("secure: handshake method called in wrong state")

	// ErrDatagramTooLarge: a datagram write exceeds the configured MaxPayload.
	ErrDatagramTooLarge = errors.New("secure: datagram too large")

	// ErrCounterExhausted: the send counter reached MaxCounter; a new handshake is needed.
	ErrCounterExhausted = errors.New("secure: send counter exhausted")

	// Datagram drop reasons, returned by the packet codec and counted in DatagramStats.
	ErrMalformedPacket = errors.New("secure: malformed packet")
	ErrAuthFailed      = errors.New("secure: packet authentication failed")
	ErrReplayed        = errors.New("secure: packet replayed")
	ErrTooOld          = errors.New("secure: packet behind replay window")

	// ErrPeerDead: no authenticated datagram arrived within Config.DeadTimeout.
	ErrPeerDead = errors.New("secure: peer dead")

	// ErrRemoteClosed: the peer closed the session (its goodbye, or a CONNECTION_CLOSE).
	ErrRemoteClosed = errors.New("secure: session closed by peer")

	// ErrSessionClosed: the session was closed locally.
	ErrSessionClosed = errors.New("secure: session closed")

	// ErrStreamIDsExhausted: every stream id of this side is in use.
	ErrStreamIDsExhausted = errors.New("secure: no free stream id")

	// ErrProtocol: the peer broke the session protocol (wrong first stream, bad hello).
	ErrProtocol = errors.New("secure: session protocol violation")

	// ErrHandled: the stream's messages go to a handler (Stream.HandleMessages), so
	// Read and ReadMessage have nothing to return.
	ErrHandled = errors.New("secure: stream read by a message handler")
)
