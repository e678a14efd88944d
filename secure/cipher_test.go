package secure

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

var (
	chachaOnly = setOf(CipherChaCha20Poly1305) // a machine without AES instructions
	withAES    = allCiphers                    // a machine with them
)

// handshakeWith runs a full handshake between an initiator offering offer and a
// responder accepting accept, as two machines with those CPUs would.
func handshakeWith(t testing.TB, offer, accept cipherSet) (Keys, Keys) {
	t.Helper()
	a, b := newKeyPair(t), newKeyPair(t)
	ini, err := newInitiator(a.priv, b.pub, nil, rand.Reader, offer)
	if err != nil {
		t.Fatal(err)
	}
	m1, err := ini.WriteMsg1(testNow, []byte("offer"))
	if err != nil {
		t.Fatal(err)
	}
	resp, _, _, err := readMsg1(b.priv, nil, m1, accept)
	if err != nil {
		t.Fatal(err)
	}
	m2, rk, err := resp.WriteMsg2([]byte("answer"))
	if err != nil {
		t.Fatal(err)
	}
	_, ik, err := ini.ReadMsg2(m2)
	if err != nil {
		t.Fatal(err)
	}
	return ik, rk
}

// The grid of the two sides' CPUs: AES-256-GCM only when both have AES instructions,
// and both sides always agree.
func TestCipherNegotiation(t *testing.T) {
	for _, tc := range []struct {
		name          string
		offer, accept cipherSet
		want          Cipher
	}{
		{"both with AES: AES-256-GCM", withAES, withAES, CipherAES256GCM},
		{"initiator without AES: ChaCha20-Poly1305", chachaOnly, withAES, CipherChaCha20Poly1305},
		{"responder without AES: ChaCha20-Poly1305", withAES, chachaOnly, CipherChaCha20Poly1305},
		{"neither with AES: ChaCha20-Poly1305", chachaOnly, chachaOnly, CipherChaCha20Poly1305},
		// A later version may offer ciphers this one does not know; they are ignored.
		{"unknown offer bits: ignored", withAES | 0xf0, withAES, CipherAES256GCM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ik, rk := handshakeWith(t, tc.offer, tc.accept)
			if ik.Cipher != tc.want || rk.Cipher != tc.want {
				t.Fatalf("initiator %s, responder %s; want %s", ik.Cipher, rk.Cipher, tc.want)
			}
			datagramsBothWays(t, ik, rk)
		})
	}
}

// The initiator always offers ChaCha20-Poly1305, whatever it is told.
func TestCipherChaChaAlwaysOffered(t *testing.T) {
	a, b := newKeyPair(t), newKeyPair(t)
	ini, err := newInitiator(a.priv, b.pub, nil, rand.Reader, setOf(CipherAES256GCM))
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := ini.WriteMsg1(testNow, nil)
	resp, _, _, err := readMsg1(b.priv, nil, m1, chachaOnly)
	if err != nil {
		t.Fatalf("a responder without AES refused: %v", err)
	}
	if resp.cipher != CipherChaCha20Poly1305 {
		t.Fatalf("chose %s", resp.cipher)
	}
}

// An offer without a cipher the responder speaks (only a broken or future initiator
// sends one) is refused with ErrCipher.
func TestCipherNoCommonCipher(t *testing.T) {
	a, b := newKeyPair(t), newKeyPair(t)
	for _, offer := range []cipherSet{0, 0x80, setOf(CipherAES256GCM)} {
		env := appendMsg1Envelope(nil, msg1Envelope{Identity: a.pub, Timestamp: testNow, Offer: offer})
		if _, _, _, err := readMsg1(b.priv, nil, rawMsg1(t, a, b.pub, env), chachaOnly); !errors.Is(err, ErrCipher) {
			t.Fatalf("offer %#02x: %v", byte(offer), err)
		}
	}
}

// An authenticated msg2 that names a cipher the initiator did not offer, an unknown
// cipher, or answers in an older version, is fatal. (A relay cannot produce one: Noise
// authenticates msg2's payload, and TestHandshakeMITMRewrite flips every byte.)
func TestCipherMsg2Violations(t *testing.T) {
	for _, tc := range []struct {
		name  string
		offer cipherSet
		plain []byte // msg2's envelope
		want  error
	}{
		{"AES not offered", chachaOnly, []byte{envelopeVersion, byte(CipherAES256GCM), 'x'}, ErrCipher},
		{"unknown cipher", withAES, []byte{envelopeVersion, 7, 'x'}, ErrCipher},
		{"version 2 answer", withAES, []byte{2, byte(CipherAES256GCM), 'x'}, ErrVersion},
		{"version 1 answer", withAES, []byte{1, 'x'}, ErrVersion},
		{"version 3 without cipher", withAES, []byte{envelopeVersion}, ErrHandshake},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newKeyPair(t), newKeyPair(t)
			ini, _ := newInitiator(a.priv, b.pub, nil, rand.Reader, tc.offer)
			m1, _ := ini.WriteMsg1(testNow, nil)
			resp, _, _, err := readMsg1(b.priv, nil, m1, withAES)
			if err != nil {
				t.Fatal(err)
			}
			m2, _, _, err := resp.hs.WriteMessage(nil, tc.plain)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := ini.ReadMsg2(m2); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if _, _, err := ini.ReadMsg2(m2); !errors.Is(err, ErrHandshakeState) {
				t.Fatalf("after the fatal error: %v", err)
			}
		})
	}
}

// Initiators of envelope versions 1 and 2 ran their streams on QUIC, which this
// version does not speak: their msg1 is refused with ErrVersion, naming the reason,
// before the responder spends anything on them.
func TestOlderEnvelopeVersionsRefused(t *testing.T) {
	a, b := newKeyPair(t), newKeyPair(t)
	for _, env := range [][]byte{
		// version 1: version, identity, timestamp, payload
		binary.BigEndian.AppendUint64(append([]byte{1}, a.pub...), uint64(testNow.UnixMilli())),
		// version 2: version 3's layout
		append(binary.BigEndian.AppendUint64(append([]byte{2}, a.pub...), uint64(testNow.UnixMilli())), byte(allCiphers)),
	} {
		_, _, _, err := readMsg1(b.priv, nil, rawMsg1(t, a, b.pub, env), withAES)
		if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "older swarmdb") {
			t.Fatalf("version %d msg1: %v", env[0], err)
		}
	}
}

// The default set: ChaCha20-Poly1305 always; AES-256-GCM where Go's AES-GCM runs on
// AES and carry-less multiply instructions.
func TestCipherLocalSet(t *testing.T) {
	if !localCiphers.has(CipherChaCha20Poly1305) {
		t.Fatal("ChaCha20-Poly1305 missing")
	}
	if localCiphers.has(CipherAES256GCM) != hasAESGCMHardware() {
		t.Fatal("AES-256-GCM offered without hardware support, or the reverse")
	}
	t.Logf("%s: AES-256-GCM offered: %v", runtime.GOARCH, localCiphers.has(CipherAES256GCM))
	if got := fmt.Sprint(CipherChaCha20Poly1305, " ", CipherAES256GCM, " ", Cipher(9)); got != "ChaCha20-Poly1305 AES-256-GCM Cipher(9)" {
		t.Fatalf("String: %s", got)
	}
}
