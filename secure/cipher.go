package secure

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// Cipher is the AEAD that seals a session's datagrams: the outer layer of packet.go,
// around the one QUIC runs inside. The Noise handshake itself always runs
// ProtocolName.
type Cipher uint8

const (
	// CipherChaCha20Poly1305 is the zero value and what every peer speaks. Its key is
	// the handshake's key itself, for the whole session (rekey.go says why it needs no
	// rekeying).
	CipherChaCha20Poly1305 Cipher = 0
	// CipherAES256GCM is the faster choice on CPUs with AES and carry-less multiply
	// instructions. Its keys change every 2^23 datagrams (rekey.go). Nothing chooses
	// it yet.
	CipherAES256GCM Cipher = 1
)

// String names the cipher as RFC 8439 and NIST SP 800-38D do.
func (c Cipher) String() string {
	switch c {
	case CipherChaCha20Poly1305:
		return "ChaCha20-Poly1305"
	case CipherAES256GCM:
		return "AES-256-GCM"
	}
	return fmt.Sprintf("Cipher(%d)", uint8(c))
}

// newAEAD returns c keyed with key. Both ciphers take 32-byte keys and 12-byte nonces
// and add a 16-byte tag, so the packet layout is the same for both.
func newAEAD(c Cipher, key *[KeySize]byte) cipher.AEAD {
	var (
		a   cipher.AEAD
		err error
	)
	switch c {
	case CipherAES256GCM:
		var b cipher.Block
		if b, err = aes.NewCipher(key[:]); err == nil {
			a, err = cipher.NewGCM(b)
		}
	default:
		a, err = chacha20poly1305.New(key[:])
	}
	if err != nil {
		panic(err) // only a wrong key length fails, which the array type rules out
	}
	return a
}
