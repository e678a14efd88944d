// Package demux is the one table of what shares a swarmdb node's UDP socket.
//
// A node speaks several protocols on one UDP socket (one per address
// family: IPv4, and IPv6 when it has it; both carry the same mix): STUN (every DHT node is
// a STUN server, and ICE checks are STUN), our own DHT, the BitTorrent
// mainline DHT (KRPC), birthday-paradox punching probes and the sealed
// datagrams of package secure. A datagram's first byte alone says which;
// Classify is the only place that decides it, and its table of first bytes
// is the only place the byte values are written. dht, holepunch, secure and
// mainline take their tags from here.
//
// Handlers is a socket's dispatch table: each layer registers a Handler
// for the classes it owns, and the read loop hands every datagram to the
// handler of its class. On a node's socket (dht.Node.Handle registers):
//
//	DHT       dht itself
//	STUN      1. dht: Binding requests without USERNAME (every DHT node is
//	             a STUN server)
//	          2. natcheck/dhtprobe: Binding responses to its own requests
//	          3. holepunch: the rest (ICE checks), routed as Sealed is
//	          (dht answers 1 before dispatching; holepunch/dhtlink's STUN
//	          handler offers 2 then 3; node.Netcheck registers 2 alone)
//	KRPC      mainline, through package node's mainline part
//	Birthday  holepunch: probes of the birthday punches in progress
//	Sealed    holepunch: the punched path that owns the source address,
//	          else the ICE connection (through ICE's UDP mux)
//
// A class nobody registered for is dropped and counted by the socket's
// owner (dht.Stats.DroppedMalformed).
//
// This package imports nothing of ours, so every layer may use it.
package demux

import (
	"net/netip"
	"sync/atomic"
)

// Class is the protocol a datagram on the shared socket belongs to.
type Class uint8

const (
	// Unknown is any first byte the table reserves for nothing. Such
	// datagrams are dropped and counted.
	Unknown Class = iota
	// STUN: RFC 5389 §6, the two most significant bits of every STUN
	// message are zero, so its first byte is 0x00-0x3F. Binding requests
	// without USERNAME are answered by the DHT node; the rest (ICE checks,
	// responses) belong to ICE and the NAT measurement.
	STUN
	// DHT is our own Kademlia DHT (package dht), TagDHTRequest and
	// TagDHTResponse.
	DHT
	// KRPC is the BitTorrent mainline DHT (BEP 5): bencoded dictionaries,
	// whose first byte is always 'd'.
	KRPC
	// Birthday is a birthday-paradox punching probe (package holepunch).
	Birthday
	// Sealed is a datagram sealed with a Noise session's keys (package
	// secure).
	Sealed

	numClasses // not a class: how many there are
)

// First bytes. Each is written here once; the table maps them to classes.
const (
	// STUNMax is the largest first byte of a STUN message.
	STUNMax byte = 0x3F
	// TagDHTRequest and TagDHTResponse start our DHT's datagrams.
	TagDHTRequest  byte = 0x5A
	TagDHTResponse byte = 0x5B
	// TagKRPC starts every KRPC message: a bencoded dictionary.
	TagKRPC byte = 'd' // 0x64
	// TagBirthday starts every birthday punching probe.
	TagBirthday byte = 0xB1
	// TagSealed starts every sealed transport datagram.
	TagSealed byte = 0xE5
)

// span is one row of the table: first bytes lo..hi (inclusive) are class c.
type span struct {
	lo, hi byte
	c      Class
}

// table lists every first byte that means something. Rows never overlap
// (TestTableDisjoint). Not here on purpose: TURN ChannelData (first byte
// 0x40-0x7F, RFC 8656 §12) never reaches this socket, because pion/ice
// talks to TURN servers from sockets of its own.
var table = [...]span{
	{0x00, STUNMax, STUN},
	{TagDHTRequest, TagDHTResponse, DHT},
	{TagKRPC, TagKRPC, KRPC},
	{TagBirthday, TagBirthday, Birthday},
	{TagSealed, TagSealed, Sealed},
}

// byFirst is the table unrolled into a lookup array, built once.
var byFirst = func() (a [256]Class) {
	for _, s := range table {
		for b := int(s.lo); b <= int(s.hi); b++ {
			a[b] = s.c
		}
	}
	return a
}()

// Classify says which protocol datagram b belongs to, from its first byte.
// An empty datagram is Unknown. It does not validate the rest: each
// protocol's own parser does.
func Classify(b []byte) Class {
	if len(b) == 0 {
		return Unknown
	}
	return byFirst[b[0]]
}

func (c Class) String() string {
	switch c {
	case STUN:
		return "stun"
	case DHT:
		return "dht"
	case KRPC:
		return "krpc"
	case Birthday:
		return "birthday"
	case Sealed:
		return "sealed"
	}
	return "unknown"
}

// Handler takes one datagram of the class it was registered for. It runs
// on the read loop of the socket the datagram arrived on, so it must not
// block; a node has a socket per address family, so it may run on two
// loops at once. b is the loop's buffer: copy what you keep.
type Handler func(b []byte, from netip.AddrPort)

// Handlers is the dispatch table of a socket's read loop: at most one
// Handler per class. The zero value has none. Handle and Dispatch may run
// at the same time: a layer registers when it starts and removes its
// handler when it closes, while the loop goes on reading.
type Handlers struct {
	by [numClasses]atomic.Pointer[Handler]
}

// Handle makes h the handler of class c, replacing any before it; a nil h
// removes it. Registering for Unknown is a programming error and panics.
func (t *Handlers) Handle(c Class, h Handler) {
	if c == Unknown || c >= numClasses {
		panic("demux: no handler can take class " + c.String())
	}
	if h == nil {
		t.by[c].Store(nil)
		return
	}
	t.by[c].Store(&h)
}

// Dispatch hands b, already classified as c (Classify, once, by the read
// loop), to the handler of c and reports whether there was one. The caller
// counts the datagrams nobody took.
func (t *Handlers) Dispatch(c Class, b []byte, from netip.AddrPort) bool {
	if c >= numClasses {
		return false
	}
	h := t.by[c].Load()
	if h == nil {
		return false
	}
	(*h)(b, from)
	return true
}
