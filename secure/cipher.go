package secure

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"runtime"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/cpu"
)

// Cipher is the AEAD that seals a session's datagrams (packet.go), the only encryption
// the session's packets get. The handshake negotiates it (envelope.go), inside
// Noise's encrypted and authenticated payloads, so a relay can neither read nor
// downgrade the choice. The Noise handshake itself always runs ProtocolName.
type Cipher uint8

const (
	// CipherChaCha20Poly1305 is the zero value and what every peer speaks: it is always
	// offered, it is what version-1 peers (which knew no other) use, and it is the
	// choice whenever either side lacks AES instructions. Its key is the handshake's
	// key itself, for the whole session (rekey.go says why it needs no rekeying).
	CipherChaCha20Poly1305 Cipher = 0
	// CipherAES256GCM is chosen when both sides' CPUs have AES and carry-less multiply
	// instructions. Its keys change every 2^23 datagrams (rekey.go).
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

// cipherSet is a set of Ciphers, Cipher c being the bit 1<<c. It is the offer byte of
// msg1; bits of ciphers this code does not know are ignored, so a later version can
// offer more.
type cipherSet uint8

const allCiphers = cipherSet(1<<CipherChaCha20Poly1305 | 1<<CipherAES256GCM)

func setOf(cs ...Cipher) cipherSet {
	var s cipherSet
	for _, c := range cs {
		s |= 1 << c
	}
	return s
}

func (s cipherSet) has(c Cipher) bool { return c < 8 && s&(1<<c) != 0 }

// choose is the responder's pick from the initiator's offer, given what it accepts
// itself: AES-256-GCM when both have it, else ChaCha20-Poly1305. false when they share
// neither (an offer without ChaCha20-Poly1305, which this code never sends).
func (offer cipherSet) choose(local cipherSet) (Cipher, bool) {
	both := offer & local
	switch {
	case both.has(CipherAES256GCM):
		return CipherAES256GCM, true
	case both.has(CipherChaCha20Poly1305):
		return CipherChaCha20Poly1305, true
	}
	return 0, false
}

// localCiphers is what this machine offers as initiator and accepts as responder:
// ChaCha20-Poly1305 always, AES-256-GCM only with hardware support. Computed once and
// never written; tests that play a machine without AES pass their own set to
// newInitiator and readMsg1 instead.
var localCiphers = hardwareCiphers()

func hardwareCiphers() cipherSet {
	if hasAESGCMHardware() {
		return setOf(CipherChaCha20Poly1305, CipherAES256GCM)
	}
	return setOf(CipherChaCha20Poly1305)
}

// hasAESGCMHardware reports whether Go's AES-GCM runs on AES and carry-less multiply
// instructions here. Without them crypto/aes falls back to generic code: AES rounds by
// table lookups, whose cache footprint depends on key and data (not constant-time),
// and GHASH in software, several times slower than ChaCha20-Poly1305. That is why
// crypto/tls prefers ChaCha20 on such CPUs. The conditions are the ones Go's GCM
// assembly needs (crypto/internal/fips140/aes/gcm) and crypto/tls checks
// (hasAESGCMHardwareSupport). 386 has no GCM assembly however capable the CPU, so only
// amd64 counts on x86. ppc64 keeps ChaCha20-Poly1305: crypto/tls counts every ppc64
// CPU as capable, but we have measured none.
func hasAESGCMHardware() bool {
	switch runtime.GOARCH {
	case "amd64":
		return cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ && cpu.X86.HasSSE41 && cpu.X86.HasSSSE3
	case "arm64":
		return cpu.ARM64.HasAES && cpu.ARM64.HasPMULL
	case "s390x":
		return cpu.S390X.HasAES && cpu.S390X.HasAESCTR && cpu.S390X.HasGHASH
	}
	return false
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
