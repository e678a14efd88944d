package bridge

import (
	"time"
)

// The catch-up sender of anti-entropy (the protocol is in sync.go): one goroutine per peer
// feeds the records and messages a comparison calls for into the peer's outbound queue,
// waiting for room instead of filling it, and sends "have" lists of the puts the peer missed
// while it was behind and of the repairs we accepted from others.
const (
	// maxCatchupQueue bounds the keys one peer may have us send.
	maxCatchupQueue = 1 << 20
	// announceDelay: repairs accepted within this long go out in one "have" list per peer.
	announceDelay = 200 * time.Millisecond
)

// syncOut is one piece of anti-entropy traffic waiting for the catch-up sender: an encoded
// swarmdbSync message, or a key whose records are to be sent.
type syncOut struct {
	msg []byte
	key string
}

// queueOut hands anti-entropy traffic to the catch-up sender. It reports false when the
// peer's backlog is over maxCatchupQueue (a peer asking for more than we can hold).
func (p *Peer) queueOut(o syncOut) bool {
	p.mu.Lock()
	over := len(p.catchup) >= maxCatchupQueue
	if !over {
		p.catchup = append(p.catchup, o)
	}
	p.mu.Unlock()
	if over {
		return false
	}
	signal(p.catchupSig)
	return true
}

// catchupLoop sends anti-entropy traffic patiently: it waits for room in the outbound queue
// instead of filling it.
func (p *Peer) catchupLoop() {
	defer p.b.wg.Done()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.catchupSig:
		}
		if !p.drainCatchup() {
			return
		}
	}
}

// drainCatchup sends what waits until nothing does, a "have" list of the lagged keys ahead of
// each piece. It reports false when the peer has ended.
func (p *Peer) drainCatchup() bool {
	for {
		if !p.sendLagged() {
			return false
		}
		o, ok := p.nextCatchup()
		if !ok {
			return true
		}
		if !p.sendCatchup(o) {
			return false
		}
	}
}

// nextCatchup takes the first piece of traffic waiting, if there is one.
func (p *Peer) nextCatchup() (syncOut, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.catchup) == 0 {
		p.catchup = nil
		return syncOut{}, false
	}
	o := p.catchup[0]
	p.catchup[0] = syncOut{}
	p.catchup = p.catchup[1:]
	return o, true
}

// sendCatchup sends one piece: a message as it is, a key as our records of it marked
// "catchup" (which the peer does not relay). It reports false when the peer has ended.
func (p *Peer) sendCatchup(o syncOut) bool {
	if o.msg != nil {
		return p.sendPatient(o.msg)
	}
	b := p.b
	rec, err := b.store.Get(o.key)
	if err != nil {
		return true
	}
	for _, m := range b.recordMessages(p, o.key, &rec, rec.CRDT != "") {
		m.ID = newID()
		m.To = []string{b.clientID}
		m.Catchup = true
		if !p.sendPatient(AppendMessage(nil, &m)) {
			return false
		}
		b.stats.catchupSent.Add(1)
	}
	return true
}

// lag notes the key of a put not relayed to p because p has fallen behind (see
// behindBytes); the catch-up sender lists it in a "have" when p's queue has room.
func (p *Peer) lag(key string) {
	p.b.stats.lagged.Add(1)
	p.mu.Lock()
	if p.lagged == nil {
		p.lagged = map[string]struct{}{}
	}
	if len(p.lagged) < maxLagged {
		p.lagged[key] = struct{}{}
	} else {
		p.lagLost = true
	}
	p.mu.Unlock()
	signal(p.catchupSig)
}

// sendLagged sends p a "have" list of the keys noted by lag, with the item hashes we hold
// now, waiting for room in its queue. Had too many keys been noted to keep, it schedules a
// comparison of the stores instead. It reports false when the peer has ended.
func (p *Peer) sendLagged() bool {
	p.mu.Lock()
	keys, lost := p.lagged, p.lagLost
	p.lagged, p.lagLost = nil, false
	p.mu.Unlock()
	if lost {
		p.scheduleSync(syncBusyRetry)
	}
	list := make([]SyncItem, 0, len(keys))
	for k := range keys {
		if h, ok := p.b.itemOf(k); ok {
			list = append(list, SyncItem{Key: k, Hash: h})
		}
	}
	for _, msg := range p.b.haveMessages(list) {
		if !p.sendPatient(msg) {
			return false
		}
	}
	return true
}

// haveNote is a repair to announce: the key, and the peer it came from (which holds it).
type haveNote struct {
	key  string
	from *Peer
}

// announce notes that a record for key came by anti-entropy from peer from and changed our
// store. Notes gathered over announceDelay go out together (see flushHaves).
func (b *Bridge) announce(key string, from *Peer) {
	b.mu.Lock()
	first := len(b.haves) == 0
	b.haves = append(b.haves, haveNote{key: key, from: from})
	b.mu.Unlock()
	if first {
		time.AfterFunc(announceDelay, b.flushHaves)
	}
}

// flushHaves sends every swarmdb peer a "have" list of the noted keys, but for the keys that
// came from that peer, with the item hashes we hold now.
func (b *Bridge) flushHaves() {
	b.mu.Lock()
	notes := b.haves
	b.haves = nil
	peers := b.swarmdbPeersLocked()
	b.mu.Unlock()
	if b.ctx.Err() != nil || b.cfg.DisableSync {
		return
	}
	items := b.noteItems(notes)
	for _, p := range peers {
		for _, msg := range b.haveMessages(haveList(notes, items, p)) {
			p.queueOut(syncOut{msg: msg})
		}
	}
}

// noteItems returns, for each noted key we hold, its item with the hash we hold now.
func (b *Bridge) noteItems(notes []haveNote) map[string]SyncItem {
	items := make(map[string]SyncItem, len(notes))
	for _, n := range notes {
		if _, done := items[n.key]; done {
			continue
		}
		if h, ok := b.itemOf(n.key); ok {
			items[n.key] = SyncItem{Key: n.key, Hash: h}
		}
	}
	return items
}

// haveList returns the "have" list for p: the items of the noted keys that did not come from
// p, each once, in the order noted.
func haveList(notes []haveNote, items map[string]SyncItem, p *Peer) []SyncItem {
	var list []SyncItem
	listed := make(map[string]bool, len(items))
	for _, n := range notes {
		it, ok := items[n.key]
		if !ok || n.from == p || listed[n.key] {
			continue
		}
		listed[n.key] = true
		list = append(list, it)
	}
	return list
}
