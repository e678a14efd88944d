package bridge

import (
	"time"
)

// The broadcast tree's wiring (the protocol is in plumtree.go): which puts
// go out in full and which are announced, the prunes and grafts on the
// wire, and the graft timer.

// inTree says whether p takes part in the broadcast tree: a swarmdb node
// of treeVersion or later, with the tree on.
func (b *Bridge) inTree(p *Peer) bool {
	return !b.cfg.DisablePlumtree && p.swarmdb.Load() && p.proto.Load() >= treeVersion
}

// lazyLink says whether puts to p are announced rather than sent.
func (b *Bridge) lazyLink(p *Peer) bool {
	if !b.inTree(p) {
		return false
	}
	b.treeMu.Lock()
	defer b.treeMu.Unlock()
	return !b.tree.eager(p)
}

// announceLazily notes a put for p's next "ihave" list, sent within
// ihaveDelay.
func (p *Peer) announceLazily(key, id string) {
	p.mu.Lock()
	first := len(p.ihaves) == 0
	if len(p.ihaves) < maxSyncList {
		p.ihaves = append(p.ihaves, SyncItem{Key: key, Hash: id})
	}
	p.mu.Unlock()
	if first {
		time.AfterFunc(ihaveDelay, p.flushIHaves)
	}
}

// flushIHaves sends p the puts noted by announceLazily.
func (p *Peer) flushIHaves() {
	p.mu.Lock()
	items := p.ihaves
	p.ihaves = nil
	p.mu.Unlock()
	if len(items) == 0 || p.ctx.Err() != nil {
		return
	}
	p.b.stats.ihaves.Add(uint64(len(items)))
	p.sendRaw(p.b.syncMessage(&SyncBody{Op: syncOpIHave, Items: items}))
}

// putArrived records, for the tree, that p pushed us a put: the first copy
// (no graft due for it), or a later copy under the same id, which prunes
// p's pushes to us. Copies by anti-entropy (catch-up) are not broadcast
// and do not count.
func (p *Peer) putArrived(key, id string, first bool) {
	b := p.b
	if !b.inTree(p) {
		return
	}
	now := time.Now()
	b.treeMu.Lock()
	prune := false
	if first {
		b.tree.received(p, treeItem{key: key, id: id}, now)
	} else {
		prune = b.tree.duplicate(p, id, now)
	}
	b.treeMu.Unlock()
	if prune {
		b.stats.prunes.Add(1)
		p.sendRaw(b.syncMessage(&SyncBody{Op: syncOpPrune}))
	}
}

// onIHave takes p's announcements: the puts we have not seen wait for the
// tree, and are grafted if they do not come.
func (p *Peer) onIHave(items []SyncItem) {
	b := p.b
	if !b.inTree(p) {
		return
	}
	now := time.Now()
	b.treeMu.Lock()
	defer b.treeMu.Unlock()
	added := false
	for _, it := range items {
		if b.seenIDs.has(TypePut+"\x00"+it.Hash) || b.seenIDs.has(TypeCRDTPut+"\x00"+it.Hash) {
			continue
		}
		b.tree.ihave(p, treeItem{key: it.Key, id: it.Hash}, now)
		added = true
	}
	if added {
		b.armTreeLocked(b.tree.nextDueAfter(now), now)
	}
}

// armTreeLocked makes sure treeTick runs by due. b.treeMu must be held.
func (b *Bridge) armTreeLocked(due, now time.Time) {
	if !b.treeDue.IsZero() && !b.treeDue.After(due) {
		return // armed for sooner
	}
	b.treeDue = due
	if b.treeTimer == nil {
		b.treeTimer = time.AfterFunc(due.Sub(now), b.treeTick)
	} else {
		b.treeTimer.Reset(due.Sub(now))
	}
}

// deferredWant is an item a "have" listed that we lack, asked for only if
// it has not come down the tree by due.
type deferredWant struct {
	p   *Peer
	it  SyncItem
	due time.Time
}

// maxDeferred bounds the wants waiting; beyond it they are asked at once.
const maxDeferred = 1 << 16

// deferWant holds the ask for an item p listed in a "have" for a graft
// timeout. It reports false when too many wait already (ask now).
//
// A record that reaches a node by anti-entropy (a comparison that runs
// while puts are on their way, on every new link) is not relayed; the node
// lists it in a "have" to its other peers, and asked for at once, records
// still coming down the tree were fetched again hop by hop that way, out of
// the tree for good: on 64 nodes with MaxPeers 8 at 60 records/s, half of
// the deliveries and most of the late ones.
func (b *Bridge) deferWant(p *Peer, it SyncItem) bool {
	now := time.Now()
	b.treeMu.Lock()
	defer b.treeMu.Unlock()
	if len(b.deferred) >= maxDeferred {
		return false
	}
	due := now.Add(b.tree.graftTimeout())
	b.deferred = append(b.deferred, deferredWant{p: p, it: it, due: due})
	b.armTreeLocked(due, now)
	return true
}

// askDeferred asks for the deferred items that are due and still lacking.
func (b *Bridge) askDeferred(due []deferredWant) {
	byPeer := map[*Peer][]string{}
	var order []*Peer
	for _, d := range due {
		if d.p.ctx.Err() != nil {
			continue
		}
		if mine, ok := b.itemOf(d.it.Key); ok && mine == d.it.Hash {
			continue // it came
		}
		if !b.asked.add(askedKey(d.it)) {
			b.stats.notAsked.Add(1)
			continue
		}
		if byPeer[d.p] == nil {
			order = append(order, d.p)
		}
		byPeer[d.p] = append(byPeer[d.p], d.it.Key)
	}
	for _, p := range order {
		p.sendWants("", byPeer[p])
	}
}

// treeTick sends the grafts and the deferred wants that are due, and arms
// the timer for the next.
func (b *Bridge) treeTick() {
	if b.ctx.Err() != nil {
		return
	}
	now := time.Now()
	b.treeMu.Lock()
	b.treeDue = time.Time{}
	grafts, next := b.tree.tick(now)
	var wants []deferredWant
	keep := b.deferred[:0]
	for _, d := range b.deferred {
		if d.due.After(now) {
			keep = append(keep, d)
			if next.IsZero() || d.due.Before(next) {
				next = d.due
			}
			continue
		}
		wants = append(wants, d)
	}
	clear(b.deferred[len(keep):])
	b.deferred = keep
	// A put that arrived meanwhile (the tree delivered it late) needs no
	// graft.
	n := 0
	for _, g := range grafts {
		if b.seenIDs.has(TypePut+"\x00"+g.it.id) || b.seenIDs.has(TypeCRDTPut+"\x00"+g.it.id) {
			b.tree.forget(g.it)
			continue
		}
		grafts[n] = g
		n++
	}
	grafts = grafts[:n]
	if !next.IsZero() {
		b.armTreeLocked(next, now)
	}
	b.treeMu.Unlock()
	byPeer := map[*Peer][]SyncItem{}
	for _, g := range grafts {
		byPeer[g.to] = append(byPeer[g.to], SyncItem{Key: g.it.key, Hash: g.it.id})
	}
	for p, items := range byPeer {
		b.stats.grafts.Add(uint64(len(items)))
		p.sendRaw(b.syncMessage(&SyncBody{Op: syncOpGraft, Items: items}))
	}
	b.askDeferred(wants)
}

// onGraft: p asks for puts in full again, and for these ones now. They go
// out as ordinary puts under their ids, so p relays them down its branch.
func (p *Peer) onGraft(items []SyncItem) {
	b := p.b
	if b.inTree(p) {
		b.treeMu.Lock()
		b.tree.graft(p)
		b.treeMu.Unlock()
	}
	for _, it := range items {
		if p.out.behind() {
			// Its queue is long: it gets the key in a "have" list when
			// there is room, as relayed puts do (see behindBytes).
			p.lag(it.Key)
			continue
		}
		rec, err := b.store.Get(it.Key)
		if err != nil {
			continue
		}
		for i, m := range b.recordMessages(p, it.Key, &rec, rec.CRDT != "") {
			m.ID = it.Hash
			if i > 0 {
				m.ID = newID()
			}
			m.To = []string{b.clientID}
			p.send(&m)
		}
	}
}

// onPrune: p takes our puts by announcement only.
func (p *Peer) onPrune() {
	b := p.b
	if !b.inTree(p) {
		return
	}
	b.treeMu.Lock()
	b.tree.prune(p)
	b.treeMu.Unlock()
}

// treeDown forgets p's link.
func (b *Bridge) treeDown(p *Peer) {
	b.treeMu.Lock()
	b.tree.down(p)
	b.treeMu.Unlock()
}
