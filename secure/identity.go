package secure

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/sha512"
	"fmt"

	"filippo.io/edwards25519"
)

// X25519 key sizes.
const (
	X25519KeySize = 32
)

// invEight is 8⁻¹ mod ℓ, used to test that a point lies in the prime-order subgroup:
// P is torsion-free iff [8⁻¹]([8]P) == P.
var invEight = func() *edwards25519.Scalar {
	var b [32]byte
	b[0] = 8
	s, err := edwards25519.NewScalar().SetCanonicalBytes(b[:])
	if err != nil {
		panic(err) // constant input
	}
	return s.Invert(s)
}()

// CheckPublicKey reports whether pub is usable as a peer identity: 32 bytes, the
// canonical encoding of a point, not of small order and in the prime-order subgroup.
//
// Why so strict: the Noise DH clamps scalars to multiples of the cofactor 8, so an
// Ed25519 key A and A+T (T a torsion point) would complete the same handshake; and
// edwards25519 decoding accepts non-canonical encodings. Both would let one key owner
// appear under several peer ids. Keys made by ed25519.GenerateKey always pass.
//
// One ambiguity remains and cannot be removed: A and −A have the same X25519 form (the
// Montgomery u-coordinate drops the sign of x), so the owner of A can also prove −A.
// Code that bans peers should ban by X25519 form (X25519PublicKey) if that matters.
func CheckPublicKey(pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key length %d", ErrInvalidKey, len(pub))
	}
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return fmt.Errorf("%w: not a curve point", ErrInvalidKey)
	}
	if !bytes.Equal(p.Bytes(), pub) {
		return fmt.Errorf("%w: non-canonical encoding", ErrInvalidKey)
	}
	q := new(edwards25519.Point).MultByCofactor(p)
	if q.Equal(edwards25519.NewIdentityPoint()) == 1 {
		return fmt.Errorf("%w: small-order point", ErrInvalidKey)
	}
	if q.ScalarMult(invEight, q).Equal(p) != 1 {
		return fmt.Errorf("%w: point has a torsion component", ErrInvalidKey)
	}
	return nil
}

// X25519PublicKey converts an Ed25519 public key to its X25519 (Montgomery u) form, the
// Noise static public key of that peer. It rejects keys CheckPublicKey rejects.
func X25519PublicKey(pub ed25519.PublicKey) ([]byte, error) {
	if err := CheckPublicKey(pub); err != nil {
		return nil, err
	}
	p, _ := new(edwards25519.Point).SetBytes(pub) // checked above
	return p.BytesMontgomery(), nil
}

// X25519PrivateKey converts an Ed25519 private key to the X25519 private key with the
// same public point: the clamped first half of SHA-512(seed), which is exactly the
// scalar Ed25519 signs with (RFC 8032 §5.1.5).
func X25519PrivateKey(priv ed25519.PrivateKey) ([]byte, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: private key length %d", ErrInvalidKey, len(priv))
	}
	h := sha512.Sum512(priv.Seed())
	s := make([]byte, X25519KeySize)
	copy(s, h[:32])
	s[0] &= 248
	s[31] &= 127
	s[31] |= 64
	return s, nil
}

// x25519Public computes the X25519 public key of an X25519 private key.
func x25519Public(priv []byte) ([]byte, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	return k.PublicKey().Bytes(), nil
}
