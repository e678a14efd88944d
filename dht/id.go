package dht

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math/bits"
	"net/netip"
)

// IDSize is the size of node ids, topics and keys on the wire: 256 bits.
const IDSize = 32

// ID is a 256-bit identifier in the Kademlia key space: a node id, a topic
// key (SHA-256 of the topic string) or the hash of a public key.
type ID [IDSize]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex digits, for logs.
func (id ID) Short() string { return hex.EncodeToString(id[:4]) }

// Distance returns the Kademlia XOR distance between a and b.
func Distance(a, b ID) ID {
	var d ID
	for i := range d {
		d[i] = a[i] ^ b[i]
	}
	return d
}

// Closer reports whether a is closer to target than b is.
func Closer(target, a, b ID) bool {
	for i := range target {
		da, db := a[i]^target[i], b[i]^target[i]
		if da != db {
			return da < db
		}
	}
	return false
}

// commonPrefixLen returns the number of leading bits a and b share
// (256 when equal). It is the bucket index in the routing table.
func commonPrefixLen(a, b ID) int {
	for i := range a {
		if x := a[i] ^ b[i]; x != 0 {
			return i*8 + bits.LeadingZeros8(x)
		}
	}
	return IDSize * 8
}

// TopicKey returns the topic key of a topic string: its SHA-256.
func TopicKey(topic string) ID { return sha256.Sum256([]byte(topic)) }

// KeyTarget returns the DHT target a peer announces its relays under:
// the SHA-256 of its Ed25519 public key.
func KeyTarget(publicKey []byte) ID { return sha256.Sum256(publicKey) }

// nodeIDDomain separates node ids from every other hash in the protocol.
const nodeIDDomain = "swarmdb/node-id/v1"

// NodeID derives a node's id from its public address, so no node can choose
// where it sits in the key space (Kademlia's Sybil placement defence, as in
// dht-rpc). A node that claims an id is accepted only when the id matches the
// address its packets arrive from.
func NodeID(addr netip.AddrPort) ID {
	h := sha256.New()
	h.Write([]byte(nodeIDDomain))
	ip := addr.Addr().Unmap()
	h.Write(ip.AsSlice())
	var port [2]byte
	binary.BigEndian.PutUint16(port[:], addr.Port())
	h.Write(port[:])
	var id ID
	h.Sum(id[:0])
	return id
}
