package secure

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"time"
)

// envelopeVersion is the version byte at the start of every handshake payload envelope.
// A peer that receives another version returns ErrVersion; there is no negotiation yet
// (a future version would be announced in the peer's DHT record).
const envelopeVersion = 1

// MaxHandshakePayload is the largest caller payload in msg1 or msg2. It keeps msg1 under
// about 1.2 KB, so a handshake message plus the DHT's relay header fits one UDP datagram
// without IP fragmentation. ICE ufrag, pwd, about ten candidates, the NAT class and LAN
// addresses fit comfortably.
const MaxHandshakePayload = 1024

const (
	msg1EnvelopeHeader = 1 + ed25519.PublicKeySize + 8 // version, identity, timestamp
	msg2EnvelopeHeader = 1                             // version
)

// msg1Envelope is the plaintext inside Noise IK message 1 (encrypted and authenticated
// by the handshake, so relays can neither read nor alter it).
//
//	 0         1                                33                 41
//	+---------+--------------------------------+------------------+---------------------+
//	| version | initiator Ed25519 public key   | unix time, ms,   | caller payload      |
//	|  = 1    | (32 bytes)                     | uint64 BE        | (0..1024 bytes)     |
//	+---------+--------------------------------+------------------+---------------------+
//
// The Ed25519 key is what the responder learns as the peer's identity; ReadMsg1 checks
// that its X25519 form equals the Noise static key that authenticated the message. The
// timestamp lets the responder reject replayed msg1s (IK's first message has no
// replay protection of its own; WireGuard uses a TAI64N timestamp the same way).
type msg1Envelope struct {
	Identity  ed25519.PublicKey
	Timestamp time.Time
	Payload   []byte
}

func appendMsg1Envelope(b []byte, e msg1Envelope) []byte {
	b = append(b, envelopeVersion)
	b = append(b, e.Identity...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Timestamp.UnixMilli()))
	return append(b, e.Payload...)
}

// parseMsg1Envelope parses a msg1 envelope. The returned slices alias b.
func parseMsg1Envelope(b []byte) (msg1Envelope, error) {
	if len(b) < 1 {
		return msg1Envelope{}, fmt.Errorf("%w: empty msg1 envelope", ErrHandshake)
	}
	if b[0] != envelopeVersion {
		return msg1Envelope{}, fmt.Errorf("%w: msg1 envelope version %d", ErrVersion, b[0])
	}
	if len(b) < msg1EnvelopeHeader {
		return msg1Envelope{}, fmt.Errorf("%w: msg1 envelope of %d bytes", ErrHandshake, len(b))
	}
	if len(b)-msg1EnvelopeHeader > MaxHandshakePayload {
		return msg1Envelope{}, fmt.Errorf("%w: msg1 payload of %d bytes", ErrPayloadTooLarge, len(b)-msg1EnvelopeHeader)
	}
	ms := binary.BigEndian.Uint64(b[33:41])
	if ms > 1<<62 {
		return msg1Envelope{}, fmt.Errorf("%w: msg1 timestamp out of range", ErrHandshake)
	}
	return msg1Envelope{
		Identity:  ed25519.PublicKey(b[1:33]),
		Timestamp: time.UnixMilli(int64(ms)),
		Payload:   b[msg1EnvelopeHeader:],
	}, nil
}

// msg2 envelope: the plaintext inside Noise IK message 2.
//
//	 0         1
//	+---------+---------------------+
//	| version | caller payload      |
//	|  = 1    | (0..1024 bytes)     |
//	+---------+---------------------+
func appendMsg2Envelope(b, payload []byte) []byte {
	b = append(b, envelopeVersion)
	return append(b, payload...)
}

func parseMsg2Envelope(b []byte) ([]byte, error) {
	if len(b) < msg2EnvelopeHeader {
		return nil, fmt.Errorf("%w: empty msg2 envelope", ErrHandshake)
	}
	if b[0] != envelopeVersion {
		return nil, fmt.Errorf("%w: msg2 envelope version %d", ErrVersion, b[0])
	}
	if len(b)-msg2EnvelopeHeader > MaxHandshakePayload {
		return nil, fmt.Errorf("%w: msg2 payload of %d bytes", ErrPayloadTooLarge, len(b)-msg2EnvelopeHeader)
	}
	return b[msg2EnvelopeHeader:], nil
}
