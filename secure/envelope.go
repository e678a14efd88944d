package secure

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"time"
)

// envelopeVersion is the byte at the start of every handshake payload envelope.
//
// Version 3 is version 2's layout (the outer cipher is negotiated: msg1 carries the set
// of ciphers the initiator offers, msg2 the one the responder chose, both inside Noise's
// encrypted and authenticated payloads, so the choice cannot be downgraded) for sessions
// whose streams run on internal/reliable. Versions 1 and 2 ran their streams on QUIC,
// which this version does not speak, so both ends refuse them with ErrVersion at the
// handshake: an older node and this one fail at once, with a reason, instead of a
// session that carries nothing. Any other version is ErrVersion too.
const envelopeVersion = 3

// MaxHandshakePayload is the largest caller payload in msg1 or msg2. It keeps msg1 under
// about 1.2 KB, so a handshake message plus the DHT's relay header fits one UDP datagram
// without IP fragmentation. ICE ufrag, pwd, about ten candidates, the NAT class and LAN
// addresses fit comfortably.
const MaxHandshakePayload = 1024

const (
	// version, identity, timestamp, offer
	msg1EnvelopeHeader = 1 + ed25519.PublicKeySize + 8 + 1
	// version, chosen cipher
	msg2EnvelopeHeader = 1 + 1
)

// msg1Envelope is the plaintext inside Noise IK message 1 (encrypted and authenticated
// by the handshake, so relays can neither read nor alter it).
//
//	 0         1                        33              41         42
//	+---------+------------------------+---------------+----------+---------------------+
//	| version | initiator Ed25519      | unix time, ms,| offered  | caller payload      |
//	|  = 3    | public key (32 bytes)  | uint64 BE     | ciphers  | (0..1024 bytes)     |
//	+---------+------------------------+---------------+----------+---------------------+
//
// The Ed25519 key is what the responder learns as the peer's identity; ReadMsg1 checks
// that its X25519 form equals the Noise static key that authenticated the message. The
// timestamp lets the responder reject replayed msg1s (IK's first message has no
// replay protection of its own; WireGuard uses a TAI64N timestamp the same way). The
// offer is a bit set, bit c for Cipher c (0x01 ChaCha20-Poly1305, which is always
// offered; 0x02 AES-256-GCM); a responder ignores bits it does not know.
type msg1Envelope struct {
	Identity  ed25519.PublicKey
	Timestamp time.Time
	Offer     cipherSet
	Payload   []byte
}

func appendMsg1Envelope(b []byte, e msg1Envelope) []byte {
	b = append(b, envelopeVersion)
	b = append(b, e.Identity...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Timestamp.UnixMilli()))
	b = append(b, byte(e.Offer))
	return append(b, e.Payload...)
}

// parseMsg1Envelope parses a msg1 envelope. The returned slices alias b.
func parseMsg1Envelope(b []byte) (msg1Envelope, error) {
	if len(b) < 1 {
		return msg1Envelope{}, fmt.Errorf("%w: empty msg1 envelope", ErrHandshake)
	}
	header := msg1EnvelopeHeader
	if err := checkVersion(b[0], "msg1"); err != nil {
		return msg1Envelope{}, err
	}
	if len(b) < header {
		return msg1Envelope{}, fmt.Errorf("%w: msg1 envelope of %d bytes", ErrHandshake, len(b))
	}
	if len(b)-header > MaxHandshakePayload {
		return msg1Envelope{}, fmt.Errorf("%w: msg1 payload of %d bytes", ErrPayloadTooLarge, len(b)-header)
	}
	ms := binary.BigEndian.Uint64(b[33:41])
	if ms > 1<<62 {
		return msg1Envelope{}, fmt.Errorf("%w: msg1 timestamp out of range", ErrHandshake)
	}
	return msg1Envelope{
		Identity:  ed25519.PublicKey(b[1:33]),
		Timestamp: time.UnixMilli(int64(ms)),
		Offer:     cipherSet(b[41]),
		Payload:   b[header:],
	}, nil
}

// checkVersion refuses every envelope version but ours, naming the older ones.
func checkVersion(v byte, msg string) error {
	switch {
	case v == envelopeVersion:
		return nil
	case v < envelopeVersion:
		return fmt.Errorf("%w: %s envelope version %d: the peer runs an older swarmdb, whose streams ran on QUIC", ErrVersion, msg, v)
	default:
		return fmt.Errorf("%w: %s envelope version %d", ErrVersion, msg, v)
	}
}

// msg2Envelope is the plaintext inside Noise IK message 2.
//
//	 0         1          2
//	+---------+----------+---------------------+
//	| version | chosen   | caller payload      |
//	|  = 3    | cipher   | (0..1024 bytes)     |
//	+---------+----------+---------------------+
//
// The chosen cipher is one Cipher value (0 ChaCha20-Poly1305, 1 AES-256-GCM), one the
// initiator offered.
type msg2Envelope struct {
	Cipher  Cipher
	Payload []byte
}

func appendMsg2Envelope(b []byte, e msg2Envelope) []byte {
	b = append(b, envelopeVersion, byte(e.Cipher))
	return append(b, e.Payload...)
}

// parseMsg2Envelope parses a msg2 envelope. The payload aliases b.
func parseMsg2Envelope(b []byte) (msg2Envelope, error) {
	if len(b) < 1 {
		return msg2Envelope{}, fmt.Errorf("%w: empty msg2 envelope", ErrHandshake)
	}
	header := msg2EnvelopeHeader
	if err := checkVersion(b[0], "msg2"); err != nil {
		return msg2Envelope{}, err
	}
	if len(b) < header {
		return msg2Envelope{}, fmt.Errorf("%w: msg2 envelope of %d bytes", ErrHandshake, len(b))
	}
	if len(b)-header > MaxHandshakePayload {
		return msg2Envelope{}, fmt.Errorf("%w: msg2 payload of %d bytes", ErrPayloadTooLarge, len(b)-header)
	}
	return msg2Envelope{Cipher: Cipher(b[1]), Payload: b[header:]}, nil
}
