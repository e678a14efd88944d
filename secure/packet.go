package secure

import (
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/swarmdb/swarmdb/internal/demux"
)

// PacketTag is the first byte of every sealed datagram. The node's one UDP socket is
// shared by STUN, both DHTs, punching probes and this transport and is demultiplexed
// by the first byte; internal/demux holds the one table of those bytes.
const PacketTag = demux.TagSealed

// Sealed datagram layout:
//
//	 0      1                              9                               n-16        n
//	+------+------------------------------+-------------------------------+-----------+
//	| 0xE5 | counter, uint64 big-endian    | ciphertext of the payload      | AEAD tag  |
//	|      |                              | (as long as the payload)       | (16)      |
//	+------+------------------------------+-------------------------------+-----------+
//
// The AEAD is the session's Cipher, negotiated in the handshake: ChaCha20-Poly1305 or
// AES-256-GCM. Its key is the sender's Keys.Send (the receiver's Keys.Recv) for
// ChaCha20-Poly1305, and for AES-256-GCM the key of the counter's epoch, derived from
// it (rekey.go). The nonce is the Noise nonce for the counter and cipher: 4 zero bytes,
// then the counter little-endian for ChaChaPoly and big-endian for AESGCM (Noise spec
// §12.3, §12.4). The 9-byte header is the associated data, so the tag, counter and
// payload are all authenticated. The counter travels in the clear because datagrams
// may be lost and reordered (WireGuard §5.4.6, nebula do the same); the receiver's
// replay window rejects repeats. An empty payload is a valid packet (a keepalive).
const (
	packetHeaderLen = 1 + 8
	// PacketOverhead is what sealing adds to a payload.
	PacketOverhead = packetHeaderLen + tagLen
	// MaxCounter: a sender never uses this counter or beyond and the receiver rejects
	// them; reaching it needs a new handshake. 2^60 datagrams is 36,000 years at
	// one million datagrams per second, far below either cipher's 2^64 nonce limit
	// (and ChaCha20-Poly1305's confidentiality limit; AES-256-GCM's keys change
	// every 2^23 counters, rekey.go).
	MaxCounter = 1 << 60
)

// IsSealedPacket reports whether a datagram read from the shared socket belongs to this
// package (by its tag byte only; it authenticates nothing).
func IsSealedPacket(b []byte) bool { return len(b) > 0 && b[0] == PacketTag }

// nonceSize is the nonce length of both ciphers. Sealing and opening build the nonce in
// spare capacity of the buffer they work in, beyond the bytes they write: the AEAD is
// an interface, so a nonce array on the stack would escape to the heap, one allocation
// per datagram. The conn's buffers leave that much room.
const nonceSize = 12

// putNonce writes the nonce for counter under c into b[:nonceSize] and returns it.
func putNonce(b []byte, c Cipher, counter uint64) []byte {
	n := b[:nonceSize]
	clear(n[:4])
	if c == CipherAES256GCM {
		binary.BigEndian.PutUint64(n[4:], counter)
	} else {
		binary.LittleEndian.PutUint64(n[4:], counter)
	}
	return n
}

// appendSealed appends the sealed packet for payload under counter to dst, with aead,
// an AEAD of cipher c. dst and payload must not overlap unless payload starts exactly
// at len(dst)+packetHeaderLen. The nonce goes in dst's capacity after the packet, which
// grows dst unless it has nonceSize bytes to spare.
func appendSealed(dst []byte, c Cipher, aead cipher.AEAD, counter uint64, payload []byte) []byte {
	start := len(dst)
	dst = slices.Grow(dst, packetHeaderLen+len(payload)+tagLen+nonceSize)
	dst = append(dst, PacketTag)
	dst = binary.BigEndian.AppendUint64(dst, counter)
	end := len(dst) + len(payload) + tagLen
	nonce := putNonce(dst[end:end+nonceSize], c, counter)
	return aead.Seal(dst, nonce, payload, dst[start:])
}

// parsePacketHeader returns the counter of a packet without authenticating it, so the
// replay window can be consulted before the AEAD work.
func parsePacketHeader(packet []byte) (uint64, error) {
	if len(packet) < PacketOverhead {
		return 0, fmt.Errorf("%w: %d bytes", ErrMalformedPacket, len(packet))
	}
	if packet[0] != PacketTag {
		return 0, fmt.Errorf("%w: tag %#02x", ErrMalformedPacket, packet[0])
	}
	c := binary.BigEndian.Uint64(packet[1:packetHeaderLen])
	if c >= MaxCounter {
		return 0, fmt.Errorf("%w: counter %d", ErrMalformedPacket, c)
	}
	return c, nil
}

// openSealed authenticates and decrypts a packet with aead, an AEAD of cipher c,
// appending the payload to dst. To decrypt in place pass
// packet[packetHeaderLen:packetHeaderLen] as dst. The nonce goes in packet's spare
// capacity if it has nonceSize bytes of it, else in new memory.
func openSealed(dst []byte, c Cipher, aead cipher.AEAD, packet []byte) (uint64, []byte, error) {
	ctr, err := parsePacketHeader(packet)
	if err != nil {
		return 0, nil, err
	}
	var nonce []byte
	if n := len(packet); cap(packet)-n >= nonceSize {
		nonce = packet[n : n+nonceSize]
	} else {
		nonce = make([]byte, nonceSize)
	}
	nonce = putNonce(nonce, c, ctr)
	out, err := aead.Open(dst, nonce, packet[packetHeaderLen:], packet[:packetHeaderLen])
	if err != nil {
		return 0, nil, fmt.Errorf("%w: counter %d", ErrAuthFailed, ctr)
	}
	return ctr, out, nil
}
