package dht

import (
	"crypto/ed25519"
	"fmt"
	"net/netip"

	"filippo.io/edwards25519"
)

// MaxRelays is how many relay addresses a peer record may name.
const MaxRelays = 3

// PeerRecord is what an announcer stores on a topic: its Ed25519 public key
// (its peer id) and the DHT nodes that relay signaling to it.
//
// Byte layout: public key (32) | relay count (1, at most 3) | relays, each
// as in AppendAddr.
type PeerRecord struct {
	PublicKey ed25519.PublicKey
	Relays    []netip.AddrPort
}

// AppendPeerRecord appends the encoding of r to b.
func AppendPeerRecord(b []byte, r PeerRecord) []byte {
	b = append(b, r.PublicKey...)
	b = append(b, byte(len(r.Relays)))
	for _, a := range r.Relays {
		b = AppendAddr(b, a)
	}
	return b
}

// ParsePeerRecord decodes one record from the front of b and returns the
// rest of b.
func ParsePeerRecord(b []byte) (PeerRecord, []byte, error) {
	r := reader{b: b}
	key := r.take(ed25519.PublicKeySize)
	n := int(r.byte())
	if r.err == nil && n > MaxRelays {
		return PeerRecord{}, nil, fmt.Errorf("%w: %d relays", ErrBadRecord, n)
	}
	rec := PeerRecord{PublicKey: ed25519.PublicKey(append([]byte(nil), key...))}
	for i := 0; i < n && r.err == nil; i++ {
		a := r.addr()
		if r.err == nil && !a.IsValid() {
			r.fail(ErrBadAddress)
		}
		rec.Relays = append(rec.Relays, a)
	}
	if r.err != nil {
		return PeerRecord{}, nil, fmt.Errorf("%w: %w", ErrBadRecord, r.err)
	}
	return rec, r.b, nil
}

// Signature domains keep an announce signature from ever verifying as an
// unannounce or as anything else the key signs.
const (
	announceDomain   = "swarmdb/announce/v1"
	unannounceDomain = "swarmdb/unannounce/v1"
)

// announceSignable is what an announcer signs: the record bound to the topic,
// to the storing node and to the token that node handed out, so a signed
// announce cannot be replayed to another node or after the token expired.
func announceSignable(topic, storingNode, token ID, record []byte) []byte {
	b := make([]byte, 0, len(announceDomain)+3*IDSize+len(record))
	b = append(b, announceDomain...)
	b = append(b, topic[:]...)
	b = append(b, storingNode[:]...)
	b = append(b, token[:]...)
	return append(b, record...)
}

func unannounceSignable(topic, storingNode, token ID, key ed25519.PublicKey) []byte {
	b := make([]byte, 0, len(unannounceDomain)+3*IDSize+len(key))
	b = append(b, unannounceDomain...)
	b = append(b, topic[:]...)
	b = append(b, storingNode[:]...)
	b = append(b, token[:]...)
	return append(b, key...)
}

// signAnnounce builds the value of an ANNOUNCE request: record || signature.
func signAnnounce(priv ed25519.PrivateKey, topic, storingNode, token ID, rec PeerRecord) []byte {
	value := AppendPeerRecord(nil, rec)
	sig := ed25519.Sign(priv, announceSignable(topic, storingNode, token, value))
	return append(value, sig...)
}

// strongKey reports whether pub is a valid Ed25519 point outside the small
// subgroup. Small-order keys let forged "signatures" verify for every
// message (all-zero key and signature verify in crypto/ed25519; found by
// FuzzVerifyAnnounce), so no record may be stored under one.
func strongKey(pub []byte) bool {
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return false
	}
	return new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) != 1
}

// verifySigned checks sig over msg by pub, refusing weak keys.
func verifySigned(pub ed25519.PublicKey, msg, sig []byte) bool {
	return strongKey(pub) && ed25519.Verify(pub, msg, sig)
}

// verifyAnnounce parses and checks an ANNOUNCE value.
func verifyAnnounce(value []byte, topic, storingNode, token ID) (PeerRecord, error) {
	if len(value) < ed25519.SignatureSize {
		return PeerRecord{}, ErrBadRecord
	}
	body, sig := value[:len(value)-ed25519.SignatureSize], value[len(value)-ed25519.SignatureSize:]
	rec, rest, err := ParsePeerRecord(body)
	if err != nil {
		return PeerRecord{}, err
	}
	if len(rest) != 0 {
		return PeerRecord{}, ErrTrailingData
	}
	if !verifySigned(rec.PublicKey, announceSignable(topic, storingNode, token, body), sig) {
		return PeerRecord{}, ErrBadSignature
	}
	return rec, nil
}

// signUnannounce builds the value of an UNANNOUNCE request: key || signature.
func signUnannounce(priv ed25519.PrivateKey, topic, storingNode, token ID) []byte {
	pub := priv.Public().(ed25519.PublicKey)
	sig := ed25519.Sign(priv, unannounceSignable(topic, storingNode, token, pub))
	return append(append([]byte(nil), pub...), sig...)
}

func verifyUnannounce(value []byte, topic, storingNode, token ID) (ed25519.PublicKey, error) {
	if len(value) != ed25519.PublicKeySize+ed25519.SignatureSize {
		return nil, ErrBadRecord
	}
	pub := ed25519.PublicKey(value[:ed25519.PublicKeySize])
	if !verifySigned(pub, unannounceSignable(topic, storingNode, token, pub), value[ed25519.PublicKeySize:]) {
		return nil, ErrBadSignature
	}
	return append(ed25519.PublicKey(nil), pub...), nil
}

// AppendRecords encodes a LOOKUP reply value: count (1) then records.
func AppendRecords(b []byte, recs []PeerRecord) []byte {
	b = append(b, byte(len(recs)))
	for _, r := range recs {
		b = AppendPeerRecord(b, r)
	}
	return b
}

// ParseRecords decodes a LOOKUP reply value.
func ParseRecords(b []byte) ([]PeerRecord, error) {
	if len(b) == 0 {
		return nil, ErrShortPacket
	}
	n := int(b[0])
	b = b[1:]
	recs := make([]PeerRecord, 0, n)
	for i := 0; i < n; i++ {
		rec, rest, err := ParsePeerRecord(b)
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
		b = rest
	}
	if len(b) != 0 {
		return nil, ErrTrailingData
	}
	return recs, nil
}
