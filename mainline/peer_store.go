package mainline

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/anacrolix/dht/v2/krpc"
	peer_store "github.com/anacrolix/dht/v2/peer-store"
)

// peerStore keeps the peers announced to this node (announce_peer) so that
// get_peers can return them. It replaces the library's stores: with none,
// the node hands out no tokens and stores nothing, so discovery-channel
// nodes never announce to it; the in-memory one of the released versions
// keys by IP and returns no IPv4 peers at all (shared/reference/mainline.md
// §3.3).
//
// Entries are keyed by ip:port, so several peers behind one address (or on
// one test host) are kept apart. Every entry expires after ttl unless
// announced again (BEP 5 leaves the time to the node; libtorrent uses 30
// min, and announcers repeat every 15-30). Memory is bounded by the caps:
// beyond maxPerHash peers for one infohash the oldest entry goes, beyond
// maxHashes infohashes the one announced to least recently goes, so a
// flood of forged announces from many addresses costs at most
// maxHashes×maxPerHash entries.
type peerStore struct {
	// Immutable after newPeerStore.
	ttl        time.Duration
	maxHashes  int
	maxPerHash int
	maxValues  int
	now        func() time.Time

	// Guarded by mu.
	mu     sync.Mutex
	hashes map[Infohash]*storedSwarm
	peers  int    // entries across all hashes
	added  uint64 // announces stored
}

type storedSwarm struct {
	expires map[netip.AddrPort]time.Time
	last    time.Time // of the latest announce
}

var _ peer_store.Interface = (*peerStore)(nil)

func newPeerStore(ttl time.Duration, maxHashes, maxPerHash, maxValues int, now func() time.Time) *peerStore {
	return &peerStore{
		ttl: ttl, maxHashes: maxHashes, maxPerHash: maxPerHash, maxValues: maxValues, now: now,
		hashes: make(map[Infohash]*storedSwarm),
	}
}

// AddPeer implements peer_store.Interface; the library calls it for every
// announce_peer with a valid token.
func (s *peerStore) AddPeer(ih peer_store.InfoHash, na krpc.NodeAddr) {
	addr, ok := netip.AddrFromSlice(na.IP)
	if !ok || na.Port <= 0 || na.Port > 65535 {
		return
	}
	s.add(Infohash(ih), netip.AddrPortFrom(addr.Unmap(), uint16(na.Port)), s.now())
}

// GetPeers implements peer_store.Interface: the live peers of ih, the
// most recently announced first, at most maxValues (BEP 5 replies must fit
// one datagram).
func (s *peerStore) GetPeers(ih peer_store.InfoHash) []krpc.NodeAddr {
	peers := s.get(Infohash(ih), s.now())
	out := make([]krpc.NodeAddr, len(peers))
	for i, p := range peers {
		out[i] = krpc.NodeAddr{IP: net.IP(p.Addr().AsSlice()), Port: int(p.Port())}
	}
	return out
}

func (s *peerStore) add(ih Infohash, addr netip.AddrPort, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sw := s.hashes[ih]
	if sw == nil {
		if len(s.hashes) >= s.maxHashes {
			s.evictHashLocked(now)
		}
		sw = &storedSwarm{expires: make(map[netip.AddrPort]time.Time)}
		s.hashes[ih] = sw
	}
	if _, ok := sw.expires[addr]; !ok {
		s.expireLocked(sw, now)
		if len(sw.expires) >= s.maxPerHash {
			s.dropOldestLocked(sw)
		}
		s.peers++
	}
	sw.expires[addr] = now.Add(s.ttl)
	sw.last = now
	s.added++
}

func (s *peerStore) get(ih Infohash, now time.Time) []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	sw := s.hashes[ih]
	if sw == nil {
		return nil
	}
	s.expireLocked(sw, now)
	if len(sw.expires) == 0 {
		delete(s.hashes, ih)
		return nil
	}
	out := make([]netip.AddrPort, 0, len(sw.expires))
	for a := range sw.expires {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return sw.expires[b].Compare(sw.expires[a]) })
	return out[:min(len(out), s.maxValues)]
}

// expireLocked drops the expired entries of sw.
func (s *peerStore) expireLocked(sw *storedSwarm, now time.Time) {
	for a, exp := range sw.expires {
		if !now.Before(exp) {
			delete(sw.expires, a)
			s.peers--
		}
	}
}

// dropOldestLocked drops the entry of sw that expires first.
func (s *peerStore) dropOldestLocked(sw *storedSwarm) {
	var oldest netip.AddrPort
	var at time.Time
	for a, exp := range sw.expires {
		if !oldest.IsValid() || exp.Before(at) {
			oldest, at = a, exp
		}
	}
	if oldest.IsValid() {
		delete(sw.expires, oldest)
		s.peers--
	}
}

// evictHashLocked makes room for one more infohash: it drops every swarm
// whose entries all expired (no announce for ttl: every entry expires at
// most ttl after the latest) and, if none did, the one announced to least
// recently. It costs one pass over the infohashes, not over their peers.
func (s *peerStore) evictHashLocked(now time.Time) {
	var stalest Infohash
	var stalestAt time.Time
	found := false
	for ih, sw := range s.hashes {
		if !now.Before(sw.last.Add(s.ttl)) {
			s.peers -= len(sw.expires)
			delete(s.hashes, ih)
			continue
		}
		if !found || sw.last.Before(stalestAt) {
			stalest, stalestAt, found = ih, sw.last, true
		}
	}
	if len(s.hashes) < s.maxHashes || !found {
		return
	}
	s.peers -= len(s.hashes[stalest].expires)
	delete(s.hashes, stalest)
}

// counts returns the stored infohashes and peers, and announces stored.
func (s *peerStore) counts() (hashes, peers int, added uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.hashes), s.peers, s.added
}
