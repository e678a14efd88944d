package bridge

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/swarmdb/swarmdb/db"
)

// Anti-entropy between swarmdb nodes (ToolDb has none: a peer that was offline never learns
// what it missed).
//
// Every stored key gets an item hash: sha256 over the key and the h and s of what we hold for it
// (the record; for a CRDT key every kept signed source, sorted), truncated to 16 bytes. Keys sit
// in a fixed 16-ary tree by sha256(key) in hex: the node at path "3a" holds the keys whose
// key-hash starts with "3a", and summarises them as (count, XOR of item hashes). XOR makes the
// summary independent of order, and any difference in any key changes it (up to a 2^-128
// collision).
//
// The exchange is symmetric and recursive (a range-hash tree walk):
//
//	tree {path, sums[16]}   "here are my 16 children of path"; the receiver compares each with
//	                        its own and, for each child that differs, answers with its own
//	                        tree of that child, or with a leaf when both sides together hold at
//	                        most syncLeafMax keys there. Where the sender has nothing, the
//	                        receiver sends its records outright; where the receiver has
//	                        nothing, it answers with an empty leaf (so a new node is filled
//	                        without listing every key).
//	leaf {path, items}      "every key I hold under path, with its item hash"; the receiver
//	                        sends the records it holds that differ (put/crdtPut with
//	                        "catchup":true, never relayed) and asks for the others with want.
//	want {keys}             the receiver sends its records for those keys.
//	have {items}            "I now hold these keys, with these item hashes" (a repair we
//	                        accepted, or puts we did not relay to a peer that was behind);
//	                        the receiver wants those it lacks or holds otherwise, and sends
//	                        its own version of the latter.
//
// The side that receives a swarmdb pong starts with tree {""}, and again every SyncInterval
// (a repair for anything lost on the way). Equal subtrees end the walk, so the traffic is about
// log16(N) summaries plus one leaf per difference, whatever the store size. All of it goes
// through the peer's catch-up sender, which waits for room in the outbound queue, so the read
// loop never blocks and a large repair never trips the slow-consumer limit.
//
// Records that arrive by anti-entropy are not relayed (a new node's catch-up would flood every
// peer with records they hold); instead the node lists the keys to its other swarmdb peers with
// "have", and only a peer that lacks one asks for it, so a repair spreads through the mesh hop
// by hop at the cost of one short list per link.
const (
	syncOpTree = "tree"
	syncOpLeaf = "leaf"
	syncOpWant = "want"
	syncOpHave = "have"
	// The broadcast tree's messages (plumtree.go): ihave lists (key, put id) of puts not sent
	// in full, graft asks for some of them and makes the link eager, prune makes it lazy.
	syncOpIHave = "ihave"
	syncOpGraft = "graft"
	syncOpPrune = "prune"
	syncFanout  = 16
	// syncLeafMax: below this many keys on both sides together, listing them costs less than
	// another level of summaries.
	syncLeafMax = 32
	// syncMaxPath: a path as long as the hash itself cannot be split further.
	syncMaxPath = 2 * sha256.Size
	// maxCatchupQueue bounds the keys one peer may have us send.
	maxCatchupQueue = 1 << 20
	// defaultSyncInterval: Config.SyncInterval's default.
	defaultSyncInterval = time.Minute
	// syncBusyRetry: a comparison due while the last one is still sending repairs waits this
	// long and looks again.
	syncBusyRetry = time.Second
	// lostLinkWait: after a link to a swarmdb peer ends, the other peers are compared within
	// this long (see compareSoon).
	lostLinkWait = 2 * time.Second
	// announceDelay: repairs accepted within this long go out in one "have" list per peer.
	announceDelay = 200 * time.Millisecond
)

type syncEntry struct {
	kh  string // hex sha256 of the key: its place in the tree
	key string
	ih  [16]byte
}

// syncIndex keeps the item hash of every stored key, sorted by key hash, so any node of the tree
// is a contiguous range. It is built from the store on first use and kept up to date from the
// store's change events.
type syncIndex struct {
	store *db.Store

	mu      sync.Mutex // guards the fields below
	built   bool
	entries []syncEntry
}

func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// itemHash covers what we hold for key. recs are the record, or a CRDT key's sources.
func itemHash(key string, recs []db.Record) [16]byte {
	parts := make([]string, 0, len(recs))
	for i := range recs {
		parts = append(parts, recs[i].Hash+"\x00"+recs[i].Sig)
	}
	slices.Sort(parts)
	h := sha256.New()
	h.Write([]byte("swarmdb-sync-item\x00"))
	h.Write([]byte(key))
	for _, s := range parts {
		h.Write([]byte{0})
		h.Write([]byte(s))
	}
	var out [16]byte
	copy(out[:], h.Sum(nil))
	return out
}

// holding returns what the store holds for key, as itemHash wants it (nil: nothing).
func holding(s *db.Store, key string) []db.Record {
	rec, err := s.Get(key)
	if err != nil {
		return nil
	}
	if rec.CRDT == "" {
		return []db.Record{rec}
	}
	st, err := s.CRDT(key)
	if err != nil {
		return []db.Record{rec}
	}
	return st.Sources
}

func (x *syncIndex) invalidate() {
	x.mu.Lock()
	x.built, x.entries = false, nil
	x.mu.Unlock()
}

func (x *syncIndex) ensureLocked() error {
	if x.built {
		return nil
	}
	var entries []syncEntry
	var crdtKeys []string
	err := x.store.Scan("", func(r db.Record) error {
		if r.CRDT != "" {
			crdtKeys = append(crdtKeys, r.Key)
			return nil
		}
		entries = append(entries, syncEntry{kh: keyHash(r.Key), key: r.Key, ih: itemHash(r.Key, []db.Record{r})})
		return nil
	})
	if err != nil {
		return err
	}
	// CRDT sources are read after the scan: Scan holds the store open for reading.
	for _, k := range crdtKeys {
		if recs := holding(x.store, k); recs != nil {
			entries = append(entries, syncEntry{kh: keyHash(k), key: k, ih: itemHash(k, recs)})
		}
	}
	slices.SortFunc(entries, func(a, b syncEntry) int { return cmp.Compare(a.kh, b.kh) })
	x.entries, x.built = entries, true
	return nil
}

// update applies one accepted change, if the index is built.
func (x *syncIndex) update(ev *db.Event) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.built {
		return
	}
	key := ev.Record.Key
	var recs []db.Record
	if ev.Record.CRDT == "" {
		recs = []db.Record{ev.Record}
	} else if recs = holding(x.store, key); recs == nil {
		return
	}
	e := syncEntry{kh: keyHash(key), key: key, ih: itemHash(key, recs)}
	i, found := slices.BinarySearchFunc(x.entries, e.kh, func(a syncEntry, kh string) int { return cmp.Compare(a.kh, kh) })
	if found {
		x.entries[i] = e
		return
	}
	x.entries = slices.Insert(x.entries, i, e)
}

// rangeLocked returns the entries under path.
func (x *syncIndex) rangeLocked(path string) []syncEntry {
	lo, _ := slices.BinarySearchFunc(x.entries, path, func(a syncEntry, p string) int { return cmp.Compare(a.kh, p) })
	hi := lo
	for hi < len(x.entries) && x.entries[hi].kh[:len(path)] == path {
		hi++
	}
	return x.entries[lo:hi]
}

const hexDigits = "0123456789abcdef"

// sums summarises the 16 children of path.
func (x *syncIndex) sums(path string) ([]SyncSum, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.ensureLocked(); err != nil {
		return nil, err
	}
	var acc [syncFanout]struct {
		n  int64
		xh [16]byte
	}
	for _, e := range x.rangeLocked(path) {
		c := &acc[hexNibble(e.kh[len(path)])]
		c.n++
		for i := range c.xh {
			c.xh[i] ^= e.ih[i]
		}
	}
	out := make([]SyncSum, syncFanout)
	for i, c := range acc {
		out[i].Count = c.n
		if c.n > 0 {
			out[i].Hash = hex.EncodeToString(c.xh[:])
		}
	}
	return out, nil
}

func hexNibble(c byte) int {
	if c <= '9' {
		return int(c - '0')
	}
	return int(c-'a') + 10
}

// items lists every key under path with its item hash.
func (x *syncIndex) items(path string) ([]SyncItem, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.ensureLocked(); err != nil {
		return nil, err
	}
	r := x.rangeLocked(path)
	out := make([]SyncItem, 0, len(r))
	for _, e := range r {
		out = append(out, SyncItem{Key: e.key, Hash: hex.EncodeToString(e.ih[:])})
	}
	return out, nil
}

// Digest returns the root summary of the sync index: equal digests mean equal stores (as far as
// anti-entropy is concerned). For tests and diagnostics.
func (b *Bridge) Digest() (string, error) {
	sums, err := b.index.sums("")
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	for _, s := range sums {
		fmt.Fprintf(&buf, "%d:%s/", s.Count, s.Hash)
	}
	sum := sha256.Sum256(buf.Bytes())
	return hex.EncodeToString(sum[:]), nil
}

// syncOut is one piece of anti-entropy traffic waiting for the catch-up sender: an encoded
// swarmdbSync message, or a key whose records are to be sent.
type syncOut struct {
	msg []byte
	key string
}

// startSync begins anti-entropy with a swarmdb peer, once per connection.
func (p *Peer) startSync() {
	if p.b.cfg.DisableSync {
		return
	}
	p.mu.Lock()
	started := p.syncStarted
	p.syncStarted = true
	p.mu.Unlock()
	if started {
		return
	}
	p.syncRound()
}

// syncRound starts a comparison from the root and arms the next periodic one.
func (p *Peer) syncRound() {
	p.b.stats.syncRounds.Add(1)
	p.sendTree("")
	p.scheduleSync(p.b.syncWait())
}

// syncWait is the wait before the next periodic comparison: SyncInterval shortened at random
// by up to a quarter, so the peers of a node do not all compare at once.
func (b *Bridge) syncWait() time.Duration {
	d := b.cfg.SyncInterval
	return d - time.Duration(rand.Int64N(int64(d/4)+1))
}

// scheduleSync arranges a comparison from the root with p within d (sooner if one is already
// due sooner). Only swarmdb peers take part.
func (p *Peer) scheduleSync(d time.Duration) {
	if p.b.cfg.DisableSync || !p.swarmdb.Load() || p.ctx.Err() != nil {
		return
	}
	due := time.Now().Add(d)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.syncTimer == nil:
		p.syncTimer = time.AfterFunc(d, p.syncTick)
		context.AfterFunc(p.ctx, func() {
			p.mu.Lock()
			p.syncTimer.Stop()
			p.mu.Unlock()
		})
	case !p.syncDue.IsZero() && !p.syncDue.After(due):
		return // already due sooner
	default:
		p.syncTimer.Reset(d)
	}
	p.syncDue = due
}

// compareSoon arranges a comparison with every swarmdb peer within lostLinkWait; it runs when
// a link to a swarmdb peer ends. The link may have been carrying puts (its queue, the "have"
// entries noted for it), and the other neighbours did not relay those to that peer, which was
// listed in their "to"; the next periodic round could be SyncInterval away. Both ends of the
// link compare with their other peers, so both get what was lost on it.
func (b *Bridge) compareSoon() {
	b.mu.Lock()
	peers := b.swarmdbPeersLocked()
	b.mu.Unlock()
	for _, q := range peers {
		q.scheduleSync(lostLinkWait)
	}
}

// swarmdbPeersLocked returns the peers that speak the swarmdb extensions. b.mu must be held.
func (b *Bridge) swarmdbPeersLocked() []*Peer {
	peers := make([]*Peer, 0, len(b.peers))
	for p := range b.peers {
		if p.swarmdb.Load() {
			peers = append(peers, p)
		}
	}
	return peers
}

// syncTick starts a sync round, unless the last one is still sending its repairs.
func (p *Peer) syncTick() {
	p.mu.Lock()
	p.syncDue = time.Time{}
	busy := len(p.catchup) > 0
	p.mu.Unlock()
	if p.ctx.Err() != nil {
		return
	}
	if busy {
		p.scheduleSync(syncBusyRetry)
		return
	}
	p.syncRound()
}

// sendSync queues a swarmdbSync message behind the catch-up traffic: one incoming tree can
// call for 16 answers, so the read loop never sends them itself (it must not block, and must
// not fill the outbound queue and look like a slow consumer to itself).
func (p *Peer) sendSync(body *SyncBody) bool {
	return p.queueOut(syncOut{msg: p.b.syncMessage(body)})
}

// syncMessage encodes a swarmdbSync message.
func (b *Bridge) syncMessage(body *SyncBody) []byte {
	b.stats.syncMsgs.Add(1)
	return AppendMessage(nil, &Message{Type: TypeSync, ID: newID(), To: []string{b.clientID}, Sync: body})
}

// haveMessages encodes list as "have" messages of at most maxSyncList items each.
func (b *Bridge) haveMessages(list []SyncItem) [][]byte {
	var out [][]byte
	for len(list) > 0 {
		n := min(len(list), maxSyncList)
		b.stats.announced.Add(uint64(n))
		out = append(out, b.syncMessage(&SyncBody{Op: syncOpHave, Items: list[:n]}))
		list = list[n:]
	}
	return out
}

func (p *Peer) sendTree(path string) bool {
	sums, err := p.b.index.sums(path)
	if err != nil {
		p.b.log.Warn("sync index", "err", err)
		return true
	}
	return p.sendSync(&SyncBody{Op: syncOpTree, Path: path, Sums: sums})
}

func (p *Peer) sendLeaf(path string, items []SyncItem) bool {
	return p.sendSync(&SyncBody{Op: syncOpLeaf, Path: path, Items: items})
}

func (p *Peer) onSync(m *Message) bool {
	s := m.Sync
	switch s.Op {
	case syncOpTree:
		if len(s.Path) >= syncMaxPath {
			return p.bad(m.ID, fmt.Errorf("%w: sync path too long", ErrBadMessage))
		}
		mine, err := p.b.index.sums(s.Path)
		if err != nil {
			p.sendError(m.ID, err)
			return true
		}
		for i := range syncFanout {
			if mine[i] == s.Sums[i] {
				continue
			}
			child := s.Path + string(hexDigits[i])
			var ok bool
			switch {
			case s.Sums[i].Count == 0:
				// The peer has nothing there: send everything, no listing needed.
				items, err := p.b.index.items(child)
				if err != nil {
					return true
				}
				ok = true
				for _, it := range items {
					if ok = p.queueOut(syncOut{key: it.Key}); !ok {
						break
					}
				}
			case mine[i].Count == 0:
				// We have nothing there: an empty listing makes the peer send it all.
				ok = p.sendLeaf(child, nil)
			case mine[i].Count+s.Sums[i].Count <= syncLeafMax || len(child) >= syncMaxPath:
				items, err := p.b.index.items(child)
				if err != nil {
					return true
				}
				ok = p.sendLeaf(child, items)
			default:
				ok = p.sendTree(child)
			}
			if !ok {
				return p.syncBacklogFull(m.ID)
			}
		}
	case syncOpLeaf:
		mineList, err := p.b.index.items(s.Path)
		if err != nil {
			p.sendError(m.ID, err)
			return true
		}
		mine := make(map[string]string, len(mineList))
		for _, it := range mineList {
			mine[it.Key] = it.Hash
		}
		theirs := make(map[string]string, len(s.Items))
		var want []string
		for _, it := range s.Items {
			theirs[it.Key] = it.Hash
			if mine[it.Key] != it.Hash {
				// A comparison asks even if another peer was asked (it is the repair of
				// last resort), but notes the ask so a "have" does not repeat it.
				p.b.asked.add(askedKey(it))
				want = append(want, it.Key)
			}
		}
		if !p.sendWants(s.Path, want) {
			return p.syncBacklogFull(m.ID)
		}
		for _, it := range mineList {
			if theirs[it.Key] != it.Hash && !p.queueOut(syncOut{key: it.Key}) {
				return p.syncBacklogFull(m.ID)
			}
		}
	case syncOpHave:
		if !p.wantMissing(s.Items) {
			return p.syncBacklogFull(m.ID)
		}
	case syncOpWant:
		for _, k := range s.Keys {
			if !p.queueOut(syncOut{key: k}) {
				return p.syncBacklogFull(m.ID)
			}
		}
	}
	return true
}

// wantMissing answers a "have": it asks p for the listed items we lack or hold in another
// version, and sends it ours of the latter. It reports false when p's catch-up backlog is full.
//
// An item asked of another peer within askedFor is not asked again: a record that reached a
// node by anti-entropy is listed in a "have" to all its peers (see announce), so under a
// backlog one record was otherwise asked for, and sent, by up to every neighbour (measured:
// 2.3 M records sent for 630,000 deliveries). If the peer asked never answers, the next
// comparison of the stores asks again.
//
// From a peer in the broadcast tree the ask waits a graft timeout (see deferWant): a "have" is
// a lazy announcement, and the record is most likely coming down the tree already.
func (p *Peer) wantMissing(items []SyncItem) bool {
	var want []string
	for _, it := range items {
		mine, ok := p.b.itemOf(it.Key)
		if ok && mine == it.Hash {
			continue
		}
		if ok && !p.queueOut(syncOut{key: it.Key}) {
			return false
		}
		if p.b.inTree(p) && p.b.deferWant(p, it) {
			continue
		}
		if !p.b.asked.add(askedKey(it)) {
			p.b.stats.notAsked.Add(1)
			continue
		}
		want = append(want, it.Key)
	}
	return p.sendWants("", want)
}

// askedKey is an item's entry in Bridge.asked.
func askedKey(it SyncItem) string { return it.Key + "\x00" + it.Hash }

// sendWants asks p for keys, maxSyncList at a time. It reports false when p's catch-up
// backlog is full.
func (p *Peer) sendWants(path string, keys []string) bool {
	p.b.stats.asked.Add(uint64(len(keys)))
	for len(keys) > 0 {
		n := min(len(keys), maxSyncList)
		if !p.sendSync(&SyncBody{Op: syncOpWant, Path: path, Keys: keys[:n]}) {
			return false
		}
		keys = keys[n:]
	}
	return true
}

// syncBacklogFull answers a sync message that would push the peer's catch-up backlog over
// maxCatchupQueue, and strikes; it reports whether the connection goes on.
func (p *Peer) syncBacklogFull(ref string) bool {
	return p.bad(ref, fmt.Errorf("%w: sync backlog over %d", ErrBadMessage, maxCatchupQueue))
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
	b := p.b
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.catchupSig:
		}
		for {
			if !p.sendLagged() {
				return
			}
			p.mu.Lock()
			if len(p.catchup) == 0 {
				p.catchup = nil
				p.mu.Unlock()
				break
			}
			o := p.catchup[0]
			p.catchup[0] = syncOut{}
			p.catchup = p.catchup[1:]
			p.mu.Unlock()
			if o.msg != nil {
				if !p.sendPatient(o.msg) {
					return
				}
				continue
			}
			rec, err := b.store.Get(o.key)
			if err != nil {
				continue
			}
			for _, m := range b.recordMessages(p, o.key, &rec, rec.CRDT != "") {
				m.ID = newID()
				m.To = []string{b.clientID}
				m.Catchup = true
				if !p.sendPatient(AppendMessage(nil, &m)) {
					return
				}
				b.stats.catchupSent.Add(1)
			}
		}
	}
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
	items := make(map[string]SyncItem, len(notes))
	for _, n := range notes {
		if _, done := items[n.key]; !done {
			if h, ok := b.itemOf(n.key); ok {
				items[n.key] = SyncItem{Key: n.key, Hash: h}
			}
		}
	}
	for _, p := range peers {
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
		for _, msg := range b.haveMessages(list) {
			p.queueOut(syncOut{msg: msg})
		}
	}
}

// itemOf returns the item hash (hex) of what the store holds for key, read from the store
// itself (the index follows it a moment later).
func (b *Bridge) itemOf(key string) (string, bool) {
	recs := holding(b.store, key)
	if recs == nil {
		return "", false
	}
	ih := itemHash(key, recs)
	return hex.EncodeToString(ih[:]), true
}
