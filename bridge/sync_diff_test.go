package bridge

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// sums16 returns 16 summaries, all empty but those given by nibble.
func sums16(set map[int]SyncSum) []SyncSum {
	out := make([]SyncSum, syncFanout)
	for i, s := range set {
		out[i] = s
	}
	return out
}

func TestDiffTree(t *testing.T) {
	few := SyncSum{Count: 3, Hash: "aa"}
	fewOther := SyncSum{Count: 4, Hash: "bb"}
	many := SyncSum{Count: 30, Hash: "cc"}
	manyOther := SyncSum{Count: 30, Hash: "dd"}
	deep := strings.Repeat("0", syncMaxPath-1)
	for _, tc := range []struct {
		name         string
		path         string
		mine, theirs []SyncSum
		want         []childStep
	}{
		{name: "both empty", mine: sums16(nil), theirs: sums16(nil)},
		{name: "equal", mine: sums16(map[int]SyncSum{2: many, 15: few}), theirs: sums16(map[int]SyncSum{2: many, 15: few})},
		{name: "peer has nothing there: send all",
			mine: sums16(map[int]SyncSum{3: many}), theirs: sums16(nil),
			want: []childStep{{path: "3", step: stepSendAll}}},
		{name: "we have nothing there: ask all",
			mine: sums16(nil), theirs: sums16(map[int]SyncSum{10: many}),
			want: []childStep{{path: "a", step: stepAskAll}}},
		{name: "few keys on both sides: leaf",
			path: "7f", mine: sums16(map[int]SyncSum{0: few}), theirs: sums16(map[int]SyncSum{0: fewOther}),
			want: []childStep{{path: "7f0", step: stepLeaf}}},
		{name: "exactly syncLeafMax keys: leaf",
			mine:   sums16(map[int]SyncSum{1: {Count: syncLeafMax - 1, Hash: "aa"}}),
			theirs: sums16(map[int]SyncSum{1: {Count: 1, Hash: "bb"}}),
			want:   []childStep{{path: "1", step: stepLeaf}}},
		{name: "many keys: one level down",
			mine: sums16(map[int]SyncSum{4: many}), theirs: sums16(map[int]SyncSum{4: manyOther}),
			want: []childStep{{path: "4", step: stepTree}}},
		{name: "a path that cannot be split: leaf",
			path: deep, mine: sums16(map[int]SyncSum{5: many}), theirs: sums16(map[int]SyncSum{5: manyOther}),
			want: []childStep{{path: deep + "5", step: stepLeaf}}},
		{name: "same count, other hash",
			mine: sums16(map[int]SyncSum{6: {Count: 40, Hash: "11"}}), theirs: sums16(map[int]SyncSum{6: {Count: 40, Hash: "22"}}),
			want: []childStep{{path: "6", step: stepTree}}},
		{name: "in nibble order",
			mine:   sums16(map[int]SyncSum{1: many, 9: few, 12: many}),
			theirs: sums16(map[int]SyncSum{0: few, 9: fewOther, 12: manyOther}),
			want: []childStep{
				{path: "0", step: stepAskAll}, {path: "1", step: stepSendAll},
				{path: "9", step: stepLeaf}, {path: "c", step: stepTree},
			}},
		{name: "short lists are compared as far as they go",
			mine: sums16(map[int]SyncSum{0: many}), theirs: []SyncSum{manyOther},
			want: []childStep{{path: "0", step: stepTree}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := diffTree(tc.path, tc.mine, tc.theirs)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("diffTree = %v, want %v", got, tc.want)
			}
		})
	}
}

func syncItems(kv ...string) []SyncItem {
	var out []SyncItem
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, SyncItem{Key: kv[i], Hash: kv[i+1]})
	}
	return out
}

func TestDiffLeaf(t *testing.T) {
	for _, tc := range []struct {
		name         string
		mine, theirs []SyncItem
		send         []string
		want         []SyncItem
	}{
		{name: "both empty"},
		{name: "equal", mine: syncItems("a", "1", "b", "2"), theirs: syncItems("b", "2", "a", "1")},
		{name: "peer lists nothing: send all", mine: syncItems("a", "1", "b", "2"), send: []string{"a", "b"}},
		{name: "we hold nothing: want all", theirs: syncItems("a", "1", "b", "2"), want: syncItems("a", "1", "b", "2")},
		{name: "other version: both ways", mine: syncItems("a", "1"), theirs: syncItems("a", "9"),
			send: []string{"a"}, want: syncItems("a", "9")},
		{name: "mixed, each in its own order",
			mine:   syncItems("z", "1", "same", "s", "a", "2", "mineOnly", "m"),
			theirs: syncItems("a", "3", "theirsOnly", "t", "same", "s", "z", "4"),
			send:   []string{"z", "a", "mineOnly"},
			want:   syncItems("a", "3", "theirsOnly", "t", "z", "4")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			send, want := diffLeaf(tc.mine, tc.theirs)
			if !reflect.DeepEqual(send, tc.send) || !reflect.DeepEqual(want, tc.want) {
				t.Fatalf("diffLeaf = send %v want %v; expected send %v want %v", send, want, tc.send, tc.want)
			}
		})
	}
}

func TestDiffHave(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mine   map[string]string
		theirs []SyncItem
		send   []string
		want   []SyncItem
	}{
		{name: "empty list"},
		{name: "we hold the same", mine: map[string]string{"a": "1"}, theirs: syncItems("a", "1")},
		{name: "we lack it: want", theirs: syncItems("a", "1"), want: syncItems("a", "1")},
		{name: "other version: send ours, want theirs", mine: map[string]string{"a": "2"}, theirs: syncItems("a", "1"),
			send: []string{"a"}, want: syncItems("a", "1")},
		{name: "keys not listed are left alone", mine: map[string]string{"other": "1"}, theirs: syncItems("a", "1"),
			want: syncItems("a", "1")},
		{name: "in the list's order",
			mine:   map[string]string{"c": "x", "b": "2", "a": "y"},
			theirs: syncItems("c", "3", "b", "2", "d", "4", "a", "1"),
			send:   []string{"c", "a"},
			want:   syncItems("c", "3", "d", "4", "a", "1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			send, want := diffHave(tc.mine, tc.theirs)
			if !reflect.DeepEqual(send, tc.send) || !reflect.DeepEqual(want, tc.want) {
				t.Fatalf("diffHave = send %v want %v; expected send %v want %v", send, want, tc.send, tc.want)
			}
		})
	}
}

// memSide is one side of a simulated comparison: key -> item hash, summarised as the tree
// index would.
type memSide map[string][16]byte

func (s memSide) under(path string) []syncEntry {
	var out []syncEntry
	for k, ih := range s {
		if kh := keyHash(k); strings.HasPrefix(kh, path) {
			out = append(out, syncEntry{kh: kh, key: k, ih: ih})
		}
	}
	slices.SortFunc(out, func(a, b syncEntry) int { return strings.Compare(a.kh, b.kh) })
	return out
}

func (s memSide) sums(path string) []SyncSum {
	var n [syncFanout]int64
	var x [syncFanout][16]byte
	for _, e := range s.under(path) {
		c := hexNibble(e.kh[len(path)])
		n[c]++
		for i := range x[c] {
			x[c][i] ^= e.ih[i]
		}
	}
	out := make([]SyncSum, syncFanout)
	for c := range out {
		out[c].Count = n[c]
		if n[c] > 0 {
			out[c].Hash = hex.EncodeToString(x[c][:])
		}
	}
	return out
}

func (s memSide) items(path string) []SyncItem {
	var out []SyncItem
	for _, e := range s.under(path) {
		out = append(out, SyncItem{Key: e.key, Hash: hex.EncodeToString(e.ih[:])})
	}
	return out
}

// walk runs the tree walk between a and b on the pure diffs, and returns the keys each side
// sends the other (records sent outright, and the answers to wants).
func walk(t *testing.T, a, b memSide) (aSends, bSends map[string]bool) {
	type msg struct {
		from, to int // 0: a, 1: b
		op, path string
		sums     []SyncSum
		items    []SyncItem
	}
	sides := []memSide{a, b}
	sent := []map[string]bool{{}, {}}
	queue := []msg{{from: 0, to: 1, op: syncOpTree, sums: a.sums("")}}
	for n := 0; len(queue) > 0; n++ {
		if n > 1e6 {
			t.Fatal("the walk does not end")
		}
		m := queue[0]
		queue = queue[1:]
		me, peer := m.to, m.from
		switch m.op {
		case syncOpTree:
			for _, c := range diffTree(m.path, sides[me].sums(m.path), m.sums) {
				switch c.step {
				case stepSendAll:
					for _, k := range itemKeys(sides[me].items(c.path)) {
						sent[me][k] = true
					}
				case stepAskAll:
					queue = append(queue, msg{from: me, to: peer, op: syncOpLeaf, path: c.path})
				case stepLeaf:
					queue = append(queue, msg{from: me, to: peer, op: syncOpLeaf, path: c.path, items: sides[me].items(c.path)})
				case stepTree:
					queue = append(queue, msg{from: me, to: peer, op: syncOpTree, path: c.path, sums: sides[me].sums(c.path)})
				}
			}
		case syncOpLeaf:
			send, want := diffLeaf(sides[me].items(m.path), m.items)
			for _, k := range send {
				sent[me][k] = true
			}
			for _, it := range want {
				if _, ok := sides[peer][it.Key]; ok {
					sent[peer][it.Key] = true // the peer answers the want
				}
			}
		}
	}
	return sent[0], sent[1]
}

// TestDiffWalkFindsEveryDifference runs whole comparisons on the pure diffs: each side sends
// exactly the keys the other lacks or holds in another version.
func TestDiffWalkFindsEveryDifference(t *testing.T) {
	ih := func(key string, v int) [16]byte {
		sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", key, v)))
		var out [16]byte
		copy(out[:], sum[:])
		return out
	}
	for _, tc := range []struct {
		name           string
		shared, onlyA  int
		onlyB, changed int
	}{
		{name: "both empty"},
		{name: "equal", shared: 500},
		{name: "a empty", onlyB: 300},
		{name: "b empty", onlyA: 300},
		{name: "one difference in many", shared: 3000, changed: 1},
		{name: "a few of each", shared: 2000, onlyA: 20, onlyB: 30, changed: 40},
		{name: "mostly different", shared: 10, onlyA: 200, onlyB: 200, changed: 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := memSide{}, memSide{}
			wantA, wantB := map[string]bool{}, map[string]bool{}
			for i := range tc.shared {
				k := fmt.Sprintf("shared-%d", i)
				a[k], b[k] = ih(k, 0), ih(k, 0)
				if i < tc.changed {
					b[k] = ih(k, 1)
					wantA[k], wantB[k] = true, true
				}
			}
			for i := range tc.onlyA {
				k := fmt.Sprintf("a-%d", i)
				a[k], wantA[k] = ih(k, 0), true
			}
			for i := range tc.onlyB {
				k := fmt.Sprintf("b-%d", i)
				b[k], wantB[k] = ih(k, 0), true
			}
			aSends, bSends := walk(t, a, b)
			if !maps.Equal(aSends, wantA) || !maps.Equal(bSends, wantB) {
				t.Fatalf("a sends %d keys (want %d), b sends %d (want %d)", len(aSends), len(wantA), len(bSends), len(wantB))
			}
		})
	}
}
