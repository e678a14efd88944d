package bridge

import (
	"crypto/sha256"
	"fmt"
)

// Anti-entropy between swarmdb nodes (ToolDb has none: a peer that was offline never learns
// what it missed).
//
// Every stored key sits in a fixed 16-ary tree of item hashes (the tree index, sync_index.go).
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
//
// The files: this one holds the messages and their handlers; sync_index.go the tree index;
// sync_diff.go the comparison of two summaries or listings (pure: no I/O, no locks);
// catchup.go the sender that feeds the peer's queue patiently, and the "have" lists;
// sync_rounds.go when comparisons from the root start.
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
)

// onSync handles a comparison message: tree, leaf, have or want. It reports whether the
// connection goes on.
func (p *Peer) onSync(m *Message) bool {
	s := m.Sync
	var queued bool
	switch s.Op {
	case syncOpTree:
		if len(s.Path) >= syncMaxPath {
			return p.bad(m.ID, fmt.Errorf("%w: sync path too long", ErrBadMessage))
		}
		queued = p.answerTree(m.ID, s.Path, s.Sums)
	case syncOpLeaf:
		queued = p.answerLeaf(m.ID, s.Path, s.Items)
	case syncOpHave:
		queued = p.wantMissing(s.Items)
	case syncOpWant:
		queued = p.queueRecords(s.Keys)
	default:
		return true
	}
	if !queued {
		return p.syncBacklogFull(m.ID)
	}
	return true
}

// answerTree compares the peer's summaries of path's children with ours and queues what each
// child that differs calls for (see diffTree). It reports false when p's catch-up backlog is
// full.
func (p *Peer) answerTree(ref, path string, theirs []SyncSum) bool {
	mine, err := p.b.index.sums(path)
	if err != nil {
		p.sendError(ref, err)
		return true
	}
	for _, c := range diffTree(path, mine, theirs) {
		queued, err := p.takeStep(c)
		if err != nil {
			return true // the index could not be read: the next round tries again
		}
		if !queued {
			return false
		}
	}
	return true
}

// takeStep queues what one differing child calls for. It reports false when p's catch-up
// backlog is full, and an error when the index could not be read.
func (p *Peer) takeStep(c childStep) (bool, error) {
	switch c.step {
	case stepSendAll:
		items, err := p.b.index.items(c.path)
		if err != nil {
			return false, err
		}
		return p.queueRecords(itemKeys(items)), nil
	case stepAskAll:
		return p.sendLeaf(c.path, nil), nil
	case stepLeaf:
		items, err := p.b.index.items(c.path)
		if err != nil {
			return false, err
		}
		return p.sendLeaf(c.path, items), nil
	default:
		return p.sendTree(c.path), nil
	}
}

// answerLeaf compares the peer's listing of path with ours: it asks for what we lack or hold
// otherwise and sends what the peer lacks or holds otherwise (see diffLeaf). It reports false
// when p's catch-up backlog is full.
func (p *Peer) answerLeaf(ref, path string, theirs []SyncItem) bool {
	mine, err := p.b.index.items(path)
	if err != nil {
		p.sendError(ref, err)
		return true
	}
	send, want := diffLeaf(mine, theirs)
	// A comparison asks even if another peer was asked (it is the repair of last resort), but
	// notes the ask so a "have" does not repeat it.
	for _, it := range want {
		p.b.asked.add(askedKey(it))
	}
	return p.sendWants(path, itemKeys(want)) && p.queueRecords(send)
}

// queueRecords has the catch-up sender send p our records of keys. It reports false when
// p's catch-up backlog is full.
func (p *Peer) queueRecords(keys []string) bool {
	for _, k := range keys {
		if !p.queueOut(syncOut{key: k}) {
			return false
		}
	}
	return true
}

// wantMissing answers a "have": it asks p for the listed items we lack or hold in another
// version, and sends it ours of the latter (see diffHave). It reports false when p's catch-up
// backlog is full.
func (p *Peer) wantMissing(items []SyncItem) bool {
	send, want := diffHave(p.b.heldItems(items), items)
	return p.queueRecords(send) && p.sendWants("", p.toAsk(want))
}

// heldItems returns our item hash of each listed key we hold, read from the store.
func (b *Bridge) heldItems(items []SyncItem) map[string]string {
	mine := make(map[string]string, len(items))
	for _, it := range items {
		if h, ok := b.itemOf(it.Key); ok {
			mine[it.Key] = h
		}
	}
	return mine
}

// toAsk returns the keys of the items a "have" from p lists that we ask p for now.
//
// An item asked of another peer within askedFor is not asked again: a record that reached a
// node by anti-entropy is listed in a "have" to all its peers (see announce), so under a
// backlog one record was otherwise asked for, and sent, by up to every neighbour (measured:
// 2.3 M records sent for 630,000 deliveries). If the peer asked never answers, the next
// comparison of the stores asks again.
//
// From a peer in the broadcast tree the ask waits a graft timeout (see deferWant): a "have" is
// a lazy announcement, and the record is most likely coming down the tree already.
func (p *Peer) toAsk(items []SyncItem) []string {
	var keys []string
	for _, it := range items {
		if p.b.inTree(p) && p.b.deferWant(p, it) {
			continue
		}
		if !p.b.asked.add(askedKey(it)) {
			p.b.stats.notAsked.Add(1)
			continue
		}
		keys = append(keys, it.Key)
	}
	return keys
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

// sendTree queues our summaries of path's children. It reports false when p's catch-up
// backlog is full; an index that cannot be read is logged and the tree left out.
func (p *Peer) sendTree(path string) bool {
	sums, err := p.b.index.sums(path)
	if err != nil {
		p.b.log.Warn("sync index", "err", err)
		return true
	}
	return p.sendSync(&SyncBody{Op: syncOpTree, Path: path, Sums: sums})
}

// sendLeaf queues our listing of path. It reports false when p's catch-up backlog is full.
func (p *Peer) sendLeaf(path string, items []SyncItem) bool {
	return p.sendSync(&SyncBody{Op: syncOpLeaf, Path: path, Items: items})
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
