package bridge

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"

	"github.com/swarmdb/swarmdb/db"
)

// The tree index of anti-entropy (the protocol is in sync.go).
//
// Every stored key gets an item hash: sha256 over the key and the h and s of what we hold for it
// (the record; for a CRDT key every kept signed source, sorted), truncated to 16 bytes. Keys sit
// in a fixed 16-ary tree by sha256(key) in hex: the node at path "3a" holds the keys whose
// key-hash starts with "3a", and summarises them as (count, XOR of item hashes). XOR makes the
// summary independent of order, and any difference in any key changes it (up to a 2^-128
// collision).

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
