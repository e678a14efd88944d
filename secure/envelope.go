package secure

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"time"
)

// Envelope versions: the byte at the start of every handshake payload envelope.
//
// Version 2 negotiates the outer cipher (cipher.go): msg1 carries the set of ciphers
// the initiator offers, msg2 the one the responder chose. Both travel inside Noise's
// encrypted and authenticated payloads, so a relay can neither read nor change them:
// the choice cannot be downgraded. Initiators write version 2.
//
// Responders still accept version 1, which had no offer, from older initiators, and
// answer it in version 1 with ChaCha20-Poly1305, the one cipher those peers speak:
// refusing them would cut older nodes off for no gain. It opens no downgrade either: a
// version-1 msg1 is as authenticated as a version-2 one (only the initiator's static
// key can produce it), so a relay cannot turn one into the other, and what a version-1
// session gets, ChaCha20-Poly1305 under the handshake key, is what every session had
// before. The reverse does not work: an older responder refuses a version-2 msg1 with
// ErrVersion and answers nothing, so this version cannot dial an older one; announcing
// the version (in the DHT record, say) would let an initiator fall back to version 1.
// Any other version is ErrVersion.
const (
	envelopeVersion  = 2
	envelopeVersion1 = 1
)

// MaxHandshakePayload is the largest caller payload in msg1 or msg2. It keeps msg1 under
// about 1.2 KB, so a handshake message plus the DHT's relay header fits one UDP datagram
// without IP fragmentation. ICE ufrag, pwd, about ten candidates, the NAT class and LAN
// addresses fit comfortably.
const MaxHandshakePayload = 1024

const (
	// version, identity, timestamp, offer (not in version 1)
	msg1EnvelopeHeader   = 1 + ed25519.PublicKeySize + 8 + 1
	msg1EnvelopeHeaderV1 = msg1EnvelopeHeader - 1
	// version, chosen cipher (not in version 1)
	msg2EnvelopeHeader   = 1 + 1
	msg2EnvelopeHeaderV1 = msg2EnvelopeHeader - 1
)

// msg1Envelope is the plaintext inside Noise IK message 1 (encrypted and authenticated
// by the handshake, so relays can neither read nor alter it).
//
//	 0         1                        33              41         42
//	+---------+------------------------+---------------+----------+---------------------+
//	| version | initiator Ed25519      | unix time, ms,| offered  | caller payload      |
//	|  = 2    | public key (32 bytes)  | uint64 BE     | ciphers  | (0..1024 bytes)     |
//	+---------+------------------------+---------------+----------+---------------------+
//
// The Ed25519 key is what the responder learns as the peer's identity; ReadMsg1 checks
// that its X25519 form equals the Noise static key that authenticated the message. The
// timestamp lets the responder reject replayed msg1s (IK's first message has no
// replay protection of its own; WireGuard uses a TAI64N timestamp the same way). The
// offer is a bit set, bit c for Cipher c (0x01 ChaCha20-Poly1305, which is always
// offered; 0x02 AES-256-GCM); a responder ignores bits it does not know. Version 1 is
// the same without the offer byte, and offers ChaCha20-Poly1305 only.
type msg1Envelope struct {
	Version   byte // envelopeVersion or envelopeVersion1
	Identity  ed25519.PublicKey
	Timestamp time.Time
	Offer     cipherSet // not encoded in version 1, where it is ChaCha20-Poly1305 only
	Payload   []byte
}

func appendMsg1Envelope(b []byte, e msg1Envelope) []byte {
	b = append(b, e.Version)
	b = append(b, e.Identity...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Timestamp.UnixMilli()))
	if e.Version != envelopeVersion1 {
		b = append(b, byte(e.Offer))
	}
	return append(b, e.Payload...)
}

// parseMsg1Envelope parses a msg1 envelope of version 2 or 1. The returned slices alias
// b.
func parseMsg1Envelope(b []byte) (msg1Envelope, error) {
	if len(b) < 1 {
		return msg1Envelope{}, fmt.Errorf("%w: empty msg1 envelope", ErrHandshake)
	}
	header := msg1EnvelopeHeader
	switch b[0] {
	case envelopeVersion:
	case envelopeVersion1:
		header = msg1EnvelopeHeaderV1
	default:
		return msg1Envelope{}, fmt.Errorf("%w: msg1 envelope version %d", ErrVersion, b[0])
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
	offer := setOf(CipherChaCha20Poly1305)
	if b[0] == envelopeVersion {
		offer = cipherSet(b[41])
	}
	return msg1Envelope{
		Version:   b[0],
		Identity:  ed25519.PublicKey(b[1:33]),
		Timestamp: time.UnixMilli(int64(ms)),
		Offer:     offer,
		Payload:   b[header:],
	}, nil
}

// msg2Envelope is the plaintext inside Noise IK message 2, in the version of the msg1
// it answers.
//
//	 0         1          2
//	+---------+----------+---------------------+
//	| version | chosen   | caller payload      |
//	|  = 2    | cipher   | (0..1024 bytes)     |
//	+---------+----------+---------------------+
//
// The chosen cipher is one Cipher value (0 ChaCha20-Poly1305, 1 AES-256-GCM), one the
// initiator offered. Version 1 is the same without it, and means ChaCha20-Poly1305.
type msg2Envelope struct {
	Version byte
	Cipher  Cipher // not encoded in version 1, where it is ChaCha20-Poly1305
	Payload []byte
}

func appendMsg2Envelope(b []byte, e msg2Envelope) []byte {
	b = append(b, e.Version)
	if e.Version != envelopeVersion1 {
		b = append(b, byte(e.Cipher))
	}
	return append(b, e.Payload...)
}

// parseMsg2Envelope parses a msg2 envelope of version 2 or 1. The payload aliases b.
func parseMsg2Envelope(b []byte) (msg2Envelope, error) {
	if len(b) < 1 {
		return msg2Envelope{}, fmt.Errorf("%w: empty msg2 envelope", ErrHandshake)
	}
	header := msg2EnvelopeHeader
	switch b[0] {
	case envelopeVersion:
	case envelopeVersion1:
		header = msg2EnvelopeHeaderV1
	default:
		return msg2Envelope{}, fmt.Errorf("%w: msg2 envelope version %d", ErrVersion, b[0])
	}
	if len(b) < header {
		return msg2Envelope{}, fmt.Errorf("%w: msg2 envelope of %d bytes", ErrHandshake, len(b))
	}
	if len(b)-header > MaxHandshakePayload {
		return msg2Envelope{}, fmt.Errorf("%w: msg2 payload of %d bytes", ErrPayloadTooLarge, len(b)-header)
	}
	e := msg2Envelope{Version: b[0], Cipher: CipherChaCha20Poly1305, Payload: b[header:]}
	if b[0] == envelopeVersion {
		e.Cipher = Cipher(b[1])
	}
	return e, nil
}
