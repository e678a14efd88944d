package dht

import "errors"

// Errors returned by the DHT. Callers compare with errors.Is; the DHT wraps
// them with context such as the command or the remote address.
var (
	// Wire format.
	ErrShortPacket  = errors.New("dht: packet truncated")
	ErrNotDHT       = errors.New("dht: not a dht packet")
	ErrBadVersion   = errors.New("dht: unsupported protocol version")
	ErrBadAddress   = errors.New("dht: malformed address")
	ErrTooLarge     = errors.New("dht: field too large")
	ErrTrailingData = errors.New("dht: trailing bytes after message")
	ErrBadRecord    = errors.New("dht: malformed peer record")

	// Request outcomes.
	ErrTimeout      = errors.New("dht: request timed out")
	ErrClosed       = errors.New("dht: node closed")
	ErrNotStarted   = errors.New("dht: node not started")
	ErrNoNodes      = errors.New("dht: no reachable dht nodes")
	ErrRemote       = errors.New("dht: remote returned an error")
	ErrBadSignature = errors.New("dht: bad signature")
	ErrBadToken     = errors.New("dht: missing, stale or foreign token")
	ErrNoRelay      = errors.New("dht: relay does not know the target peer")
	// ErrNoStranger: an other-node NAT probe's server knows no node on an IP the requester
	// has not sent to, so nobody could send the unsolicited packet.
	ErrNoStranger  = errors.New("dht: nat probe: the server knows no node we never sent to")
	ErrRateLimited = errors.New("dht: rate limited")
	// ErrHeldForProbe: the address is the sender of a NAT probe's packet that the node is
	// waiting for, and nothing is sent to it until the wait ends (see NATProbe).
	ErrHeldForProbe = errors.New("dht: address held while its nat probe packet is awaited")
	// ErrNotPersistent: the node answered without the id its address
	// implies, so it is no persistent swarmdb DHT node (VerifyNode).
	ErrNotPersistent = errors.New("dht: not a persistent dht node")
	// ErrNoFamily: the node has no socket of the address's family (an
	// IPv6 address on an IPv4-only node, or the reverse), or has not
	// joined that family's overlay.
	ErrNoFamily = errors.New("dht: no socket or overlay for this address family")
)

// ErrorCode is the one-byte error a response carries. Zero means success.
type ErrorCode uint8

const (
	CodeOK             ErrorCode = 0
	CodeUnknownCommand ErrorCode = 1
	CodeBadToken       ErrorCode = 2
	CodeBadSignature   ErrorCode = 3
	CodeBadRequest     ErrorCode = 4
	CodeNotStoring     ErrorCode = 5 // ephemeral nodes store no records
	CodeUnknownPeer    ErrorCode = 6 // relay: no forward entry for the key
	CodeRateLimited    ErrorCode = 7
	CodeRelayFailed    ErrorCode = 8 // relay: the announcer did not answer
)

func (c ErrorCode) String() string {
	switch c {
	case CodeOK:
		return "ok"
	case CodeUnknownCommand:
		return "unknown command"
	case CodeBadToken:
		return "bad token"
	case CodeBadSignature:
		return "bad signature"
	case CodeBadRequest:
		return "bad request"
	case CodeNotStoring:
		return "not storing"
	case CodeUnknownPeer:
		return "unknown peer"
	case CodeRateLimited:
		return "rate limited"
	case CodeRelayFailed:
		return "relay failed"
	}
	return "unknown error"
}

// asError maps a response error code to the sentinel the caller can test.
func (c ErrorCode) asError() error {
	switch c {
	case CodeOK:
		return nil
	case CodeBadToken:
		return ErrBadToken
	case CodeBadSignature:
		return ErrBadSignature
	case CodeUnknownPeer:
		return ErrNoRelay
	case CodeRateLimited:
		return ErrRateLimited
	}
	return ErrRemote
}

// ErrNoTURN means the asked node serves no TURN relay, or declined to make
// an offer (at capacity, public address unknown).
var ErrNoTURN = errors.New("dht: node offers no turn relay")
