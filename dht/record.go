package dht

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"filippo.io/edwards25519"
)

// MaxRelays is how many relay addresses a peer record may name.
const MaxRelays = 3

// Record extensions (version 2 of the record). A record with extensions sets
// recordExtFlag in its relay-count byte and carries an extension block after
// the relays. Nodes before the extension refuse such a record (the count is
// over MaxRelays), so a record with extensions only ever goes to a node that
// said it reads them: a LOOKUP request whose value is LookupExtVersion (older
// storing nodes ignore a LOOKUP value and answer with version-1 records), and
// an ANNOUNCE to a node that did not refuse it as a bad request (Announce
// retries a refused record without its extensions). Version-1 records are
// byte-for-byte what they were, so older nodes read them as before.
const (
	recordExtFlag  = 0x80
	recordCountMax = 0x03 // the bits of the count byte that count relays
	// LookupExtVersion is the LOOKUP request value that asks for records
	// with their extensions.
	LookupExtVersion byte = 1
	// MaxWebSocketURL bounds the length of PeerRecord.WebSocketURL.
	MaxWebSocketURL = 200
	// extWebSocketURL is the extension type of PeerRecord.WebSocketURL.
	extWebSocketURL = 1
	// extRelays6 is the extension type of PeerRecord.Relays6.
	extRelays6 = 2
	// relay6Size is the size of one IPv6 relay in extRelays6: IP and port.
	relay6Size = 16 + 2
)

// PeerRecord is what an announcer stores on a topic: its Ed25519 public key
// (its peer id), the DHT nodes that relay signaling to it and, optionally,
// the WebSocket URL where browsers reach it.
//
// Byte layout: public key (32) | count (1): relay count (bits 0-1, at most
// 3), bit 7 set when an extension block follows | relays, each as in
// AppendAddr | extension block (only with bit 7): length (1, 1..255), then
// entries of type (1), length (1), value, in increasing type order. Type 1
// is the WebSocket URL (ws:// or wss://, printable ASCII). Type 2 lists the
// IPv6 relays, 1 to 3 of them, each the 16-byte IP and the 2-byte port
// (the IPv4 relays stay in the version-1 part, so a node from before IPv6
// reads the record as it always did). Entries of types this node does not
// know are kept verbatim and passed on, so an extension added later
// survives a storing node that predates it.
type PeerRecord struct {
	PublicKey ed25519.PublicKey
	// Relays are the relays of the version-1 record: the announcer's
	// IPv4 relays.
	Relays []netip.AddrPort
	// Relays6 are the announcer's IPv6 relays (extension type 2), for
	// lookers that speak IPv6.
	Relays6 []netip.AddrPort
	// WebSocketURL is the announcer's public WebSocket URL (its --public-ws),
	// empty when it has none.
	WebSocketURL string

	// unknown holds extension entries of types this node does not
	// understand, verbatim, in type order.
	unknown []byte
}

// AllRelays returns every relay of the record: Relays, then Relays6.
func (r PeerRecord) AllRelays() []netip.AddrPort {
	return append(append([]netip.AddrPort(nil), r.Relays...), r.Relays6...)
}

// hasExt reports whether r needs the extension block.
func (r PeerRecord) hasExt() bool {
	return r.WebSocketURL != "" || len(r.Relays6) > 0 || len(r.unknown) > 0
}

// WithoutExt returns r as a version-1 record, for nodes that do not read
// extensions.
func (r PeerRecord) WithoutExt() PeerRecord {
	return PeerRecord{PublicKey: r.PublicKey, Relays: r.Relays}
}

// AppendPeerRecord appends the encoding of r to b. IPv6 relays that do not
// fit the extension block's 255 bytes (beside a long WebSocket URL) are
// left out.
func AppendPeerRecord(b []byte, r PeerRecord) []byte {
	b = append(b, r.PublicKey...)
	count := byte(len(r.Relays))
	if r.hasExt() {
		count |= recordExtFlag
	}
	b = append(b, count)
	for _, a := range r.Relays {
		b = AppendAddr(b, a)
	}
	if !r.hasExt() {
		return b
	}
	lenAt := len(b)
	b = append(b, 0)
	// Known and unknown entries merge in type order.
	unknown := r.unknown
	flushBefore := func(typ int) {
		for len(unknown) >= 2 && int(unknown[0]) < typ {
			n := 2 + int(unknown[1])
			b = append(b, unknown[:n]...)
			unknown = unknown[n:]
		}
	}
	if r.WebSocketURL != "" {
		flushBefore(extWebSocketURL)
		b = append(b, extWebSocketURL, byte(len(r.WebSocketURL)))
		b = append(b, r.WebSocketURL...)
	}
	// The block's length is one byte: with a long URL, IPv6 relays that
	// would not fit are left out.
	room := 255 - (len(b) - lenAt - 1) - len(unknown) - 2
	if relays6 := r.Relays6[:min(len(r.Relays6), max(room, 0)/relay6Size)]; len(relays6) > 0 {
		flushBefore(extRelays6)
		b = append(b, extRelays6, byte(relay6Size*len(relays6)))
		for _, a := range relays6 {
			ip := a.Addr().As16()
			b = append(b, ip[:]...)
			b = binary.BigEndian.AppendUint16(b, a.Port())
		}
	}
	b = append(b, unknown...)
	b[lenAt] = byte(len(b) - lenAt - 1)
	return b
}

// ParsePeerRecord decodes one record from the front of b and returns the
// rest of b.
func ParsePeerRecord(b []byte) (PeerRecord, []byte, error) {
	r := reader{b: b}
	key := r.take(ed25519.PublicKeySize)
	count := r.byte()
	n := int(count &^ recordExtFlag)
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
	if r.err == nil && count&recordExtFlag != 0 {
		l := int(r.byte())
		ext := r.take(l)
		if r.err == nil {
			if err := rec.parseExt(ext); err != nil {
				r.fail(err)
			}
		}
	}
	if r.err != nil {
		return PeerRecord{}, nil, fmt.Errorf("%w: %w", ErrBadRecord, r.err)
	}
	return rec, r.b, nil
}

// parseExt decodes an extension block into rec. The block must be
// canonical (non-empty, types strictly increasing) so that a parsed record
// re-encodes to the same bytes.
func (rec *PeerRecord) parseExt(ext []byte) error {
	if len(ext) == 0 {
		return fmt.Errorf("empty extension block")
	}
	last := -1
	for len(ext) > 0 {
		if len(ext) < 2 || len(ext)-2 < int(ext[1]) {
			return ErrShortPacket
		}
		typ, val := int(ext[0]), ext[2:2+int(ext[1])]
		if typ <= last {
			return fmt.Errorf("extension %d out of order", typ)
		}
		last = typ
		switch typ {
		case extWebSocketURL:
			if !ValidWebSocketURL(string(val)) {
				return fmt.Errorf("extension %d: bad websocket url", typ)
			}
			rec.WebSocketURL = string(val)
		case extRelays6:
			if len(val) == 0 || len(val)%relay6Size != 0 || len(val)/relay6Size > MaxRelays {
				return fmt.Errorf("extension %d: %d bytes of ipv6 relays", typ, len(val))
			}
			for a := val; len(a) > 0; a = a[relay6Size:] {
				ip := netip.AddrFrom16([16]byte(a[:16]))
				port := binary.BigEndian.Uint16(a[16:relay6Size])
				if ip.Is4In6() || ip.IsUnspecified() || port == 0 {
					return fmt.Errorf("extension %d: %w", typ, ErrBadAddress)
				}
				rec.Relays6 = append(rec.Relays6, netip.AddrPortFrom(ip, port))
			}
		default:
			rec.unknown = append(rec.unknown, ext[:2+len(val)]...)
		}
		ext = ext[2+len(val):]
	}
	return nil
}

// ValidWebSocketURL reports whether u can be carried in a record: a ws:// or
// wss:// URL of printable ASCII with a host, at most MaxWebSocketURL bytes.
func ValidWebSocketURL(u string) bool {
	if len(u) > MaxWebSocketURL {
		return false
	}
	for i := 0; i < len(u); i++ {
		if u[i] <= ' ' || u[i] > '~' {
			return false
		}
	}
	rest, ok := strings.CutPrefix(u, "wss://")
	if !ok {
		rest, ok = strings.CutPrefix(u, "ws://")
	}
	if !ok {
		return false
	}
	host, _, _ := strings.Cut(rest, "/")
	return host != "" && host[0] != ':'
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

// withoutExt returns recs as version-1 records (for a requester that did not
// ask for extensions), sharing nothing but the keys and relays.
func withoutExt(recs []PeerRecord) []PeerRecord {
	out := make([]PeerRecord, len(recs))
	for i, r := range recs {
		out[i] = r.WithoutExt()
	}
	return out
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
