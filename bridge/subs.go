package bridge

import (
	"fmt"
	"sync"

	"github.com/swarmdb/swarmdb/db"
)

// Subscriptions: who is subscribed to which key, the answer to a subscribe, and the pushes of
// the changes that follow (ToolDb's subscribe, reference §2).

// Markers in subscriptions.last while a subscribe's answer is on its way: subPending, and
// subPendingChanged once the store changed the key meanwhile.
const (
	subPending        = "\x00pending"
	subPendingChanged = "\x00pending, changed"
)

// subscriptions is the one owner of the subscription state: the bridge keeps it, peers hold
// no copy. Its lock is a leaf: nothing else is locked while it is held, and it is taken while
// no other lock of the bridge is held.
type subscriptions struct {
	mu sync.Mutex // guards the fields below
	// last: the subscribed peers by key, each with the last plain record it was sent (h+s),
	// "" for none or a CRDT, or a pending marker.
	last map[string]map[*Peer]string
	// byPeer: the keys each peer is subscribed to (the same subscriptions, indexed the other
	// way, to count them and to drop a peer's).
	byPeer map[*Peer]map[string]struct{}
}

func newSubscriptions() *subscriptions {
	return &subscriptions{last: map[string]map[*Peer]string{}, byPeer: map[*Peer]map[string]struct{}{}}
}

// add subscribes p to key, pending its answer, unless p is subscribed to it already (had) or
// to max keys (full).
func (s *subscriptions) add(p *Peer, key string, max int) (had, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.byPeer[p]
	if _, had = keys[key]; had {
		return true, false
	}
	if len(keys) >= max {
		return false, true
	}
	if keys == nil {
		keys = map[string]struct{}{}
		s.byPeer[p] = keys
	}
	keys[key] = struct{}{}
	if s.last[key] == nil {
		s.last[key] = map[*Peer]string{}
	}
	s.last[key][p] = subPending
	return false, false
}

// lastSent returns what p's subscription to key was last sent (see subscriptions.last).
func (s *subscriptions) lastSent(p *Peer, key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last[key][p]
}

// count returns how many keys p is subscribed to.
func (s *subscriptions) count(p *Peer) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byPeer[p])
}

// drop ends every subscription of p.
func (s *subscriptions) drop(p *Peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.byPeer[p] {
		if m := s.last[k]; m != nil {
			delete(m, p)
			if len(m) == 0 {
				delete(s.last, k)
			}
		}
	}
	delete(s.byPeer, p)
}

// pushTargets returns the subscribers of key to push a change to, and notes what they are
// sent: hk, the change's h+s when plain is set (a plain record). Subscribers waiting for the
// answer to their subscribe are not pushed to but marked, so settle sends them what changed.
func (s *subscriptions) pushTargets(key, hk string, plain bool) []*Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	subs := s.last[key]
	targets := make([]*Peer, 0, len(subs))
	for p, last := range subs {
		if last == subPending || last == subPendingChanged {
			// The answer to the subscribe goes first; it is sent what
			// changed meanwhile when it is (see settleSub).
			subs[p] = subPendingChanged
			continue
		}
		if plain && last == hk {
			continue // already sent, as the answer to the subscribe
		}
		if plain {
			subs[p] = hk
		}
		targets = append(targets, p)
	}
	return targets
}

// settle ends the wait of p's subscription to key, answered with hk, and reports whether the
// key changed meanwhile.
func (s *subscriptions) settle(p *Peer, key, hk string) (changed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	subs := s.last[key]
	last, ok := subs[p]
	if ok && (last == subPending || last == subPendingChanged) {
		subs[p] = hk
	}
	return ok && last == subPendingChanged
}

// sent notes that p's subscription to key, if it still has one, was sent hk.
func (s *subscriptions) sent(p *Peer, key, hk string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if subs := s.last[key]; subs != nil {
		if _, ok := subs[p]; ok {
			subs[p] = hk
		}
	}
}

func (p *Peer) onSubscribe(m *Message) bool {
	b := p.b
	had, full := b.subs.add(p, m.Key, b.cfg.Limits.MaxSubscriptions)
	if full {
		return p.bad(m.ID, fmt.Errorf("%w: %d", ErrTooManySubscriptions, b.cfg.Limits.MaxSubscriptions))
	}
	// ToolDb answers a subscribe at once with the stored value, under the subscribe id, and
	// its clients wait for that id: the answer goes before any push (a push of a change
	// stored meanwhile is held back until then, see push and settleSub).
	rec, err := b.store.Get(m.Key)
	if err != nil {
		b.settleSub(p, m.Key, "")
		return true
	}
	hk := ""
	if rec.CRDT == "" {
		hk = recordID(&rec)
	}
	// A resubscribe is not sent what it has.
	if !had || hk == "" || b.subs.lastSent(p, m.Key) != hk {
		b.reply(p, m.ID, TypeSubscribe, m.Key, &rec)
	}
	b.settleSub(p, m.Key, hk)
	return true
}

// settleSub ends the wait of p's new subscription to key, answered with the plain record hk
// ("" for none or a CRDT); if the key changed meanwhile, p is sent what the store holds now.
func (b *Bridge) settleSub(p *Peer, key, hk string) {
	if !b.subs.settle(p, key, hk) {
		return
	}
	cur, err := b.store.Get(key)
	if err != nil || cur.CRDT == "" && recordID(&cur) == hk {
		return
	}
	if cur.CRDT == "" {
		b.subs.sent(p, key, recordID(&cur))
	}
	b.pushTo(p, key, &cur, cur.CRDT != "")
}

// push sends a change to every connection subscribed to its key, each with a fresh message id
// (ToolDb reuses the subscribe id and its own clients drop every push after the first).
func (b *Bridge) push(ev *db.Event) {
	key := ev.Record.Key
	plain := ev.Record.CRDT == ""
	for _, p := range b.subs.pushTargets(key, recordID(&ev.Record), plain) {
		b.pushTo(p, key, &ev.Record, ev.Outcome == db.Merged)
	}
}

// pushTo sends p what we hold for key, rec at hand, each message with a fresh id.
func (b *Bridge) pushTo(p *Peer, key string, rec *db.Record, isCRDT bool) {
	for _, m := range b.recordMessages(p, key, rec, isCRDT) {
		m.ID = newID()
		p.send(&m)
		b.stats.pushes.Add(1)
	}
}
