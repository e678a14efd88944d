package dht

import (
	"net/netip"
	"slices"
	"time"
)

// contact is a persistent node in the routing table.
type contact struct {
	id       ID
	addr     netip.AddrPort
	lastSeen time.Time
}

// routingTable is a Kademlia routing table (Maymounkov & Mazières 2002):
// one bucket per shared-prefix length with the local id, each holding at
// most k contacts ordered from least to most recently seen. A full bucket
// does not drop its oldest contact for a newcomer; it asks for the oldest
// to be pinged first and keeps it if it answers (ping-before-evict, §2.2 of
// the paper: old nodes that stayed up are likely to stay up).
//
// Only persistent nodes (ids verified against their address) enter it. Not
// safe for concurrent use; the node guards it.
type routingTable struct {
	self    ID
	k       int
	buckets [IDSize*8 + 1]kbucket
	size    int
}

type kbucket struct {
	contacts []*contact // least recently seen first
	pending  *contact   // newcomer waiting on a ping of contacts[0]
	touched  time.Time  // last time a lookup or contact touched the bucket
}

func newRoutingTable(self ID, k int) *routingTable {
	return &routingTable{self: self, k: k}
}

func (t *routingTable) bucketOf(id ID) *kbucket {
	return &t.buckets[commonPrefixLen(t.self, id)]
}

// seen records that the node id at addr answered or sent a valid request.
// When its bucket is full it returns the bucket's oldest contact, which the
// caller should ping; the newcomer replaces it only if that ping fails.
func (t *routingTable) seen(id ID, addr netip.AddrPort, now time.Time) (pingOldest *contact) {
	if id == t.self {
		return nil
	}
	b := t.bucketOf(id)
	b.touched = now
	for i, c := range b.contacts {
		if c.id == id {
			c.addr, c.lastSeen = addr, now
			b.contacts = append(append(b.contacts[:i:i], b.contacts[i+1:]...), c)
			return nil
		}
	}
	nc := &contact{id: id, addr: addr, lastSeen: now}
	if len(b.contacts) < t.k {
		b.contacts = append(b.contacts, nc)
		t.size++
		return nil
	}
	if b.pending != nil {
		b.pending = nc // newest newcomer wins the slot; a ping is already out
		return nil
	}
	b.pending = nc
	return b.contacts[0]
}

// failed reports that the contact with id did not answer. It is removed and
// a pending newcomer takes its place.
func (t *routingTable) failed(id ID) {
	b := t.bucketOf(id)
	for i, c := range b.contacts {
		if c.id != id {
			continue
		}
		b.contacts = slices.Delete(b.contacts, i, i+1)
		t.size--
		if b.pending != nil {
			b.contacts = append(b.contacts, b.pending)
			b.pending = nil
			t.size++
		}
		return
	}
}

// alive reports that the oldest contact answered its eviction ping: it
// stays and the pending newcomer is dropped.
func (t *routingTable) alive(id ID, now time.Time) {
	b := t.bucketOf(id)
	b.pending = nil
	for i, c := range b.contacts {
		if c.id == id {
			c.lastSeen = now
			b.contacts = append(append(b.contacts[:i:i], b.contacts[i+1:]...), c)
			return
		}
	}
}

// closest returns up to n contacts closest to target, nearest first.
func (t *routingTable) closest(target ID, n int) []*contact {
	out := make([]*contact, 0, t.size)
	for i := range t.buckets {
		out = append(out, t.buckets[i].contacts...)
	}
	slices.SortFunc(out, func(a, b *contact) int {
		if Closer(target, a.id, b.id) {
			return -1
		}
		if Closer(target, b.id, a.id) {
			return 1
		}
		return 0
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// oldest returns up to n contacts not seen for at least age, oldest first,
// for the liveness pings of table maintenance.
func (t *routingTable) oldest(n int, age time.Duration, now time.Time) []*contact {
	var out []*contact
	for i := range t.buckets {
		for _, c := range t.buckets[i].contacts {
			if now.Sub(c.lastSeen) >= age {
				out = append(out, c)
			}
		}
	}
	slices.SortFunc(out, func(a, b *contact) int { return a.lastSeen.Compare(b.lastSeen) })
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// staleBucket returns a random id inside the first non-empty bucket nobody
// touched for age, for a refresh lookup, and whether there was one.
func (t *routingTable) staleBucket(age time.Duration, now time.Time, random ID) (ID, bool) {
	for i := 0; i < IDSize*8; i++ {
		b := &t.buckets[i]
		if len(b.contacts) == 0 || now.Sub(b.touched) < age {
			continue
		}
		b.touched = now
		return idInBucket(t.self, i, random), true
	}
	return ID{}, false
}

// idInBucket returns an id that shares exactly prefix bits with self,
// taking the remaining bits from random.
func idInBucket(self ID, prefix int, random ID) ID {
	id := random
	for bit := 0; bit <= prefix && bit < IDSize*8; bit++ {
		mask := byte(0x80 >> (bit % 8))
		v := self[bit/8] & mask
		if bit == prefix {
			v ^= mask // first differing bit
		}
		id[bit/8] = id[bit/8]&^mask | v
	}
	return id
}

// touch marks the bucket a lookup for target went through as fresh.
func (t *routingTable) touch(target ID, now time.Time) { t.bucketOf(target).touched = now }

// len returns the number of contacts.
func (t *routingTable) len() int { return t.size }

// all returns every contact address.
func (t *routingTable) all() []netip.AddrPort {
	out := make([]netip.AddrPort, 0, t.size)
	for i := range t.buckets {
		for _, c := range t.buckets[i].contacts {
			out = append(out, c.addr)
		}
	}
	return out
}

// has reports whether id is in the table.
func (t *routingTable) has(id ID) bool {
	for _, c := range t.bucketOf(id).contacts {
		if c.id == id {
			return true
		}
	}
	return false
}

// hasAddr reports whether a contact at addr is in the table.
func (t *routingTable) hasAddr(addr netip.AddrPort) bool { return t.has(NodeID(addr)) }
