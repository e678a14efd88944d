package bridge

import (
	"slices"
	"time"
)

// Broadcast of puts between swarmdb nodes over a spanning tree: Plumtree
// (Leitão, Pereira, Rodrigues, "Epidemic Broadcast Trees", SRDS 2007).
//
// Every link starts eager: a new put is pushed in full on it. A copy of a
// put that arrives again, under the same id, means that link is not needed
// to reach us: the receiver prunes it ("prune": the sender announces puts
// to it from then on instead of pushing them). On a lazy link a put is only
// announced, in a short "ihave" list of (key, put id) sent a moment later,
// batched. A node that hears of a put only lazily waits for it to come down
// the tree; if it does not, the tree is broken above it (a link or a node
// went away): it grafts the announcer ("graft": push to me again, and send
// me that put), and tries the next announcer half a timeout later if that
// one fails too. The links settle into a tree along the fastest paths, the
// rest carry only announcements, and a broken branch heals through them.
//
// Departures from the paper, measured on 64 nodes with MaxPeers 8
// at 60 records/s on two cores (go test -run TestLoad64 ./node/ -load.nodes
// 64 -load.maxpeers 8 ...):
//
//   - A prune stops one direction of a link: the pushes of the peer that
//     sent the copy. The paper makes the whole link lazy, so a node's parent
//     could prune the node's only eager link for a copy that went upward;
//     under load, where the order of arrivals keeps changing, a fifth of the
//     nodes ended with no eager link at all and received by repairs. Here a
//     node only ever prunes the links that bring it puts late, and keeps
//     the one that brought the last first copy.
//   - A copy counts only under the same put id (a relayed put keeps its id
//     on every hop); the same record brought by anti-entropy says nothing
//     about the tree. And a sender is pruned after pruneAfter late copies
//     in a row, not one: a graft answered further up the tree is relayed
//     down branches that have the put already, and one such copy used to
//     prune a good parent, whose children then grafted in turn.
//   - A node keeps minPushers links pushing to it, so a stalled parent
//     does not cost a graft per put.
//   - A "have" from a tree peer waits a graft timeout before its "want"
//     (see deferWant in tree.go).
//
// A graft is held back while puts keep arriving by pushes (within the
// timeout): the tree above us is alive, the put is queued behind others (an
// announcement is a few bytes and overtakes a backlog of puts), and
// grafting it would only add a copy. A held-back graft goes out after
// maxGraftWait timeouts all the same; after our own process stalled (the
// timer fired late), grafts wait one timeout for the queued pushes. The timeout follows the tree's
// measured lag (how much later than its first announcement a put comes
// down the tree): twice a decaying maximum of it, at least GraftTimeout and
// at most maxGraftTimeout.
//
// Nodes that speak an older swarmdb protocol, and ToolDb peers, are sent
// every put as before. Anti-entropy (sync.go) stays as the backstop.
//
// plumtree holds the per-link modes and the puts heard of but not yet
// received. It is a pure state machine: time is an input, and it returns
// the grafts to send; the peer is a type parameter so that tests can use
// plain names.
type plumtree[P comparable] struct {
	// lazy: peers that pruned us; we announce puts to them instead of
	// pushing. pruned: peers we pruned (so one prune per change). late:
	// copies each peer pushed us in a row that we had already.
	lazy, pruned map[P]bool
	late         map[P]int
	links        map[P]bool                  // the links in the tree
	missing      map[treeItem]*missingPut[P] // announced, not received
	order        []orderRef                  // missing, oldest first (deterministic ticks); stale refs are skipped
	seq          uint64                      // numbers missing puts, so a stale ref is told from a new one
	timeout      time.Duration
	// lastPush is when a put last arrived by a push; nextDue is when tick
	// was asked to run next (the timer's deadline); no graft goes out before
	// holdUntil (set after a stall).
	lastPush, nextDue, holdUntil time.Time
	// lag estimates how late puts come down the tree after their first
	// announcement (a maximum that decays); grafted remembers, by put id,
	// when the puts we grafted were first announced, so that their copies
	// from the tree still tell the lag.
	lag          time.Duration
	grafted      map[string]time.Time
	graftedOrder []string
}

// treeItem names one broadcast put: its key and put id (a put keeps its id
// on every hop).
type treeItem struct{ key, id string }

// missingPut is a put announced to us lazily that has not arrived.
type missingPut[P comparable] struct {
	announcers []P // in the order their "ihave" came
	first, due time.Time
	seq        uint64
}

// orderRef is a missing put's place in the order.
type orderRef struct {
	it  treeItem
	seq uint64
}

const (
	// maxGraftWait bounds, in timeouts, how long a graft is held back
	// while pushes keep arriving.
	maxGraftWait = 3
	// maxGraftTimeout caps the adaptive graft timeout: beyond it the
	// repairs of anti-entropy are about as quick.
	maxGraftTimeout = 5 * time.Second
	// graftedMemory bounds the grafted puts remembered for lag samples.
	graftedMemory = 1024
	// starvedGraft: a graft timer that fires this late means the process
	// was starved; the grafts wait for the pushes to be read.
	starvedGraft = 250 * time.Millisecond
	// minPushers: a node keeps at least this many links pushing puts to
	// it. With one, any stall of its parent (a node starved of CPU, a link
	// cut) is repaired only by grafts, one per put missed; with two, a
	// put comes about twice and most stalls are bridged. Measured on 64
	// nodes with MaxPeers 8 at 60 records/s on two cores: with one,
	// nodes grafted up to 700 of 1500 records and p99 was 14 s.
	minPushers = 2
	// pruneAfter: a peer is pruned after this many copies in a row that we
	// had already, not after one: a parent whose copy is late now and then
	// (a graft answered further up, a stall) stays our parent.
	pruneAfter = 3
)

func newPlumtree[P comparable](timeout time.Duration) *plumtree[P] {
	return &plumtree[P]{
		lazy: map[P]bool{}, pruned: map[P]bool{}, late: map[P]int{}, links: map[P]bool{}, missing: map[treeItem]*missingPut[P]{},
		timeout: timeout, grafted: map[string]time.Time{},
	}
}

// eager says whether puts go to p in full.
func (t *plumtree[P]) eager(p P) bool { return !t.lazy[p] }

// graftTimeout is the wait before a graft now: twice the measured lag,
// within [timeout, maxGraftTimeout].
func (t *plumtree[P]) graftTimeout() time.Duration {
	return min(max(t.timeout, 2*t.lag), max(t.timeout, maxGraftTimeout))
}

// sample takes one measurement of the tree's lag: a new maximum at once, a
// smaller value slowly (1/32 of the way).
func (t *plumtree[P]) sample(d time.Duration) {
	if d < 0 {
		return
	}
	if d > t.lag {
		t.lag = d
		return
	}
	t.lag -= (t.lag - d) / 32
}

// received records that the first copy of a put was pushed to us by p: no
// graft is due for it any more, and p's pushes are wanted (a prune of ours
// it has not applied yet is forgotten, so a later copy prunes again).
func (t *plumtree[P]) received(p P, it treeItem, now time.Time) {
	delete(t.pruned, p)
	delete(t.late, p)
	t.lastPush = now
	if m := t.missing[it]; m != nil {
		t.sample(now.Sub(m.first))
	}
	t.forget(it)
}

// forget drops a missing put (it arrived by whatever way); its ref in the
// order is dropped by the next tick.
func (t *plumtree[P]) forget(it treeItem) { delete(t.missing, it) }

// duplicate records that p pushed us another copy of put id. It reports
// whether to prune p (tell it to stop pushing to us): after pruneAfter
// such copies in a row, once.
func (t *plumtree[P]) duplicate(p P, id string, now time.Time) (prune bool) {
	t.lastPush = now
	if first, ok := t.grafted[id]; ok {
		delete(t.grafted, id)
		t.sample(now.Sub(first))
	}
	if t.pruned[p] {
		return false
	}
	if t.late[p]++; t.late[p] < pruneAfter || len(t.links)-len(t.pruned) <= minPushers {
		return false
	}
	delete(t.late, p)
	t.pruned[p] = true
	return true
}

// prune: p asked us to stop pushing puts to it.
func (t *plumtree[P]) prune(p P) { t.lazy[p] = true }

// graft: p asked for puts in full again.
func (t *plumtree[P]) graft(p P) { delete(t.lazy, p) }

// ihave records that p announced a put we have not received: the first
// announcement starts its graft timer.
func (t *plumtree[P]) ihave(p P, it treeItem, now time.Time) {
	m := t.missing[it]
	if m == nil {
		t.seq++
		m = &missingPut[P]{first: now, due: now.Add(t.graftTimeout()), seq: t.seq}
		t.missing[it] = m
		t.order = append(t.order, orderRef{it: it, seq: t.seq})
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
// tried (whose pushes we then want again); a put whose announcers are all
// tried is given up (anti-entropy will bring it). While pushes keep
// arriving (within the timeout) grafts are held back, for at most
// maxGraftWait timeouts. It also returns when the next graft falls due
// (zero: none).
func (t *plumtree[P]) tick(now time.Time) (grafts []graftReq[P], next time.Time) {
	keep := t.order[:0]
	wait := t.graftTimeout()
	if !t.nextDue.IsZero() && now.Sub(t.nextDue) > starvedGraft {
		// The timer ran late: the process was starved of CPU, and so were
		// the readers of the pushes that are surely queued by now. Give
		// them a timeout to catch up before grafting anything.
		t.holdUntil = now.Add(wait)
	}
	defer func() { t.nextDue = next }()
	later := func(m *missingPut[P], at time.Time) {
		m.due = at
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	for _, ref := range t.order {
		it := ref.it
		m := t.missing[it]
		if m == nil || m.seq != ref.seq {
			continue // it arrived meanwhile
		}
		if m.due.After(now) {
			keep = append(keep, ref)
			later(m, m.due)
			continue
		}
		if len(m.announcers) == 0 {
			delete(t.missing, it)
			continue
		}
		keep = append(keep, ref)
		if now.Before(t.holdUntil) || now.Sub(t.lastPush) < wait && now.Sub(m.first) < maxGraftWait*wait {
			later(m, now.Add(wait/2))
			continue
		}
		p := m.announcers[0]
		m.announcers = m.announcers[1:]
		delete(t.pruned, p)
		grafts = append(grafts, graftReq[P]{to: p, it: it})
		t.rememberGraft(it.id, m.first)
		later(m, now.Add(wait/2))
	}
	clear(t.order[len(keep):]) // let go of the dropped refs' strings
	t.order = keep
	return grafts, next
}

// nextDueAfter returns when the put announced at now falls due: what the
// timer must be armed for at the latest.
func (t *plumtree[P]) nextDueAfter(now time.Time) time.Time { return now.Add(t.graftTimeout()) }

// rememberGraft notes a grafted put, so that its copy from the tree, if it
// comes, is a lag sample.
func (t *plumtree[P]) rememberGraft(id string, first time.Time) {
	if _, ok := t.grafted[id]; ok {
		return
	}
	if len(t.graftedOrder) >= graftedMemory {
		delete(t.grafted, t.graftedOrder[0])
		t.graftedOrder = t.graftedOrder[1:]
	}
	t.grafted[id] = first
	t.graftedOrder = append(t.graftedOrder, id)
}

// up records a link in the tree.
func (t *plumtree[P]) up(p P) { t.links[p] = true }

// down forgets p's link.
func (t *plumtree[P]) down(p P) {
	delete(t.links, p)
	delete(t.lazy, p)
	delete(t.pruned, p)
	delete(t.late, p)
	for _, m := range t.missing {
		m.announcers = slices.DeleteFunc(m.announcers, func(a P) bool { return a == p })
	}
}

// size returns the links we announce on instead of pushing, and the puts
// waiting for a graft.
func (t *plumtree[P]) size() (lazy, missing int) { return len(t.lazy), len(t.missing) }
