package bridge

import "testing"

// TestSubscriptionsTable follows one table through a subscribe, its answer, pushes, a
// resubscribe, the limit and a peer's end.
func TestSubscriptionsTable(t *testing.T) {
	s := newSubscriptions()
	p, q := &Peer{}, &Peer{}

	if had, full := s.add(p, "k", 2); had || full {
		t.Fatalf("first add: had %v full %v", had, full)
	}
	if got := s.lastSent(p, "k"); got != subPending {
		t.Fatalf("lastSent while the answer is on its way = %q", got)
	}
	// A change stored before the answer is held back, and marked.
	if got := s.pushTargets("k", "h1", true); len(got) != 0 {
		t.Fatalf("pushTargets while pending = %v", got)
	}
	if !s.settle(p, "k", "h0") {
		t.Fatal("settle: the change meanwhile was not reported")
	}
	s.sent(p, "k", "h1")
	// What the subscriber holds is not pushed again; what it lacks is.
	if got := s.pushTargets("k", "h1", true); len(got) != 0 {
		t.Fatalf("pushTargets of what it holds = %v", got)
	}
	if got := s.pushTargets("k", "h2", true); len(got) != 1 || got[0] != p {
		t.Fatalf("pushTargets of a change = %v", got)
	}
	if got := s.lastSent(p, "k"); got != "h2" {
		t.Fatalf("lastSent after a push = %q", got)
	}
	// A CRDT change goes out every time, and is not noted.
	if got := s.pushTargets("k", "c", false); len(got) != 1 {
		t.Fatalf("pushTargets of a CRDT change = %v", got)
	}
	if had, full := s.add(p, "k", 2); !had || full {
		t.Fatalf("resubscribe: had %v full %v", had, full)
	}
	if got := s.lastSent(p, "k"); got != "h2" {
		t.Fatalf("a resubscribe reset lastSent to %q", got)
	}
	if had, full := s.add(p, "k2", 2); had || full {
		t.Fatalf("second key: had %v full %v", had, full)
	}
	if had, full := s.add(p, "k3", 2); had || !full {
		t.Fatalf("over the limit: had %v full %v", had, full)
	}
	if had, full := s.add(q, "k", 2); had || full {
		t.Fatalf("another peer: had %v full %v", had, full)
	}
	if s.count(p) != 2 || s.count(q) != 1 {
		t.Fatalf("count = %d, %d; want 2, 1", s.count(p), s.count(q))
	}

	s.drop(p)
	if s.count(p) != 0 || s.lastSent(p, "k") != "" || s.settle(p, "k", "") {
		t.Fatal("a dropped peer is still subscribed")
	}
	if _, ok := s.last["k2"]; ok {
		t.Fatal("a key nobody is subscribed to is kept")
	}
	if s.count(q) != 1 || s.lastSent(q, "k") != subPending {
		t.Fatal("dropping one peer changed another's subscription")
	}
}
