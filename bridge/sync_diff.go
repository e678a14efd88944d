package bridge

// The comparison at the heart of anti-entropy (the protocol is in sync.go): given our summary
// of a part of the key space and the peer's, what to send and what to ask for. Pure: no I/O,
// no locks, no clock. The handlers in sync.go read the tree index or the store, call these,
// and queue what they say; the order of what they return is the order on the wire.

// treeStep is what one differing child of a compared tree node calls for.
type treeStep uint8

const (
	// stepSendAll: the peer holds nothing under the child, so we send every record we hold
	// there, with no listing first.
	stepSendAll treeStep = iota + 1
	// stepAskAll: we hold nothing under the child; an empty leaf makes the peer send it all.
	stepAskAll
	// stepLeaf: both sides together hold at most syncLeafMax keys there, or the path cannot be
	// split further: we list ours in a leaf.
	stepLeaf
	// stepTree: we answer with our summaries of the child's children, one level down.
	stepTree
)

// childStep is one child of a compared tree node that differs, and what it calls for.
type childStep struct {
	path string
	step treeStep
}

// diffTree compares our summaries of path's children with the peer's (syncFanout each, in
// nibble order) and returns a step for each child that differs, in nibble order. Equal
// children end the walk there.
func diffTree(path string, mine, theirs []SyncSum) []childStep {
	var out []childStep
	for i := range min(len(mine), len(theirs), syncFanout) {
		if mine[i] == theirs[i] {
			continue
		}
		child := path + string(hexDigits[i])
		out = append(out, childStep{path: child, step: stepFor(child, mine[i], theirs[i])})
	}
	return out
}

// stepFor says what a differing child calls for, from the two summaries of it.
func stepFor(child string, mine, theirs SyncSum) treeStep {
	switch {
	case theirs.Count == 0:
		return stepSendAll
	case mine.Count == 0:
		return stepAskAll
	case mine.Count+theirs.Count <= syncLeafMax || len(child) >= syncMaxPath:
		return stepLeaf
	default:
		return stepTree
	}
}

// diffLeaf compares our listing of a path with the peer's leaf of the same path. send is
// the keys of ours the peer lacks or holds in another version, in our order; want is the
// peer's items we lack or hold in another version, in its order.
func diffLeaf(mine, theirs []SyncItem) (send []string, want []SyncItem) {
	mineBy := itemsByKey(mine)
	theirsBy := itemsByKey(theirs)
	for _, it := range theirs {
		if mineBy[it.Key] != it.Hash {
			want = append(want, it)
		}
	}
	for _, it := range mine {
		if theirsBy[it.Key] != it.Hash {
			send = append(send, it.Key)
		}
	}
	return send, want
}

// diffHave compares a peer's "have" list with what we hold of the keys it lists (mine: our
// item hash of each of them we hold). send is the keys we hold in another version, want the
// items we lack or hold in another version; both in the list's order. A have lists only what
// the peer holds, so what we hold and it does not list is none of its business.
func diffHave(mine map[string]string, theirs []SyncItem) (send []string, want []SyncItem) {
	for _, it := range theirs {
		h, ok := mine[it.Key]
		if ok && h == it.Hash {
			continue
		}
		if ok {
			send = append(send, it.Key)
		}
		want = append(want, it)
	}
	return send, want
}

// itemsByKey maps each item's key to its hash (the last one listed, if a key repeats).
func itemsByKey(items []SyncItem) map[string]string {
	m := make(map[string]string, len(items))
	for _, it := range items {
		m[it.Key] = it.Hash
	}
	return m
}

// itemKeys returns the keys of items, in order.
func itemKeys(items []SyncItem) []string {
	if len(items) == 0 {
		return nil
	}
	keys := make([]string, len(items))
	for i, it := range items {
		keys[i] = it.Key
	}
	return keys
}
