package secure

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"
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
		env := appendMsg1Envelope(nil, msg1Envelope{Version: envelopeVersion, Identity: a.pub, Timestamp: testNow, Offer: offer})
		if _, _, _, err := readMsg1(b.priv, nil, rawMsg1(t, a, b.pub, env), chachaOnly); !errors.Is(err, ErrCipher) {
			t.Fatalf("offer %#02x: %v", byte(offer), err)
		}
	}
}

// An authenticated msg2 that names a cipher the initiator did not offer, an unknown
// cipher, or answers in version 1, is fatal. (A relay cannot produce one: Noise
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
		{"version 1 answer", withAES, []byte{envelopeVersion1, 'x'}, ErrVersion},
		{"version 2 without cipher", withAES, []byte{envelopeVersion}, ErrHandshake},
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

// A version-1 initiator (before cipher negotiation) is still served: it gets a
// version-1 msg2 and ChaCha20-Poly1305 under the handshake keys, exactly the packets
// it sealed and opened before, even where an AES-256-GCM session would have changed
// keys.
func TestCipherVersion1PeerGetsChaCha(t *testing.T) {
	a, b := newKeyPair(t), newKeyPair(t)
	// The old initiator, written against flynn/noise as the old code was.
	static, err := staticKeypair(a.priv)
	if err != nil {
		t.Fatal(err)
	}
	bX, _ := X25519PublicKey(b.pub)
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: cipherSuite, Pattern: noise.HandshakeIK, Initiator: true,
		Prologue: fullPrologue(nil), StaticKeypair: static, PeerStatic: bX,
	})
	if err != nil {
		t.Fatal(err)
	}
	env := binary.BigEndian.AppendUint64(append([]byte{1}, a.pub...), uint64(testNow.UnixMilli()))
	m1, _, _, err := hs.WriteMessage(nil, append(env, "old offer"...))
	if err != nil {
		t.Fatal(err)
	}

	resp, remote, p1, err := readMsg1(b.priv, nil, m1, withAES)
	if err != nil || !remote.Equal(a.pub) || string(p1) != "old offer" {
		t.Fatalf("version-1 msg1: %v %q", err, p1)
	}
	m2, rk, err := resp.WriteMsg2([]byte("answer"))
	if err != nil {
		t.Fatal(err)
	}
	if rk.Cipher != CipherChaCha20Poly1305 {
		t.Fatalf("responder chose %s for a version-1 peer", rk.Cipher)
	}
	plain, cs1, cs2, err := hs.ReadMessage(nil, m2)
	if err != nil || cs1 == nil || cs2 == nil {
		t.Fatalf("old initiator reads msg2: %v", err)
	}
	if want := append([]byte{1}, "answer"...); !bytes.Equal(plain, want) {
		t.Fatalf("msg2 envelope %x, want the version-1 %x", plain, want)
	}
	oldSend, oldRecv := cs1.UnsafeKey(), cs2.UnsafeKey()
	if oldSend != rk.Recv || oldRecv != rk.Send {
		t.Fatal("keys differ")
	}

	// The old packet format, written out here rather than taken from packet.go.
	oldSeal := func(key [32]byte, ctr uint64, p []byte) []byte {
		aead, _ := chacha20poly1305.New(key[:])
		hdr := binary.BigEndian.AppendUint64([]byte{PacketTag}, ctr)
		nonce := binary.LittleEndian.AppendUint64(make([]byte, 4), ctr)
		return aead.Seal(hdr, nonce, p, hdr)
	}
	oldOpen := func(key [32]byte, pkt []byte) ([]byte, error) {
		aead, _ := chacha20poly1305.New(key[:])
		nonce := binary.LittleEndian.AppendUint64(make([]byte, 4), binary.BigEndian.Uint64(pkt[1:9]))
		return aead.Open(nil, nonce, pkt[9:], pkt[:9])
	}
	pa, pb := newPipe(pipeOptions{})
	defer pa.Close()
	c := NewDatagramConn(pb, rk, DatagramConfig{})
	defer c.Close()
	for _, ctr := range []uint64{0, 1, 1<<aesEpochBits + 5} { // no rekeying at 2^23
		c.sendCounter.Store(ctr)
		if _, err := c.Write([]byte("to old")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		n, err := pa.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if p, err := oldOpen(oldRecv, buf[:n]); err != nil || string(p) != "to old" {
			t.Fatalf("counter %d: the old peer opens %q, %v", ctr, p, err)
		}
		pa.Write(oldSeal(oldSend, ctr, []byte("from old")))
		if got, err := readWithin(t, c, 5*time.Second); err != nil || string(got) != "from old" {
			t.Fatalf("counter %d: read %q, %v", ctr, got, err)
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
