package bridge

import (
	"reflect"
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
