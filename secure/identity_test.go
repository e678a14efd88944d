package secure

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"

	"filippo.io/edwards25519"
)

func TestX25519ConversionMatches(t *testing.T) {
	for range 50 {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		xpriv, err := X25519PrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		fromPriv, err := x25519Public(xpriv)
		if err != nil {
			t.Fatal(err)
		}
		fromPub, err := X25519PublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fromPriv, fromPub) {
			t.Fatalf("X25519 public from private %x != converted Ed25519 public %x", fromPriv, fromPub)
		}
	}
}

// A fixed vector so the conversion cannot silently change.
func TestX25519ConversionGolden(t *testing.T) {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	x, err := X25519PublicKey(priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	xs, _ := X25519PrivateKey(priv)
	want, _ := x25519Public(xs)
	if !bytes.Equal(x, want) {
		t.Fatalf("mismatch %x %x", x, want)
	}
	// Pinned once from this code; equal to the private-key path above, so it is the true
	// X25519 form. It guards against a silent change of the conversion.
	const goldenEd = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
	const goldenX = "4701d08488451f545a409fb58ae3e58581ca40ac3f7f114698cd71deac73ca01"
	if got := hex.EncodeToString(priv.Public().(ed25519.PublicKey)); got != goldenEd {
		t.Fatalf("ed25519 public = %s, want %s", got, goldenEd)
	}
	if got := hex.EncodeToString(x); got != goldenX {
		t.Fatalf("x25519 public = %s, want %s", got, goldenX)
	}
}

func TestCheckPublicKeyRejects(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	p, _ := new(edwards25519.Point).SetBytes(pub)

	// A torsion point of order 2: (0, -1).
	var order2 [32]byte
	order2[0] = 0xec
	for i := 1; i < 31; i++ {
		order2[i] = 0xff
	}
	order2[31] = 0x7f
	t2, err := new(edwards25519.Point).SetBytes(order2[:])
	if err != nil {
		t.Fatal(err)
	}
	withTorsion := new(edwards25519.Point).Add(p, t2).Bytes()

	identity := edwards25519.NewIdentityPoint().Bytes()

	// Non-canonical: y >= p. y = p+1 encodes the same point as y = 1 (the identity).
	nonCanon := make([]byte, 32)
	nonCanon[0] = 0xee
	for i := 1; i < 31; i++ {
		nonCanon[i] = 0xff
	}
	nonCanon[31] = 0x7f

	cases := map[string][]byte{
		"short":         pub[:31],
		"identity":      identity,
		"order2":        order2[:],
		"torsion":       withTorsion,
		"non-canonical": nonCanon,
	}
	for name, k := range cases {
		t.Run(name, func(t *testing.T) {
			if err := CheckPublicKey(k); !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("CheckPublicKey(%x) = %v, want ErrInvalidKey", k, err)
			}
		})
	}
	if err := CheckPublicKey(pub); err != nil {
		t.Fatalf("valid key rejected: %v", err)
	}
}
