package swarm

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// The membership protocol's wire formats: the dial hello, which rides in
// the hole-punching handshake (holepunch.DialOptions.Hello) so that a full
// node decides before any ICE work, and the messages of the control
// stream every connection opens (control.go).

// ErrBadMember: a membership message or dial hello is malformed.
var ErrBadMember = errors.New("swarm: bad membership message")

// topicTag names a topic between neighbours: SHA-256("swarmdb/member/1" ||
// topic), first 8 bytes. Neighbours learn which topics they share without
// sending the topic keys themselves.
type topicTag [8]byte

func tagOf(t Topic) topicTag {
	h := sha256.New()
	h.Write([]byte("swarmdb/member/1"))
	h.Write(t[:])
	var tag topicTag
	copy(tag[:], h.Sum(nil))
	return tag
}

// dialKind says why a dial is made: HyParView's request priorities.
type dialKind byte

const (
	// kindNeighbor: HyParView's low-priority NEIGHBOR. The dialler has
	// other connections; a full node refuses it.
	kindNeighbor dialKind = iota
	// kindJoin: the dialler has no connection at all (HyParView's JOIN, and
	// its high-priority NEIGHBOR). A full node lets it in by demoting one
	// of its own peers, and forwards the join through the overlay.
	kindJoin
	// kindForwardJoin: the dialler is where a forward-join walk ended and
	// adds the joiner to its active view; the joiner lets it in even when
	// full.
	kindForwardJoin
	kindMax
)

func (k dialKind) String() string {
	switch k {
	case kindNeighbor:
		return "neighbor"
	case kindJoin:
		return "join"
	case kindForwardJoin:
		return "forward-join"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// priority says whether a full node lets a dial of this kind in.
func (k dialKind) priority() bool { return k == kindJoin || k == kindForwardJoin }

// dialHello is what a dial tells the server's firewall:
//
//	offset  size  field
//	0       1     version (helloVersion)
//	1       1     kind (dialKind)
//	2       1     degree: the dialler's open connections (capped at 255)
//	3       8     topic tag the dialler found the server on (zero: none)
type dialHello struct {
	Kind   dialKind
	Degree uint8
	Tag    topicTag
}

const (
	helloVersion = 1
	helloSize    = 11
)

// appendHello appends h's encoding to b.
func appendHello(b []byte, h dialHello) []byte {
	b = append(b, helloVersion, byte(h.Kind), h.Degree)
	return append(b, h.Tag[:]...)
}

// wire is what a dial sends: nothing for a neighbour request (the server
// reads no hello as one, and a server that predates the hello answers it),
// the encoding otherwise.
func (h dialHello) wire() []byte {
	if h.Kind == kindNeighbor {
		return nil
	}
	return appendHello(nil, h)
}

// parseHello decodes a dial hello. An empty hello (a dialler that says
// nothing, or an older one) is a low-priority neighbour request.
func parseHello(b []byte) (dialHello, error) {
	if len(b) == 0 {
		return dialHello{Kind: kindNeighbor}, nil
	}
	if len(b) != helloSize || b[0] != helloVersion || dialKind(b[1]) >= kindMax {
		return dialHello{}, fmt.Errorf("%w: dial hello %x", ErrBadMember, b)
	}
	h := dialHello{Kind: dialKind(b[1]), Degree: b[2]}
	copy(h.Tag[:], b[3:])
	return h, nil
}

// Control-stream message types.
const (
	msgHello        byte = 1 // the sender's topics and degree; first on the stream, again when they change
	msgPing         byte = 2 // a liveness probe, answered by msgPong with the same nonce
	msgPong         byte = 3
	msgDisconnect   byte = 4 // HyParView DISCONNECT: the sender drops this connection to make room
	msgForwardJoin  byte = 5 // HyParView FORWARDJOIN
	msgShuffle      byte = 6 // HyParView SHUFFLE
	msgShuffleReply byte = 7 // HyParView SHUFFLEREPLY
	msgMax          byte = 8
)

// Bounds of the lists in a message.
const (
	maxTags    = 32 // topics in a hello
	maxPath    = 16 // hops a shuffle records (its walk length is at most this)
	maxEntries = 32 // peers in a shuffle or its reply
	maxRelays  = 4  // relay hints of one peer entry
)

// peerEntry is a peer as the membership protocol passes it on: its key
// (connecting is by key, through NATs) and the DHT relays where its
// signaling goes, when known.
type peerEntry struct {
	Key    ed25519.PublicKey
	Relays []netip.AddrPort
}

// memberMsg is one control-stream message. Which fields count depends on
// Type:
//
//	hello         Degree, Tags
//	ping, pong    Degree, Nonce
//	disconnect    -
//	forwardJoin   Tag, TTL, Peer (the joiner)
//	shuffle       Tag, TTL, Path (origin first), Entries
//	shuffleReply  Tag, Path (the hops still to go back), Entries
//
// The encoding is the type byte followed by the fields in that order:
//
//	degree u8 | nonce u64 big endian | tag 8 bytes | ttl u8
//	tags:    n u8, n × 8 bytes
//	path:    n u8, n × 32-byte keys
//	entries: n u8, n × entry
//	entry:   32-byte key, n u8 relays, n × (len u8 = 4 or 16, IP, port u16)
//
// Trailing bytes are an error.
type memberMsg struct {
	Type    byte
	Degree  uint8
	Nonce   uint64
	Tags    []topicTag
	Tag     topicTag
	TTL     uint8
	Peer    peerEntry
	Path    []ed25519.PublicKey
	Entries []peerEntry
}

// appendMember appends m's encoding to b.
func appendMember(b []byte, m *memberMsg) []byte {
	b = append(b, m.Type)
	switch m.Type {
	case msgHello:
		b = append(b, m.Degree, byte(len(m.Tags)))
		for _, t := range m.Tags {
			b = append(b, t[:]...)
		}
	case msgPing, msgPong:
		b = append(b, m.Degree)
		b = binary.BigEndian.AppendUint64(b, m.Nonce)
	case msgForwardJoin:
		b = append(b, m.Tag[:]...)
		b = append(b, m.TTL)
		b = appendEntry(b, m.Peer)
	case msgShuffle, msgShuffleReply:
		b = append(b, m.Tag[:]...)
		if m.Type == msgShuffle {
			b = append(b, m.TTL)
		}
		b = append(b, byte(len(m.Path)))
		for _, k := range m.Path {
			b = append(b, k...)
		}
		b = append(b, byte(len(m.Entries)))
		for _, e := range m.Entries {
			b = appendEntry(b, e)
		}
	}
	return b
}

func appendEntry(b []byte, e peerEntry) []byte {
	b = append(b, e.Key...)
	b = append(b, byte(len(e.Relays)))
	for _, r := range e.Relays {
		ip := r.Addr().Unmap()
		b = append(b, byte(ip.BitLen()/8))
		b = append(b, ip.AsSlice()...)
		b = binary.BigEndian.AppendUint16(b, r.Port())
	}
	return b
}

// parseMember decodes a control-stream message made by appendMember.
func parseMember(b []byte) (*memberMsg, error) {
	r := memberReader{b: b}
	m := &memberMsg{Type: r.byte()}
	switch m.Type {
	case msgHello:
		m.Degree = r.byte()
		n := int(r.byte())
		if n > maxTags {
			return nil, fmt.Errorf("%w: %d tags", ErrBadMember, n)
		}
		for range n {
			m.Tags = append(m.Tags, r.tag())
		}
	case msgPing, msgPong:
		m.Degree = r.byte()
		m.Nonce = r.uint64()
	case msgDisconnect:
	case msgForwardJoin:
		m.Tag = r.tag()
		m.TTL = r.byte()
		m.Peer = r.entry()
	case msgShuffle, msgShuffleReply:
		m.Tag = r.tag()
		if m.Type == msgShuffle {
			m.TTL = r.byte()
		}
		n := int(r.byte())
		if n > maxPath {
			return nil, fmt.Errorf("%w: path of %d", ErrBadMember, n)
		}
		for range n {
			m.Path = append(m.Path, r.key())
		}
		n = int(r.byte())
		if n > maxEntries {
			return nil, fmt.Errorf("%w: %d entries", ErrBadMember, n)
		}
		for range n {
			m.Entries = append(m.Entries, r.entry())
		}
	default:
		if r.err == nil {
			return nil, fmt.Errorf("%w: type %d", ErrBadMember, m.Type)
		}
	}
	switch {
	case r.err != nil:
		return nil, fmt.Errorf("%w: %v", ErrBadMember, r.err)
	case len(r.b) != 0:
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadMember, len(r.b))
	}
	return m, nil
}

// memberReader consumes b front to back; the first bad read sets err and
// every later read returns zero values.
type memberReader struct {
	b   []byte
	err error
}

func (r *memberReader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = fmt.Errorf("short message: want %d bytes, have %d", n, len(r.b))
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *memberReader) byte() byte {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *memberReader) uint16() uint16 {
	if b := r.bytes(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *memberReader) uint64() uint64 {
	if b := r.bytes(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *memberReader) tag() (t topicTag) {
	copy(t[:], r.bytes(len(t)))
	return t
}

func (r *memberReader) key() ed25519.PublicKey {
	if b := r.bytes(ed25519.PublicKeySize); b != nil {
		return append(ed25519.PublicKey(nil), b...)
	}
	return nil
}

func (r *memberReader) entry() peerEntry {
	e := peerEntry{Key: r.key()}
	n := int(r.byte())
	if n > maxRelays && r.err == nil {
		r.err = fmt.Errorf("%d relays", n)
	}
	for range n {
		if r.err != nil {
			break
		}
		ip, ok := netip.AddrFromSlice(r.bytes(int(r.byte())))
		port := r.uint16()
		if r.err != nil {
			break
		}
		// One encoding per value: IPv4 in its 4-byte form, no port 0.
		if !ok || ip.Is4In6() || port == 0 {
			r.err = errors.New("bad relay address")
			break
		}
		e.Relays = append(e.Relays, netip.AddrPortFrom(ip, port))
	}
	return e
}
