package holepunch

import "errors"

// Errors of connect-by-key (Endpoint).
var (
	// ErrConfig: an EndpointConfig is missing a required field or a call
	// asked for something impossible.
	ErrConfig = errors.New("holepunch: bad configuration")
	// ErrClosed: the endpoint was closed.
	ErrClosed = errors.New("holepunch: endpoint closed")
	// ErrDialInProgress: a dial to the same key is already running.
	ErrDialInProgress = errors.New("holepunch: dial to this key already in progress")
	// ErrNoRelays: the peer's key has no relays in the DHT (not listening).
	ErrNoRelays = errors.New("holepunch: peer has no relays")
	// ErrSignal: no relay carried the handshake to the peer and back.
	ErrSignal = errors.New("holepunch: signaling failed")
	// ErrHandshake: no answer authenticated as the dialled key.
	ErrHandshake = errors.New("holepunch: handshake failed")
	// ErrBadSignal: a signaling payload is malformed or of an unknown version.
	ErrBadSignal = errors.New("holepunch: bad signaling payload")
	// ErrRefused: the peer's firewall refused our key.
	ErrRefused = errors.New("holepunch: refused by peer")
	// ErrBusy: the peer is at its handshake limit.
	ErrBusy = errors.New("holepunch: peer busy")
	// ErrSimultaneous: the peer dialled us at the same moment and its dial
	// won the tie-break; the connection arrives through OnConnection.
	ErrSimultaneous = errors.New("holepunch: simultaneous dial lost the tie-break")
	// ErrBothSymmetric: both sides have endpoint-dependent mapping, so only
	// a relay can connect them.
	ErrBothSymmetric = errors.New("holepunch: both sides behind symmetric NATs")
	// ErrPunchFailed: no candidate pair (nor birthday punching) worked.
	ErrPunchFailed = errors.New("holepunch: hole punching failed")
	// ErrNoTURN: a relay was needed but no TURN server could be used.
	ErrNoTURN = errors.New("holepunch: no TURN relay available")
)

// Errors of the birthday punch.
var (
	// ErrPunchTimeout means the context's deadline passed before the punch
	// succeeded.
	ErrPunchTimeout = errors.New("holepunch: birthday punch timed out")
	// ErrPunchBudget means the easy side sent its whole probe budget and no
	// ack came back within the grace period after the last probe.
	ErrPunchBudget = errors.New("holepunch: birthday probe budget spent")
	// ErrBirthdayConfig means a PunchEasy or PunchHard configuration is
	// unusable (a required field is missing or a value is out of range).
	ErrBirthdayConfig = errors.New("holepunch: bad birthday punch config")
	// ErrBirthdayPacket means a datagram is not a well-formed birthday
	// packet.
	ErrBirthdayPacket = errors.New("holepunch: malformed birthday packet")
)
