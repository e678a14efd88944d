package db

// Last-write-wins with a total order, so any two stores that see the same records agree.
//
// ToolDb replaces a stored record only when the incoming t is strictly greater and has no
// tie-break, so two nodes receiving equal-t records in different orders diverge forever. We order
// by t, then by h, then by s (the hash differs whenever value, author or nonce differ; s only
// separates two signatures of the same content), and the greater record wins.

// compareLWW returns +1 if a wins over b, -1 if b wins, 0 if they are the same record.
func compareLWW(a, b *Record) int {
	switch {
	case a.Time != b.Time:
		return cmp3(a.Time > b.Time)
	case a.Hash != b.Hash:
		return cmp3(a.Hash > b.Hash)
	case a.Sig != b.Sig:
		return cmp3(a.Sig > b.Sig)
	}
	return 0
}

func cmp3(greater bool) int {
	if greater {
		return 1
	}
	return -1
}

// frozenBeats reports whether a owns a frozen "==" key against b of another author: the older
// record wins (first writer owns the name), and on equal t the LWW tie-break decides, so the
// outcome never depends on arrival order.
func frozenBeats(a, b *Record) bool {
	if a.Time != b.Time {
		return a.Time < b.Time
	}
	return compareLWW(a, b) > 0
}

// frozenRejects reports whether incoming must be refused on a frozen key holding stored: another
// author got there first. The same author may update its own frozen key.
func frozenRejects(stored, incoming *Record) bool {
	return stored.Author != incoming.Author && !frozenBeats(incoming, stored)
}

// Outcome says what a verified record did to the store.
type Outcome int

const (
	// Stored: the record is now the key's value (plain LWW or frozen-key win).
	Stored Outcome = iota + 1
	// Merged: the CRDT change list added changes to the key's merged state.
	Merged
	// Stale: a plain record that lost to the stored one under LWW; nothing changed.
	Stale
	// Duplicate: the same record (same h and s) is already stored; nothing changed.
	Duplicate
	// Subsumed: a CRDT change list whose every change the store already holds; nothing changed.
	Subsumed
)

func (o Outcome) String() string {
	switch o {
	case Stored:
		return "stored"
	case Merged:
		return "merged"
	case Stale:
		return "stale"
	case Duplicate:
		return "duplicate"
	case Subsumed:
		return "subsumed"
	}
	return "unknown"
}

// Changed reports whether the outcome changed the store (and was published to watchers).
func (o Outcome) Changed() bool { return o == Stored || o == Merged }

// resolvePlain decides what a verified plain record does against the stored record prev
// (nil if none). It is the write path's pure core.
func resolvePlain(prev, rec *Record) (Outcome, error) {
	if prev == nil {
		return Stored, nil
	}
	if prev.CRDT != "" {
		return 0, ErrCRDTKindConflict
	}
	if IsFrozenKey(rec.Key) && prev.Author != rec.Author {
		if frozenBeats(rec, prev) {
			return Stored, nil
		}
		return 0, ErrFrozenKey
	}
	switch compareLWW(rec, prev) {
	case 1:
		return Stored, nil
	case 0:
		return Duplicate, nil
	}
	return Stale, nil
}
