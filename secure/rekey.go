package secure

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
)

// Key epochs: how long one key seals datagrams.
//
// AES-GCM loses confidentiality with the amount sealed under one key, long before its
// nonces run out. RFC 9001 §6.6 allows 2^23 packets per AES-GCM key in QUIC. Its
// Appendix B.1.1 derives that from the bound of Hoang, Tessaro and Thiruvengadam (CCS
// 2018, "The Multi-user Security of GCM, Revisited"): an attacker who sees q packets
// of at most l 16-byte blocks each tells the AEAD from random with advantage about
// 2(q·l)²/2^128, and for the target 2^-57 that means q ≤ 2^35/l. That is 2^23 packets
// for QUIC's largest packets (2^16 bytes, l = 2^12) and 2^28 for packets under 2^11
// bytes (l = 2^7). Ours are at most 1477 bytes sealed (MaxMTU plus PacketOverhead)
// with the default MaxPayload, so 2^28 would do for them; but MaxPayload may be
// configured up to a whole UDP datagram, and the epoch length is part of the wire
// protocol, which both sides must agree on whatever they configure. So an epoch is
// 2^23 datagrams: the RFC's figure for any size, and an advantage of about 2^-67 per
// epoch for our packets. Shorter epochs also lower the total, which grows with q over
// a session's epochs. An epoch of 1452-byte datagrams is 12 GB: a bulk transfer at
// 250 MB/s changes keys every 49 s at a cost of a few microseconds, an idle session
// never.
//
// ChaCha20-Poly1305 is never rekeyed: RFC 9001 §6.6 puts its confidentiality limit
// beyond 2^62 packets, and a session ends at MaxCounter (2^60) datagrams. It keeps the
// handshake key for the whole session, as it always has. (Forgeries are a limit of
// their own, counted over a connection and not helped by new keys: RFC 9001 allows
// 2^52 failed openings for AES-GCM and 2^36 for ChaCha20-Poly1305. A DatagramConn
// counts them, DroppedAuth, and does not act on them.)
//
// Epochs need no messages and no coordination: a datagram's epoch is its counter >>
// aesEpochBits, and each epoch's key follows from the direction's handshake key K (the
// sender's Keys.Send, the receiver's Keys.Recv) alone:
//
//	k[0]   = HKDF-Expand-SHA256(K,    "swarmdb/secure/1 AES-256-GCM epoch" || uint64be(0), 32)
//	k[e+1] = HKDF-Expand-SHA256(k[e], "swarmdb/secure/1 AES-256-GCM epoch" || uint64be(e+1), 32)
//
// (RFC 5869; the 32-byte keys are uniformly random, so they serve as HKDF's PRK without
// an Extract step.) The chain lets a conn keep no key from which an earlier epoch's
// could be recomputed, as Noise's REKEY (spec §11.3) intends. REKEY itself is not used:
// it encrypts under the key with the Noise suite's ChaChaPoly, and a key should serve
// one algorithm only; deriving even epoch 0 keeps the handshake key itself away from
// AES. Each direction holds the AEADs of the current epoch and the previous one: the
// receiver's replay window accepts a datagram up to ReplayWindowSize counters behind
// the highest, which may lie across the boundary. The next epoch's key is derived when
// its first datagram is sent or arrives (a few microseconds, once per epoch; a forged
// datagram of the next epoch derives it too, and it is kept, so forgeries cannot make
// the receiver derive more often), not ahead of time: an AES-256-GCM AEAD holds 784
// bytes of key schedule and GHASH table, and most sessions never reach a second epoch.
// A datagram of any other epoch is too old for the window or, ahead of the next, could
// only follow 2^23 lost datagrams in a row; it is dropped without deriving anything.
const aesEpochBits = 23

// epochOf is the key epoch of counter under c.
func epochOf(c Cipher, counter uint64) uint64 {
	if c != CipherAES256GCM {
		return 0
	}
	return counter >> aesEpochBits
}

const epochLabel = "swarmdb/secure/1 AES-256-GCM epoch"

// deriveEpochKey is k[e] from the key before it (the handshake key for e = 0).
func deriveEpochKey(prev *[KeySize]byte, e uint64) [KeySize]byte {
	info := binary.BigEndian.AppendUint64([]byte(epochLabel), e)
	k, err := hkdf.Expand(sha256.New, prev[:], string(info), KeySize)
	if err != nil {
		panic(err) // only for lengths beyond 255 hash blocks
	}
	return [KeySize]byte(k)
}

// epochAEAD derives k[e] from the key before it and returns it with its AES-256-GCM
// AEAD.
func epochAEAD(prev *[KeySize]byte, e uint64) ([KeySize]byte, cipher.AEAD) {
	k := deriveEpochKey(prev, e)
	return k, newAEAD(CipherAES256GCM, &k)
}

// epochKeys is one direction's keys around its current epoch n. advance returns the
// next epoch's as a new value, so a sender's concurrent Writes read one without a lock;
// only the receiver, under its lock, fills in next (deriveNext).
type epochKeys struct {
	cipher Cipher
	n      uint64
	// prev and cur seal epochs n−1 (nil at n = 0) and n; next seals n+1 once
	// deriveNext has run (never for ChaCha20-Poly1305, which has one epoch).
	prev, cur, next cipher.AEAD
	curKey, nextKey [KeySize]byte // k[n], and k[n+1] with next
}

// newEpochKeys returns the keys of epoch 0 of a direction whose handshake key is k.
func newEpochKeys(c Cipher, k [KeySize]byte) *epochKeys {
	if c != CipherAES256GCM {
		return &epochKeys{cipher: c, cur: newAEAD(c, &k)}
	}
	e := &epochKeys{cipher: c}
	e.curKey, e.cur = epochAEAD(&k, 0)
	return e
}

// deriveNext derives the key of epoch n+1 into e, unless it is there already.
func (e *epochKeys) deriveNext() {
	if e.next == nil && e.cipher == CipherAES256GCM {
		e.nextKey, e.next = epochAEAD(&e.curKey, e.n+1)
	}
}

// advance returns the keys of epoch n+1, deriving its key unless deriveNext has. It
// does not change e. ChaCha20-Poly1305 never advances.
func (e *epochKeys) advance() *epochKeys {
	if e.cipher != CipherAES256GCM {
		return e
	}
	a := &epochKeys{cipher: e.cipher, n: e.n + 1, prev: e.cur, cur: e.next, curKey: e.nextKey}
	if a.cur == nil {
		a.curKey, a.cur = epochAEAD(&e.curKey, a.n)
	}
	return a
}

// key returns the AEAD of epoch m: n−1, n, or n+1 once derived; otherwise nil.
func (e *epochKeys) key(m uint64) cipher.AEAD {
	switch m {
	case e.n:
		return e.cur
	case e.n + 1:
		return e.next
	case e.n - 1:
		return e.prev // nil at n = 0, where n−1 wrapped
	}
	return nil
}
