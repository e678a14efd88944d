package mainline

import (
	"net/netip"
	"testing"
	"time"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// TestPeerStoreKeysByAddrPort: two peers on one IP are two entries (the
// released in-memory store keeps one per IP), and what is stored comes
// back, newest first.
func TestPeerStoreKeysByAddrPort(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newPeerStore(time.Minute, 8, 8, 8, nil)
	ih := TopicInfohash("a")
	s.add(ih, ap("127.0.0.1:9000"), t0)
	s.add(ih, ap("127.0.0.1:9001"), t0.Add(time.Second))
	got := s.get(ih, t0.Add(2*time.Second))
	if len(got) != 2 || got[0] != ap("127.0.0.1:9001") || got[1] != ap("127.0.0.1:9000") {
		t.Fatalf("get = %v, want both ports newest first", got)
	}
	if s.get(TopicInfohash("b"), t0) != nil {
		t.Fatal("an infohash nobody announced has peers")
	}
}

// TestPeerStoreTTL: an entry lives ttl after its latest announce.
func TestPeerStoreTTL(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newPeerStore(time.Minute, 8, 8, 8, nil)
	ih := TopicInfohash("a")
	s.add(ih, ap("10.0.0.1:1"), t0)
	s.add(ih, ap("10.0.0.2:1"), t0.Add(30*time.Second))
	s.add(ih, ap("10.0.0.1:1"), t0.Add(50*time.Second)) // refreshed
	if got := s.get(ih, t0.Add(80*time.Second)); len(got) != 2 {
		t.Fatalf("at 80 s: %v, want both (refreshed at 50 s, announced at 30 s)", got)
	}
	if got := s.get(ih, t0.Add(100*time.Second)); len(got) != 1 || got[0] != ap("10.0.0.1:1") {
		t.Fatalf("at 100 s: %v, want only the refreshed one", got)
	}
	if got := s.get(ih, t0.Add(111*time.Second)); got != nil {
		t.Fatalf("at 111 s: %v, want none", got)
	}
	if h, p, _ := s.counts(); h != 0 || p != 0 {
		t.Fatalf("after expiry: %d infohashes, %d peers stored", h, p)
	}
}

// TestPeerStoreCaps: per-infohash, per-reply and infohash caps hold, and
// the entries evicted are the oldest.
func TestPeerStoreCaps(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const maxHashes, maxPer, maxValues = 4, 3, 2
	s := newPeerStore(time.Hour, maxHashes, maxPer, maxValues, nil)
	ih := TopicInfohash("a")
	for i := range 10 {
		s.add(ih, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 1), t0.Add(time.Duration(i)*time.Second))
	}
	if _, p, _ := s.counts(); p != maxPer {
		t.Fatalf("%d peers stored for one infohash, cap %d", p, maxPer)
	}
	got := s.get(ih, t0.Add(time.Minute))
	if len(got) != maxValues || got[0] != ap("10.0.0.9:1") || got[1] != ap("10.0.0.8:1") {
		t.Fatalf("get = %v, want the newest %d", got, maxValues)
	}
	for i := range 10 {
		s.add(TopicInfohash(string(rune('b'+i))), ap("10.0.1.1:1"), t0.Add(time.Duration(20+i)*time.Second))
	}
	h, p, _ := s.counts()
	if h != maxHashes || p > maxHashes*maxPer {
		t.Fatalf("%d infohashes and %d peers stored, caps %d and %d", h, p, maxHashes, maxHashes*maxPer)
	}
	if s.get(ih, t0.Add(time.Minute)) != nil {
		t.Fatal("the stalest infohash survived eviction")
	}
	if s.get(TopicInfohash("k"), t0.Add(time.Minute)) == nil {
		t.Fatal("the newest infohash was evicted")
	}
}
