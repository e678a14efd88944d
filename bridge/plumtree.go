package bridge

import (
	"slices"
	"time"
)

// Broadcast of puts between swarmdb nodes over a spanning tree: Plumtree
// (Leitão, Pereira, Rodrigues, "Epidemic Broadcast Trees", SRDS 2007).
//
// Every link starts eager: a new put is pushed in full on it. A copy of a
// put that arrives again on an eager link means the link is not needed for
// the tree: the receiver prunes it (tells the sender "prune", and both sides
// keep it lazy). On a lazy link a put is only announced, in a short "ihave"
// list of (key, message id) sent a moment later, batched. A node that hears
// of a put only lazily waits GraftTimeout for it to come down the tree; if
// it does not, the tree is broken above it (a link or a node went away):
// it grafts the announcer ("graft": make the link eager and send me that
// put), and tries the next announcer GraftTimeout/2 later if that one fails
// too. The links settle into a tree along the fastest paths, the rest carry
// only announcements, and a broken branch heals through them.
//
// A graft is held back while puts keep arriving on eager links (within the
// last GraftTimeout): the tree above us is alive, the put is queued
// behind others (an announcement is a few bytes and overtakes a backlog of
// puts), and grafting it would only add a copy and turn a link eager that
// the next copy prunes again. Measured on 16 nodes written to faster than
// they deliver: 21 grafts and 3.2 dropped copies per delivered put without
// this rule. A held-back graft goes out after maxGraftWait all the same.
//
// Nodes that speak an older swarmdb protocol, and ToolDb peers, are sent
// every put as before. Anti-entropy (sync.go) stays as the backstop.
//
// plumtree holds the per-link modes and the puts heard of but not yet
// received. It is a pure state machine: time is an input, and it returns
// the grafts to send; Peer is a type parameter so that tests can use plain
// names.
type plumtree[P comparable] struct {
	lazy    map[P]bool                  // links in lazy mode; the others are eager
	missing map[treeItem]*missingPut[P] // announced, not received
	order   []treeItem                  // missing, oldest first (deterministic ticks)
	timeout time.Duration
	// lastEager is when a put last arrived on an eager link.
	lastEager time.Time
}

// maxGraftWait bounds, in graft timeouts, how long a graft is held back
// while the tree delivers other puts.
const maxGraftWait = 10

// treeItem names one broadcast put: its key and message id (a put keeps its
// id on every hop).
type treeItem struct{ key, id string }

// missingPut is a put announced to us lazily that has not arrived.
type missingPut[P comparable] struct {
	announcers []P // in the order their "ihave" came
	first, due time.Time
}

func newPlumtree[P comparable](timeout time.Duration) *plumtree[P] {
	return &plumtree[P]{lazy: map[P]bool{}, missing: map[treeItem]*missingPut[P]{}, timeout: timeout}
}

// eager says whether puts go to p in full.
func (t *plumtree[P]) eager(p P) bool { return !t.lazy[p] }

// received records that a put arrived from p (the first copy): p's link
// is part of the tree, and no graft is due for it any more.
func (t *plumtree[P]) received(p P, it treeItem, now time.Time) {
	delete(t.lazy, p)
	t.lastEager = now
	t.forget(it)
}

// forget drops a missing put (it arrived by whatever way).
func (t *plumtree[P]) forget(it treeItem) {
	if _, ok := t.missing[it]; ok {
		delete(t.missing, it)
		t.order = slices.DeleteFunc(t.order, func(x treeItem) bool { return x == it })
	}
}

// duplicate records that another copy of a put arrived on p's link. It
// reports whether p must be told to prune the link (it was eager).
func (t *plumtree[P]) duplicate(p P, now time.Time) (prune bool) {
	if t.lazy[p] {
		return false
	}
	t.lastEager = now
	t.lazy[p] = true
	return true
}

// prune: p asked us to stop pushing puts to it in full.
func (t *plumtree[P]) prune(p P) { t.lazy[p] = true }

// graft: p asked for puts in full again.
func (t *plumtree[P]) graft(p P) { delete(t.lazy, p) }

// ihave records that p announced a put we have not received: the first
// announcement starts its graft timer.
func (t *plumtree[P]) ihave(p P, it treeItem, now time.Time) {
	m := t.missing[it]
	if m == nil {
		m = &missingPut[P]{first: now, due: now.Add(t.timeout)}
		t.missing[it] = m
		t.order = append(t.order, it)
	}
	if !slices.Contains(m.announcers, p) {
		m.announcers = append(m.announcers, p)
	}
}

// graftReq is a graft to send: ask to for the put it.
type graftReq[P comparable] struct {
	to P
	it treeItem
}

// tick returns the grafts due at now, each to the first announcer not yet
// tried, whose link becomes eager; a put whose announcers are all tried is
// given up (anti-entropy will bring it). While the tree delivers (a put
// arrived on an eager link within the timeout) grafts are held back, for
// at most maxGraftWait timeouts. It also returns when the next graft falls
// due (zero: none).
func (t *plumtree[P]) tick(now time.Time) (grafts []graftReq[P], next time.Time) {
	keep := t.order[:0]
	for _, it := range t.order {
		m := t.missing[it]
		if m.due.After(now) {
			keep = append(keep, it)
			if next.IsZero() || m.due.Before(next) {
				next = m.due
			}
			continue
		}
		if len(m.announcers) == 0 {
			delete(t.missing, it)
			continue
		}
		if now.Sub(t.lastEager) < t.timeout && now.Sub(m.first) < maxGraftWait*t.timeout {
			m.due = now.Add(t.timeout / 2)
			keep = append(keep, it)
			if next.IsZero() || m.due.Before(next) {
				next = m.due
			}
			continue
		}
		p := m.announcers[0]
		m.announcers = m.announcers[1:]
		delete(t.lazy, p)
		grafts = append(grafts, graftReq[P]{to: p, it: it})
		m.due = now.Add(t.timeout / 2)
		keep = append(keep, it)
		if next.IsZero() || m.due.Before(next) {
			next = m.due
		}
	}
	t.order = keep
	return grafts, next
}

// down forgets p's link.
func (t *plumtree[P]) down(p P) {
	delete(t.lazy, p)
	for _, m := range t.missing {
		m.announcers = slices.DeleteFunc(m.announcers, func(a P) bool { return a == p })
	}
}

// size returns the links in lazy mode and the puts waiting for a graft.
func (t *plumtree[P]) size() (lazy, missing int) { return len(t.lazy), len(t.missing) }
