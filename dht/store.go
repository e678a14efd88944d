package dht

import (
	"crypto/ed25519"
	"math/rand/v2"
	"net/netip"
	"time"
)

// recordStore holds the peer records announced to this node, with expiry
// and bounds. Not safe for concurrent use; the node guards it.
//
// Bounds: at most maxPerTopic records per topic, evicting the record
// closest to expiry when a new announcer arrives (so a flood of fresh keys
// cannot pin a topic forever, and honest announcers that refresh win back
// their place); at most maxTotal records in all, refusing new records (but
// accepting refreshes) beyond that.
type recordStore struct {
	ttl         time.Duration
	maxPerTopic int
	maxTotal    int
	total       int
	topics      map[ID]map[[ed25519.PublicKeySize]byte]*storedRecord
	forwards    map[[ed25519.PublicKeySize]byte]forward
}

type storedRecord struct {
	rec     PeerRecord
	expires time.Time
}

// forward remembers where an announcer's packets came from, so this node
// can relay signaling to it (the announcer keeps the NAT pinhole open).
type forward struct {
	addr    netip.AddrPort
	expires time.Time
}

func newRecordStore(ttl time.Duration, maxPerTopic, maxTotal int) *recordStore {
	return &recordStore{
		ttl:         ttl,
		maxPerTopic: maxPerTopic,
		maxTotal:    maxTotal,
		topics:      make(map[ID]map[[ed25519.PublicKeySize]byte]*storedRecord),
		forwards:    make(map[[ed25519.PublicKeySize]byte]forward),
	}
}

func keyOf(pub ed25519.PublicKey) (k [ed25519.PublicKeySize]byte) {
	copy(k[:], pub)
	return k
}

// put stores or refreshes rec under topic, announced from addr. It reports
// whether the record is stored.
func (s *recordStore) put(topic ID, rec PeerRecord, from netip.AddrPort, now time.Time) bool {
	k := keyOf(rec.PublicKey)
	expires := now.Add(s.ttl)
	if len(s.forwards) < s.maxTotal || s.forwards[k].addr.IsValid() {
		s.forwards[k] = forward{addr: from, expires: expires}
	}
	recs := s.topics[topic]
	if old := recs[k]; old != nil {
		old.rec, old.expires = rec, expires
		return true
	}
	if s.total >= s.maxTotal {
		return false
	}
	if recs == nil {
		recs = make(map[[ed25519.PublicKeySize]byte]*storedRecord)
		s.topics[topic] = recs
	}
	if len(recs) >= s.maxPerTopic {
		var victim [ed25519.PublicKeySize]byte
		var first time.Time
		for vk, v := range recs {
			if first.IsZero() || v.expires.Before(first) {
				victim, first = vk, v.expires
			}
		}
		delete(recs, victim)
		s.total--
	}
	recs[k] = &storedRecord{rec: rec, expires: expires}
	s.total++
	return true
}

// remove deletes pub's record on topic.
func (s *recordStore) remove(topic ID, pub ed25519.PublicKey) {
	recs := s.topics[topic]
	k := keyOf(pub)
	if recs[k] == nil {
		return
	}
	delete(recs, k)
	s.total--
	if len(recs) == 0 {
		delete(s.topics, topic)
	}
}

// get returns up to limit live records of topic, in random order so that
// a lookup answered by many nodes sees many different peers.
func (s *recordStore) get(topic ID, limit int, now time.Time) []PeerRecord {
	var out []PeerRecord
	for _, r := range s.topics[topic] {
		if now.Before(r.expires) {
			out = append(out, r.rec)
		}
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

// forwardFor returns the address pub announced from, if it is still fresh.
func (s *recordStore) forwardFor(pub []byte, now time.Time) (netip.AddrPort, bool) {
	if len(pub) != ed25519.PublicKeySize {
		return netip.AddrPort{}, false
	}
	f, ok := s.forwards[keyOf(pub)]
	if !ok || !now.Before(f.expires) {
		return netip.AddrPort{}, false
	}
	return f.addr, true
}

// gc drops expired records and forwards.
func (s *recordStore) gc(now time.Time) {
	for topic, recs := range s.topics {
		for k, r := range recs {
			if !now.Before(r.expires) {
				delete(recs, k)
				s.total--
			}
		}
		if len(recs) == 0 {
			delete(s.topics, topic)
		}
	}
	for k, f := range s.forwards {
		if !now.Before(f.expires) {
			delete(s.forwards, k)
		}
	}
}

// count returns the number of stored records and topics.
func (s *recordStore) count() (records, topics int) { return s.total, len(s.topics) }
