package secure

import (
	"bytes"
	"crypto/cipher"
	"encoding/hex"
	"errors"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

func testAEAD(t testing.TB, seed byte) cipher.AEAD {
	t.Helper()
	var k [32]byte
	for i := range k {
		k[i] = seed + byte(i)
	}
	a, err := chacha20poly1305.New(k[:])
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestPacketGolden pins the sealed datagram layout: tag, big-endian counter, ChaCha20
// ciphertext, Poly1305 tag; key 00..1f, counter 0x0102030405060708, payload "hello".
// The expected bytes were checked independently with Python's cryptography package
// (ChaCha20Poly1305, nonce = 4 zero bytes + counter little-endian, AAD = header).
func TestPacketGolden(t *testing.T) {
	a := testAEAD(t, 0)
	got := appendSealed(nil, a, 0x0102030405060708, []byte("hello"))
	const want = "e5" + "0102030405060708" + // tag, counter
		"982cc188c4" + // ChaCha20("hello")
		"ec097b04f3649420375bc9b7f47bfa95" // Poly1305 tag over header and ciphertext
	if hex.EncodeToString(got) != want {
		t.Fatalf("sealed packet\n got %x\nwant %s", got, want)
	}
	if len(got) != 5+PacketOverhead {
		t.Fatalf("overhead %d", len(got)-5)
	}
	c, p, err := openSealed(nil, a, got)
	if err != nil || c != 0x0102030405060708 || string(p) != "hello" {
		t.Fatalf("open: %d %q %v", c, p, err)
	}
}

func TestPacketRejects(t *testing.T) {
	a, other := testAEAD(t, 0), testAEAD(t, 1)
	pkt := appendSealed(nil, a, 7, []byte("payload"))

	for i := range pkt {
		bad := bytes.Clone(pkt)
		bad[i] ^= 0x40
		if _, _, err := openSealed(nil, a, bad); err == nil {
			t.Fatalf("byte %d flipped: accepted", i)
		}
	}
	if _, _, err := openSealed(nil, other, pkt); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("wrong key: %v", err)
	}
	if _, _, err := openSealed(nil, a, pkt[:PacketOverhead-1]); !errors.Is(err, ErrMalformedPacket) {
		t.Fatalf("short: %v", err)
	}
	big := appendSealed(nil, a, MaxCounter, nil)
	if _, _, err := openSealed(nil, a, big); !errors.Is(err, ErrMalformedPacket) {
		t.Fatalf("counter at MaxCounter: %v", err)
	}
	// Empty payload (keepalive) round-trips.
	ka := appendSealed(nil, a, 9, nil)
	if c, p, err := openSealed(nil, a, ka); err != nil || c != 9 || len(p) != 0 {
		t.Fatalf("keepalive: %d %v %v", c, p, err)
	}
	// In-place open.
	c, p, err := openSealed(pkt[packetHeaderLen:packetHeaderLen], a, pkt)
	if err != nil || c != 7 || string(p) != "payload" {
		t.Fatalf("in place: %v %q", err, p)
	}
}

// FuzzOpenSealed: arbitrary bytes never panic and never authenticate; a sealed packet of
// arbitrary payload and counter round-trips, and any single-byte change is rejected.
func FuzzOpenSealed(f *testing.F) {
	a := testAEAD(f, 0)
	f.Add(appendSealed(nil, a, 1, []byte("x")), uint64(1), []byte("payload"), 3)
	f.Add([]byte{0xe5}, uint64(0), []byte{}, 0)
	f.Fuzz(func(t *testing.T, raw []byte, counter uint64, payload []byte, flip int) {
		if c, p, err := openSealed(nil, a, raw); err == nil {
			// Only a genuinely sealed packet may open: resealing must give raw back.
			if !bytes.Equal(appendSealed(nil, a, c, p), raw) {
				t.Fatalf("opened a packet that is not a sealing: %x", raw)
			}
		}
		counter %= MaxCounter
		pkt := appendSealed(nil, a, counter, payload)
		c, p, err := openSealed(nil, a, pkt)
		if err != nil || c != counter || !bytes.Equal(p, payload) {
			t.Fatalf("round trip: %v", err)
		}
		if flip < 0 {
			flip = -flip
		}
		pkt[flip%len(pkt)] ^= 1
		if _, _, err := openSealed(nil, a, pkt); err == nil {
			t.Fatalf("flipped byte %d accepted", flip%len(pkt))
		}
	})
}

// Sealing into a buffer with room, and opening one in place, allocate nothing.
func TestPacketNoAllocs(t *testing.T) {
	a := testAEAD(t, 0)
	payload := make([]byte, 1200)
	buf := make([]byte, 0, 1200+PacketOverhead+nonceSize)
	var c uint64
	allocs := testing.AllocsPerRun(100, func() {
		buf = appendSealed(buf[:0], a, c, payload)
		if _, _, err := openSealed(buf[packetHeaderLen:packetHeaderLen], a, buf); err != nil {
			t.Fatal(err)
		}
		c++
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per datagram", allocs)
	}
}

func BenchmarkSeal1200(b *testing.B) {
	a := testAEAD(b, 0)
	payload := make([]byte, 1200)
	buf := make([]byte, 0, 1200+PacketOverhead+nonceSize)
	b.SetBytes(1200)
	b.ReportAllocs()
	var c uint64
	for b.Loop() {
		buf = appendSealed(buf[:0], a, c, payload)
		c++
	}
}
