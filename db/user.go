package db

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"time"
	"unicode/utf8"
)

// Addresses are ToolDb ecdsa-user's: base64url (unpadded) of the 32-byte X coordinate followed
// by that of Y, 43 + 43 characters.
const (
	addressHalf = 43
	addressLen  = 2 * addressHalf
	sigHexLen   = 128
	hashHexLen  = 64
)

// ParseAddress decodes an 86-character ToolDb address into a P-256 public key, checking that the
// point is on the curve.
func ParseAddress(a string) (*ecdsa.PublicKey, error) {
	if len(a) != addressLen {
		return nil, fmt.Errorf("%w: length %d", ErrInvalidAddress, len(a))
	}
	var pt [65]byte
	pt[0] = 4
	// Strict: the last character of each half carries unused bits, and a
	// lax decoder accepts several spellings of one key — aliases of one
	// address that would name different user-key namespaces (found by
	// FuzzParseAddress). ToolDb's encoder always writes them as zero.
	strict := base64.RawURLEncoding.Strict()
	x, err1 := strict.DecodeString(a[:addressHalf])
	y, err2 := strict.DecodeString(a[addressHalf:])
	if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
		return nil, fmt.Errorf("%w: not base64url coordinates", ErrInvalidAddress)
	}
	copy(pt[1:33], x)
	copy(pt[33:], y)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidAddress, err)
	}
	return pub, nil
}

// AddressOf returns the ToolDb address of a P-256 public key.
func AddressOf(pub *ecdsa.PublicKey) (string, error) {
	pt, err := pub.Bytes()
	if err != nil || len(pt) != 65 {
		return "", fmt.Errorf("%w: not a P-256 key", ErrBadKeys)
	}
	return base64.RawURLEncoding.EncodeToString(pt[1:33]) + base64.RawURLEncoding.EncodeToString(pt[33:]), nil
}

// VerifySignature checks that sig (hex r||s) is address's ECDSA P-256/SHA-256 signature over
// the ASCII bytes of hash, as WebCrypto produces it in ToolDb's ecdsa-user.
func VerifySignature(address, hash, sig string) error {
	pub, err := ParseAddress(address)
	if err != nil {
		return err
	}
	return verifyWithKey(pub, hash, sig)
}

func verifyWithKey(pub *ecdsa.PublicKey, hash, sig string) error {
	if len(sig) != sigHexLen {
		return fmt.Errorf("%w: length %d", ErrBadSignature, len(sig))
	}
	var raw [64]byte
	if _, err := hex.Decode(raw[:], []byte(sig)); err != nil {
		return fmt.Errorf("%w: not hex", ErrBadSignature)
	}
	d := sha256.Sum256([]byte(hash))
	r := new(big.Int).SetBytes(raw[:32])
	s := new(big.Int).SetBytes(raw[32:])
	if !ecdsa.Verify(pub, d[:], r, s) {
		return ErrBadSignature
	}
	return nil
}

// User is a ToolDb ECDSA identity: a P-256 key pair whose address authors records.
type User struct {
	priv    *ecdsa.PrivateKey
	address string
}

// NewUser creates a fresh key pair; rng nil means crypto/rand.
func NewUser(rng io.Reader) (*User, error) {
	if rng == nil {
		rng = rand.Reader
	}
	// ecdsa.GenerateKey ignores a non-default reader in recent Go; derive from ecdh for
	// reproducible test keys when rng is deterministic.
	k, err := ecdh.P256().GenerateKey(rng)
	if err != nil {
		return nil, fmt.Errorf("db: new user: %w", err)
	}
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), k.Bytes())
	if err != nil {
		return nil, fmt.Errorf("db: new user: %w", err)
	}
	return userFromKey(priv)
}

func userFromKey(priv *ecdsa.PrivateKey) (*User, error) {
	a, err := AddressOf(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	return &User{priv: priv, address: a}, nil
}

// Address returns the user's 86-character ToolDb address.
func (u *User) Address() string { return u.address }

// PublicKey returns the user's public key.
func (u *User) PublicKey() *ecdsa.PublicKey { return &u.priv.PublicKey }

// SignHash signs the ASCII bytes of a record hash, returning ToolDb's 128-hex-character r||s.
func (u *User) SignHash(hash string) (string, error) {
	d := sha256.Sum256([]byte(hash))
	r, s, err := ecdsa.Sign(rand.Reader, u.priv, d[:])
	if err != nil {
		return "", fmt.Errorf("db: sign: %w", err)
	}
	var raw [64]byte
	r.FillBytes(raw[:32])
	s.FillBytes(raw[32:])
	return hex.EncodeToString(raw[:]), nil
}

// NewRecord builds and signs a record for key with value (any JSON; it is re-encoded as
// JavaScript's JSON.stringify would, so ToolDb computes the same hash), time t, CRDT type crdt
// ("" for a plain value) and pow leading zero hex digits of proof of work.
func (u *User) NewRecord(key string, value []byte, crdt string, t time.Time, pow int) (Record, error) {
	v, err := CanonicalJSON(value)
	if err != nil {
		return Record{}, err
	}
	r := Record{Key: key, Author: u.address, Time: t.UnixMilli(), Value: v, CRDT: crdt}
	r.Nonce, r.Hash = solveProofOfWork(r.Value, r.Author, r.Time, pow)
	if r.Sig, err = u.SignHash(r.Hash); err != nil {
		return Record{}, err
	}
	return r, nil
}

// Keys is ToolDb ecdsa-user's exported key pair: hex of the SPKI public key and hex of the
// PKCS#8 private key (the {pub, priv} that setUser takes and encryptAccount encrypts).
type Keys struct {
	Pub  string `json:"pub"`
	Priv string `json:"priv"`
}

// ExportKeys returns the user's keys in ToolDb's format.
func (u *User) ExportKeys() (Keys, error) {
	pub, err := x509.MarshalPKIXPublicKey(&u.priv.PublicKey)
	if err != nil {
		return Keys{}, fmt.Errorf("%w: %v", ErrBadKeys, err)
	}
	priv, err := x509.MarshalPKCS8PrivateKey(u.priv)
	if err != nil {
		return Keys{}, fmt.Errorf("%w: %v", ErrBadKeys, err)
	}
	return Keys{Pub: hex.EncodeToString(pub), Priv: hex.EncodeToString(priv)}, nil
}

// ImportKeys loads a user from ToolDb's exported keys. The public half must match the private.
func ImportKeys(k Keys) (*User, error) {
	der, err := hex.DecodeString(k.Priv)
	if err != nil {
		return nil, fmt.Errorf("%w: priv is not hex", ErrBadKeys)
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKeys, err)
	}
	priv, ok := key.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: not a P-256 ECDSA key", ErrBadKeys)
	}
	if k.Pub != "" {
		der, err := hex.DecodeString(k.Pub)
		if err != nil {
			return nil, fmt.Errorf("%w: pub is not hex", ErrBadKeys)
		}
		pk, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKeys, err)
		}
		if p, ok := pk.(*ecdsa.PublicKey); !ok || !p.Equal(&priv.PublicKey) {
			return nil, fmt.Errorf("%w: public key does not match private key", ErrBadKeys)
		}
	}
	return userFromKey(priv)
}

// Account is the value of a ToolDb signup record ("==username"): the user's keys encrypted with
// AES-GCM-128 under a key PBKDF2-SHA256-derived from the password.
type Account struct {
	Name string `json:"name"`
	Keys string `json:"keys"` // hex AES-GCM ciphertext of JSON {pub, priv}
	IV   string `json:"iv"`   // 12 bytes in ToolDb's base64 of UTF-8 code points
}

// ToolDb's fixed PBKDF2 parameters (ecdsa-user generateKeyFromPassword).
const (
	accountSalt       = "t6sa@8d7!2ñs?=adjq2ng"
	accountIterations = 100000
)

func accountKey(password string) ([]byte, error) {
	// ToolDb passes sha256hex(password) as the PBKDF2 password.
	ph := sha256.Sum256([]byte(password))
	return pbkdf2.Key(sha256.New, hex.EncodeToString(ph[:]), []byte(accountSalt), accountIterations, 16)
}

// EncryptAccount returns the signup value ToolDb's signUp would store for u under name.
func (u *User) EncryptAccount(name, password string) (Account, error) {
	keys, err := u.ExportKeys()
	if err != nil {
		return Account{}, err
	}
	plain, _ := json.Marshal(keys)
	var iv [12]byte
	if _, err := rand.Read(iv[:]); err != nil {
		return Account{}, err
	}
	gcm, err := accountGCM(password)
	if err != nil {
		return Account{}, err
	}
	ct := gcm.Seal(nil, iv[:], plain, nil)
	// ToolDb's uint8ToBase64: each byte becomes a code point, the string is UTF-8 encoded, then
	// base64 encoded.
	var ivs []byte
	for _, c := range iv {
		ivs = utf8.AppendRune(ivs, rune(c))
	}
	return Account{Name: name, Keys: hex.EncodeToString(ct), IV: base64.StdEncoding.EncodeToString(ivs)}, nil
}

func accountGCM(password string) (cipher.AEAD, error) {
	key, err := accountKey(password)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// DecryptAccount recovers the user from a ToolDb signup value and the user's password.
func DecryptAccount(acc Account, password string) (*User, error) {
	ivs, err := base64.StdEncoding.DecodeString(acc.IV)
	if err != nil {
		return nil, fmt.Errorf("%w: iv: %v", ErrDecrypt, err)
	}
	var iv []byte
	for _, r := range string(ivs) {
		if r > 0xff {
			return nil, fmt.Errorf("%w: iv is not bytes", ErrDecrypt)
		}
		iv = append(iv, byte(r))
	}
	if len(iv) != 12 {
		return nil, fmt.Errorf("%w: iv length %d", ErrDecrypt, len(iv))
	}
	ct, err := hex.DecodeString(acc.Keys)
	if err != nil {
		return nil, fmt.Errorf("%w: keys are not hex", ErrDecrypt)
	}
	gcm, err := accountGCM(password)
	if err != nil {
		return nil, err
	}
	plain, err := gcm.Open(nil, iv, ct, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: wrong password or damaged account", ErrDecrypt)
	}
	var k Keys
	if err := json.Unmarshal(plain, &k); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	return ImportKeys(k)
}

// SignupRecord builds the "==name" record ToolDb's signUp writes: the encrypted account signed
// by u itself.
func (u *User) SignupRecord(name, password string, t time.Time, pow int) (Record, error) {
	acc, err := u.EncryptAccount(name, password)
	if err != nil {
		return Record{}, err
	}
	v, _ := json.Marshal(acc)
	return u.NewRecord(frozenPrefix+name, v, "", t, pow)
}
