package secure

import (
	"bytes"
	"crypto/cipher"
	"encoding/hex"
	"errors"
	"testing"
)

var bothCiphers = []Cipher{CipherChaCha20Poly1305, CipherAES256GCM}

func testKey(seed byte) [KeySize]byte {
	var k [KeySize]byte
	for i := range k {
		k[i] = seed + byte(i)
	}
	return k
}

func testAEAD(t testing.TB, c Cipher, seed byte) cipher.AEAD {
	t.Helper()
	k := testKey(seed)
	return newAEAD(c, &k)
}

// TestPacketGolden pins the sealed datagram layout: tag, big-endian counter,
// ciphertext, tag; key 00..1f, counter 0x0102030405060708, payload "hello", for both
// ciphers. The expected bytes were checked independently with Python's cryptography
// package (ChaCha20Poly1305 with nonce = 4 zero bytes + counter little-endian, AESGCM
// with nonce = 4 zero bytes + counter big-endian; AAD = header).
func TestPacketGolden(t *testing.T) {
	for _, tc := range []struct {
		c    Cipher
		want string
	}{
		{CipherChaCha20Poly1305, "e5" + "0102030405060708" + // tag, counter
			"982cc188c4" + // ChaCha20("hello")
			"ec097b04f3649420375bc9b7f47bfa95"}, // Poly1305 tag over header and ciphertext
		{CipherAES256GCM, "e5" + "0102030405060708" +
			"6c340962b2" + // AES-256-CTR("hello")
			"988247b78e2b9bd211fd03049350ff19"}, // GHASH tag
	} {
		t.Run(tc.c.String(), func(t *testing.T) {
			a := testAEAD(t, tc.c, 0)
			got := appendSealed(nil, tc.c, a, 0x0102030405060708, []byte("hello"))
			if hex.EncodeToString(got) != tc.want {
				t.Fatalf("sealed packet\n got %x\nwant %s", got, tc.want)
			}
			if len(got) != 5+PacketOverhead {
				t.Fatalf("overhead %d", len(got)-5)
			}
			c, p, err := openSealed(nil, tc.c, a, got)
			if err != nil || c != 0x0102030405060708 || string(p) != "hello" {
				t.Fatalf("open: %d %q %v", c, p, err)
			}
		})
	}
}

func TestPacketRejects(t *testing.T) {
	for _, c := range bothCiphers {
		t.Run(c.String(), func(t *testing.T) { testPacketRejects(t, c) })
	}
}

func testPacketRejects(t *testing.T, cc Cipher) {
	a, other := testAEAD(t, cc, 0), testAEAD(t, cc, 1)
	pkt := appendSealed(nil, cc, a, 7, []byte("payload"))

	for i := range pkt {
		bad := bytes.Clone(pkt)
		bad[i] ^= 0x40
		if _, _, err := openSealed(nil, cc, a, bad); err == nil {
			t.Fatalf("byte %d flipped: accepted", i)
		}
	}
	if _, _, err := openSealed(nil, cc, other, pkt); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("wrong key: %v", err)
	}
	if _, _, err := openSealed(nil, 1-cc, testAEAD(t, 1-cc, 0), pkt); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("same key, other cipher: %v", err)
	}
	if _, _, err := openSealed(nil, cc, a, pkt[:PacketOverhead-1]); !errors.Is(err, ErrMalformedPacket) {
		t.Fatalf("short: %v", err)
	}
	big := appendSealed(nil, cc, a, MaxCounter, nil)
	if _, _, err := openSealed(nil, cc, a, big); !errors.Is(err, ErrMalformedPacket) {
		t.Fatalf("counter at MaxCounter: %v", err)
	}
	// Empty payload (keepalive) round-trips.
	ka := appendSealed(nil, cc, a, 9, nil)
	if c, p, err := openSealed(nil, cc, a, ka); err != nil || c != 9 || len(p) != 0 {
		t.Fatalf("keepalive: %d %v %v", c, p, err)
	}
	// In-place open.
	c, p, err := openSealed(pkt[packetHeaderLen:packetHeaderLen], cc, a, pkt)
	if err != nil || c != 7 || string(p) != "payload" {
		t.Fatalf("in place: %v %q", err, p)
	}
}

// FuzzOpenSealed: arbitrary bytes never panic and never authenticate; a sealed packet of
// arbitrary payload and counter round-trips, and any single-byte change is rejected;
// under either cipher.
func FuzzOpenSealed(f *testing.F) {
	aeads := []cipher.AEAD{testAEAD(f, CipherChaCha20Poly1305, 0), testAEAD(f, CipherAES256GCM, 0)}
	f.Add(appendSealed(nil, 0, aeads[0], 1, []byte("x")), uint64(1), []byte("payload"), 3, false)
	f.Add(appendSealed(nil, 1, aeads[1], 1, []byte("x")), uint64(1<<23), []byte("payload"), 3, true)
	f.Add([]byte{0xe5}, uint64(0), []byte{}, 0, false)
	f.Fuzz(func(t *testing.T, raw []byte, counter uint64, payload []byte, flip int, aes bool) {
		cc := CipherChaCha20Poly1305
		if aes {
			cc = CipherAES256GCM
		}
		a := aeads[cc]
		if c, p, err := openSealed(nil, cc, a, raw); err == nil {
			// Only a genuinely sealed packet may open: resealing must give raw back.
			if !bytes.Equal(appendSealed(nil, cc, a, c, p), raw) {
				t.Fatalf("opened a packet that is not a sealing: %x", raw)
			}
		}
		counter %= MaxCounter
		pkt := appendSealed(nil, cc, a, counter, payload)
		c, p, err := openSealed(nil, cc, a, pkt)
		if err != nil || c != counter || !bytes.Equal(p, payload) {
			t.Fatalf("round trip: %v", err)
		}
		if flip < 0 {
			flip = -flip
		}
		pkt[flip%len(pkt)] ^= 1
		if _, _, err := openSealed(nil, cc, a, pkt); err == nil {
			t.Fatalf("flipped byte %d accepted", flip%len(pkt))
		}
	})
}

// Sealing into a buffer with room, and opening one in place, allocate nothing.
func TestPacketNoAllocs(t *testing.T) {
	for _, cc := range bothCiphers {
		a := testAEAD(t, cc, 0)
		payload := make([]byte, 1200)
		buf := make([]byte, 0, 1200+PacketOverhead+nonceSize)
		var c uint64
		allocs := testing.AllocsPerRun(100, func() {
			buf = appendSealed(buf[:0], cc, a, c, payload)
			if _, _, err := openSealed(buf[packetHeaderLen:packetHeaderLen], cc, a, buf); err != nil {
				t.Fatal(err)
			}
			c++
		})
		if allocs != 0 {
			t.Fatalf("%s: %.1f allocations per datagram", cc, allocs)
		}
	}
}

// BenchmarkSeal1200 seals a 1200-byte payload, and BenchmarkOpen1200 opens one, with
// each cipher.
func BenchmarkSeal1200(b *testing.B) {
	for _, cc := range bothCiphers {
		b.Run(cc.String(), func(b *testing.B) {
			a := testAEAD(b, cc, 0)
			payload := make([]byte, 1200)
			buf := make([]byte, 0, 1200+PacketOverhead+nonceSize)
			b.SetBytes(1200)
			var c uint64
			b.ReportAllocs()
			for b.Loop() {
				buf = appendSealed(buf[:0], cc, a, c, payload)
				c++
			}
		})
	}
}

func BenchmarkOpen1200(b *testing.B) {
	for _, cc := range bothCiphers {
		b.Run(cc.String(), func(b *testing.B) {
			a := testAEAD(b, cc, 0)
			pkt := appendSealed(nil, cc, a, 7, make([]byte, 1200))
			buf := make([]byte, 0, len(pkt))
			b.ReportAllocs()
			b.SetBytes(1200)
			for b.Loop() {
				if _, _, err := openSealed(buf[:0], cc, a, pkt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
