package secure

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"
)

type keyPair struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newKeyPair(t testing.TB) keyPair {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{pub, priv}
}

var testNow = time.UnixMilli(1_800_000_000_123)

// handshake runs a full handshake and returns both sides' keys.
func handshake(t testing.TB, a, b keyPair, prologue []byte) (Keys, Keys) {
	t.Helper()
	ini, err := NewInitiator(a.priv, b.pub, prologue)
	if err != nil {
		t.Fatal(err)
	}
	m1, err := ini.WriteMsg1(testNow, []byte("offer"))
	if err != nil {
		t.Fatal(err)
	}
	resp, remote, p1, err := ReadMsg1(b.priv, prologue, m1)
	if err != nil {
		t.Fatal(err)
	}
	if !remote.Equal(a.pub) || string(p1) != "offer" {
		t.Fatalf("responder got remote %x payload %q", remote, p1)
	}
	m2, rk, err := resp.WriteMsg2([]byte("answer"))
	if err != nil {
		t.Fatal(err)
	}
	p2, ik, err := ini.ReadMsg2(m2)
	if err != nil {
		t.Fatal(err)
	}
	if string(p2) != "answer" {
		t.Fatalf("initiator got payload %q", p2)
	}
	return ik, rk
}

func TestHandshakeKeysBothWays(t *testing.T) {
	a, b := newKeyPair(t), newKeyPair(t)
	ik, rk := handshake(t, a, b, []byte("topic"))

	if !ik.Initiator || rk.Initiator {
		t.Fatal("Initiator flags wrong")
	}
	if !ik.Remote.Equal(b.pub) || !rk.Remote.Equal(a.pub) {
		t.Fatal("remote identities wrong")
	}
	if ik.Hash != rk.Hash {
		t.Fatal("handshake hashes differ")
	}
	if ik.Send == ik.Recv {
		t.Fatal("send and receive keys are equal")
	}
	// Initiator send keys must decrypt with responder receive keys, and the reverse. This
	// is the ordering nebula's comments warn about (flynn/noise returns cs1, cs2 in
	// protocol order, not send/recv order).
	roundTrip := func(name string, send, recv [32]byte) {
		s, _ := chacha20poly1305.New(send[:])
		r, _ := chacha20poly1305.New(recv[:])
		nonce := make([]byte, chacha20poly1305.NonceSize)
		ct := s.Seal(nil, nonce, []byte(name), nil)
		pt, err := r.Open(nil, nonce, ct, nil)
		if err != nil || string(pt) != name {
			t.Fatalf("%s: open = %q, %v", name, pt, err)
		}
	}
	roundTrip("initiator->responder", ik.Send, rk.Recv)
	roundTrip("responder->initiator", rk.Send, ik.Recv)
}

func TestHandshakeWrongKeyFails(t *testing.T) {
	a, b, c := newKeyPair(t), newKeyPair(t), newKeyPair(t)

	// a dials b, but c (someone else, e.g. a relay that swapped the record) answers.
	ini, _ := NewInitiator(a.priv, b.pub, nil)
	m1, _ := ini.WriteMsg1(testNow, nil)
	if _, _, _, err := ReadMsg1(c.priv, nil, m1); !errors.Is(err, ErrHandshake) {
		t.Fatalf("c read a msg1 meant for b: %v", err)
	}

	// c completes a genuine handshake with a different initiator and replays its msg2 to
	// a: a must refuse it, because it was not made by b over a's msg1.
	ini2, _ := NewInitiator(newKeyPair(t).priv, c.pub, nil)
	m1c, _ := ini2.WriteMsg1(testNow, nil)
	resp, _, _, err := ReadMsg1(c.priv, nil, m1c)
	if err != nil {
		t.Fatal(err)
	}
	m2c, _, _ := resp.WriteMsg2(nil)
	if _, _, err := ini.ReadMsg2(m2c); !errors.Is(err, ErrHandshake) {
		t.Fatalf("a accepted msg2 from c: %v", err)
	}
}

func TestHandshakePrologueMismatch(t *testing.T) {
	a, b := newKeyPair(t), newKeyPair(t)
	ini, _ := NewInitiator(a.priv, b.pub, []byte("one"))
	m1, _ := ini.WriteMsg1(testNow, nil)
	if _, _, _, err := ReadMsg1(b.priv, []byte("two"), m1); !errors.Is(err, ErrHandshake) {
		t.Fatalf("prologue mismatch accepted: %v", err)
	}
}

// A relay that rewrites any byte of msg1 or msg2 makes the handshake fail; a rewritten
// msg2 is not fatal to the initiator, which still completes with the genuine one.
func TestHandshakeMITMRewrite(t *testing.T) {
	a, b := newKeyPair(t), newKeyPair(t)
	ini, _ := NewInitiator(a.priv, b.pub, nil)
	m1, _ := ini.WriteMsg1(testNow, []byte("ice-ufrag:pwd:candidates"))

	for i := range m1 {
		bad := bytes.Clone(m1)
		bad[i] ^= 0x01
		if _, _, _, err := ReadMsg1(b.priv, nil, bad); err == nil {
			t.Fatalf("msg1 with byte %d flipped was accepted", i)
		}
	}
	if _, _, _, err := ReadMsg1(b.priv, nil, m1[:len(m1)-1]); err == nil {
		t.Fatal("truncated msg1 accepted")
	}
	if _, _, _, err := ReadMsg1(b.priv, nil, append(bytes.Clone(m1), 0)); err == nil {
		t.Fatal("extended msg1 accepted")
	}

	resp, _, _, err := ReadMsg1(b.priv, nil, m1)
	if err != nil {
		t.Fatal(err)
	}
	m2, rk, err := resp.WriteMsg2([]byte("answer"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m2 {
		bad := bytes.Clone(m2)
		bad[i] ^= 0x80
		if _, _, err := ini.ReadMsg2(bad); !errors.Is(err, ErrHandshake) {
			t.Fatalf("msg2 with byte %d flipped: %v", i, err)
		}
	}
	// A low-order ephemeral makes flynn/noise fail inside DH without rolling back; the
	// initiator must survive that too.
	lowOrder := bytes.Clone(m2)
	clear(lowOrder[:32])
	if _, _, err := ini.ReadMsg2(lowOrder); !errors.Is(err, ErrHandshake) {
		t.Fatalf("low-order msg2: %v", err)
	}
	if _, _, err := ini.ReadMsg2(m2[:20]); !errors.Is(err, ErrHandshake) {
		t.Fatalf("short msg2: %v", err)
	}
	p2, ik, err := ini.ReadMsg2(m2)
	if err != nil {
		t.Fatalf("genuine msg2 after forged ones: %v", err)
	}
	if string(p2) != "answer" || ik.Send != rk.Recv || ik.Recv != rk.Send {
		t.Fatal("keys or payload wrong after recovery")
	}
	if _, _, err := ini.ReadMsg2(m2); !errors.Is(err, ErrHandshakeState) {
		t.Fatalf("ReadMsg2 after done: %v", err)
	}
}

// rawMsg1 writes a msg1 with an arbitrary envelope, as a malicious initiator could.
func rawMsg1(t *testing.T, from keyPair, to ed25519.PublicKey, envelope []byte) []byte {
	t.Helper()
	static, err := staticKeypair(from.priv)
	if err != nil {
		t.Fatal(err)
	}
	toX, err := X25519PublicKey(to)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: cipherSuite, Pattern: noise.HandshakeIK, Initiator: true,
		Prologue: fullPrologue(nil), StaticKeypair: static, PeerStatic: toX,
	})
	if err != nil {
		t.Fatal(err)
	}
	msg, _, _, err := hs.WriteMessage(nil, envelope)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestReadMsg1IdentityMismatch(t *testing.T) {
	a, b, victim := newKeyPair(t), newKeyPair(t), newKeyPair(t)
	// a authenticates with its own static key but claims to be victim.
	env := appendMsg1Envelope(nil, msg1Envelope{Identity: victim.pub, Timestamp: testNow, Offer: allCiphers})
	if _, _, _, err := ReadMsg1(b.priv, nil, rawMsg1(t, a, b.pub, env)); !errors.Is(err, ErrIdentityMismatch) {
		t.Fatalf("claimed identity accepted: %v", err)
	}
	// Claiming its own identity works.
	env = appendMsg1Envelope(nil, msg1Envelope{Identity: a.pub, Timestamp: testNow, Offer: allCiphers})
	r, remote, _, err := ReadMsg1(b.priv, nil, rawMsg1(t, a, b.pub, env))
	if err != nil || !remote.Equal(a.pub) || !r.Timestamp().Equal(testNow) {
		t.Fatalf("own identity: %v %x %v", err, remote, r.Timestamp())
	}
}

func TestHandshakeUnknownVersion(t *testing.T) {
	a, b := newKeyPair(t), newKeyPair(t)
	for _, v := range []byte{0, 1, 2, 4, 0xff} {
		env := appendMsg1Envelope(nil, msg1Envelope{Identity: a.pub, Timestamp: testNow, Offer: allCiphers})
		env[0] = v
		if _, _, _, err := ReadMsg1(b.priv, nil, rawMsg1(t, a, b.pub, env)); !errors.Is(err, ErrVersion) {
			t.Fatalf("msg1 version %d: %v", v, err)
		}
	}

	// msg2 with an unknown version authenticates, so it is fatal for the initiator.
	ini, _ := NewInitiator(a.priv, b.pub, nil)
	m1, _ := ini.WriteMsg1(testNow, nil)
	resp, _, _, err := ReadMsg1(b.priv, nil, m1)
	if err != nil {
		t.Fatal(err)
	}
	m2, _, _, err := resp.hs.WriteMessage(nil, []byte{7, 'x'})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ini.ReadMsg2(m2); !errors.Is(err, ErrVersion) {
		t.Fatalf("msg2 version 7: %v", err)
	}
	if _, _, err := ini.ReadMsg2(m2); !errors.Is(err, ErrHandshakeState) {
		t.Fatalf("after fatal error: %v", err)
	}
}

func TestHandshakeStateAndLimits(t *testing.T) {
	a, b := newKeyPair(t), newKeyPair(t)
	ini, err := NewInitiator(a.priv, b.pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ini.ReadMsg2(make([]byte, 64)); !errors.Is(err, ErrHandshakeState) {
		t.Fatalf("ReadMsg2 before WriteMsg1: %v", err)
	}
	if _, err := ini.WriteMsg1(testNow, make([]byte, MaxHandshakePayload+1)); !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("oversize payload: %v", err)
	}
	m1, err := ini.WriteMsg1(testNow, make([]byte, MaxHandshakePayload))
	if err != nil {
		t.Fatal(err)
	}
	if len(m1) != maxMsg1Len {
		t.Fatalf("max msg1 is %d bytes, constant says %d", len(m1), maxMsg1Len)
	}
	if _, err := ini.WriteMsg1(testNow, nil); !errors.Is(err, ErrHandshakeState) {
		t.Fatalf("WriteMsg1 twice: %v", err)
	}
	resp, _, p, err := ReadMsg1(b.priv, nil, m1)
	if err != nil || len(p) != MaxHandshakePayload {
		t.Fatalf("max payload: %v %d", err, len(p))
	}
	if _, _, err := resp.WriteMsg2(make([]byte, MaxHandshakePayload+1)); !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("oversize msg2 payload: %v", err)
	}
	m2, _, err := resp.WriteMsg2(make([]byte, MaxHandshakePayload))
	if err != nil || len(m2) != maxMsg2Len {
		t.Fatalf("max msg2: %v, %d bytes, constant %d", err, len(m2), maxMsg2Len)
	}
	if _, _, err := resp.WriteMsg2(nil); !errors.Is(err, ErrHandshakeState) {
		t.Fatalf("WriteMsg2 twice: %v", err)
	}
	if _, err := NewInitiator(a.priv, b.pub[:5], nil); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("bad remote key: %v", err)
	}
	if _, _, _, err := ReadMsg1(b.priv[:10], nil, m1); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("bad local key: %v", err)
	}
}

// Golden layout of the envelopes (the plaintexts inside Noise msg1 and msg2).
func TestEnvelopeGolden(t *testing.T) {
	id := make([]byte, 32)
	for i := range id {
		id[i] = byte(0xa0 + i%16)
	}
	const (
		identity = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafa0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
		unixMS   = "0000000102030405"
	)
	for _, tc := range []struct {
		name     string
		env      msg1Envelope
		want     string
		wantSeen cipherSet // the offer as parsed
	}{
		{"v3", msg1Envelope{Offer: allCiphers},
			"03" + identity + unixMS + "03" + "6869", allCiphers}, // version, ..., offer (ChaCha, AES), payload
		{"v3 chacha only", msg1Envelope{Offer: setOf(CipherChaCha20Poly1305)},
			"03" + identity + unixMS + "01" + "6869", setOf(CipherChaCha20Poly1305)},
	} {
		t.Run("msg1 "+tc.name, func(t *testing.T) {
			tc.env.Identity, tc.env.Timestamp, tc.env.Payload = id, time.UnixMilli(0x0102030405), []byte("hi")
			got := appendMsg1Envelope(nil, tc.env)
			if hex.EncodeToString(got) != tc.want {
				t.Fatalf("envelope\n got %x\nwant %s", got, tc.want)
			}
			env, err := parseMsg1Envelope(got)
			if err != nil || !bytes.Equal(env.Identity, id) ||
				env.Timestamp.UnixMilli() != 0x0102030405 || env.Offer != tc.wantSeen || string(env.Payload) != "hi" {
				t.Fatalf("parse: %+v %v", env, err)
			}
		})
	}
	for _, tc := range []struct {
		env  msg2Envelope
		want string
	}{
		{msg2Envelope{Cipher: CipherAES256GCM, Payload: []byte("hi")}, "03" + "01" + "6869"},
		{msg2Envelope{Cipher: CipherChaCha20Poly1305, Payload: []byte("hi")}, "03" + "00" + "6869"},
	} {
		got := appendMsg2Envelope(nil, tc.env)
		if hex.EncodeToString(got) != tc.want {
			t.Fatalf("msg2 envelope %+v: %x, want %s", tc.env, got, tc.want)
		}
		env, err := parseMsg2Envelope(got)
		if err != nil || env.Cipher != tc.env.Cipher || string(env.Payload) != "hi" {
			t.Fatalf("parse msg2 %x: %+v %v", got, env, err)
		}
	}
}

func FuzzParseMsg1Envelope(f *testing.F) {
	f.Add(appendMsg1Envelope(nil, msg1Envelope{Identity: make([]byte, 32), Timestamp: testNow, Offer: allCiphers, Payload: []byte("x")}))
	f.Add([]byte{1})
	f.Add([]byte{2, 0, 0})
	f.Add([]byte{3, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := parseMsg1Envelope(b)
		if err != nil {
			return
		}
		// Round trip: re-encoding gives the same bytes.
		if again := appendMsg1Envelope(nil, env); !bytes.Equal(again, b) {
			t.Fatalf("round trip %x -> %x", b, again)
		}
	})
}

func FuzzParseMsg2Envelope(f *testing.F) {
	f.Add(appendMsg2Envelope(nil, msg2Envelope{Cipher: CipherAES256GCM, Payload: []byte("x")}))
	f.Add([]byte{})
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := parseMsg2Envelope(b)
		if err != nil {
			return
		}
		if again := appendMsg2Envelope(nil, e); !bytes.Equal(again, b) {
			t.Fatalf("round trip %x -> %x", b, again)
		}
	})
}

var fuzzKeys = func() [2]keyPair {
	var k [2]keyPair
	for i := range k {
		seed := bytes.Repeat([]byte{byte(i + 1)}, ed25519.SeedSize)
		priv := ed25519.NewKeyFromSeed(seed)
		k[i] = keyPair{priv.Public().(ed25519.PublicKey), priv}
	}
	return k
}()

// FuzzReadMsg1: garbage never panics and never authenticates.
func FuzzReadMsg1(f *testing.F) {
	a, b := fuzzKeys[0], fuzzKeys[1]
	ini, _ := NewInitiator(a.priv, b.pub, nil)
	m1, _ := ini.WriteMsg1(testNow, []byte("seed"))
	f.Add(m1)
	f.Add(m1[:minMsg1Len])
	f.Fuzz(func(t *testing.T, msg []byte) {
		_, remote, _, err := ReadMsg1(b.priv, nil, msg)
		if err == nil && !remote.Equal(a.pub) {
			t.Fatalf("authenticated a forged msg1 from %x", remote)
		}
	})
}

// FuzzReadMsg2: a garbage msg2 never panics, and the genuine msg2 still completes the
// handshake afterwards (failed reads are not fatal).
func FuzzReadMsg2(f *testing.F) {
	a, b := fuzzKeys[0], fuzzKeys[1]
	f.Add(make([]byte, minMsg2Len))
	f.Add(make([]byte, 200))
	f.Fuzz(func(t *testing.T, garbage []byte) {
		ini, _ := NewInitiator(a.priv, b.pub, nil)
		m1, _ := ini.WriteMsg1(testNow, nil)
		resp, _, _, err := ReadMsg1(b.priv, nil, m1)
		if err != nil {
			t.Fatal(err)
		}
		m2, rk, _ := resp.WriteMsg2([]byte("ok"))
		if bytes.Equal(garbage, m2) {
			return
		}
		if _, _, err := ini.ReadMsg2(garbage); err == nil {
			t.Fatal("garbage msg2 accepted")
		}
		p, ik, err := ini.ReadMsg2(m2)
		if err != nil || string(p) != "ok" || ik.Send != rk.Recv {
			t.Fatalf("genuine msg2 after garbage: %v", err)
		}
	})
}

func BenchmarkHandshake(b *testing.B) {
	x, y := newKeyPair(b), newKeyPair(b)
	payload := make([]byte, 300) // about what ICE credentials and a few candidates take
	b.ReportAllocs()
	for b.Loop() {
		ini, err := NewInitiator(x.priv, y.pub, nil)
		if err != nil {
			b.Fatal(err)
		}
		m1, _ := ini.WriteMsg1(testNow, payload)
		resp, _, _, err := ReadMsg1(y.priv, nil, m1)
		if err != nil {
			b.Fatal(err)
		}
		m2, _, _ := resp.WriteMsg2(payload)
		if _, _, err := ini.ReadMsg2(m2); err != nil {
			b.Fatal(err)
		}
	}
}
