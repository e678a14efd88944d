package db

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
)

// ToolDb's CRDTs are state-based: every crdtPut carries the writer's full change list, and a
// receiver merges it into what it holds. A ChangeSet is that list as a set: changes are
// deduplicated on ToolDb's identity for the kind and kept in ToolDb's apply order, so merging is
// a set union and therefore commutative, associative and idempotent. Where ToolDb would keep
// whichever of two same-identity changes arrived first, we keep the one with the greater bytes,
// so the result never depends on arrival order.

// CRDT type names as they appear in c.
const (
	TypeMap     = "MAP"
	TypeList    = "LIST"
	TypeCounter = "COUNTER"
)

// CRDTKind is what a change list really is. ToolDb 2.6.6 labels counters "LIST"
// (CounterCrdt.type = CRDT_LIST); a "LIST" whose changes are all ADD/SUB with numeric v and i and
// an author is a counter, and we merge it as one.
type CRDTKind int

const (
	KindNone CRDTKind = iota // an empty change list: compatible with any kind
	KindMap
	KindList
	KindCounter
)

func (k CRDTKind) String() string {
	switch k {
	case KindMap:
		return TypeMap
	case KindList:
		return TypeList
	case KindCounter:
		return TypeCounter
	}
	return "NONE"
}

// Change is one CRDT change.
//
//	MAP     {"t":"SET"|"DEL","k":key,"a":author,"i":perKeyCounter,"v"?:value}
//	LIST    {"t":"INS","i":"<author>-<8 digits>","v":value,"p"?:prevIndex,"n"?:nextIndex}
//	        {"t":"DEL","i":"<author>-<8 digits>","v":targetIndex}
//	COUNTER {"t":"ADD"|"SUB","v":number,"a":author,"i":authorChangeCount}
type Change struct {
	Op     string          // t
	Key    string          // k (MAP)
	Author string          // a (MAP, COUNTER)
	Seq    float64         // i (MAP, COUNTER)
	Index  string          // i (LIST)
	Prev   string          // p (LIST INS)
	Next   string          // n (LIST INS)
	Value  json.RawMessage // v, compact
	Raw    []byte          // the change object as received, compact
}

// ChangeSet is a deduplicated, ordered CRDT change list.
type ChangeSet struct {
	Kind    CRDTKind
	Changes []Change
}

// ParseChanges decodes the change list v of a record labelled c.
func ParseChanges(c string, v []byte) (ChangeSet, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(v, &items); err != nil {
		return ChangeSet{}, fmt.Errorf("%w: v is not an array", ErrBadCRDT)
	}
	var kind CRDTKind
	switch c {
	case TypeMap:
		kind = KindMap
	case TypeList:
		kind = KindList
	case TypeCounter:
		kind = KindCounter
	default:
		return ChangeSet{}, fmt.Errorf("%w: unknown type %q", ErrBadCRDT, c)
	}
	if len(items) == 0 {
		return ChangeSet{}, nil
	}
	fields := make([]map[string]json.RawMessage, len(items))
	for i, it := range items {
		if err := json.Unmarshal(it, &fields[i]); err != nil || fields[i] == nil {
			return ChangeSet{}, fmt.Errorf("%w: change %d is not an object", ErrBadCRDT, i)
		}
	}
	if kind == KindList && looksLikeCounter(fields) {
		kind = KindCounter
	}
	cs := ChangeSet{Kind: kind, Changes: make([]Change, 0, len(items))}
	for i, f := range fields {
		ch, err := parseChange(kind, f)
		if err != nil {
			return ChangeSet{}, fmt.Errorf("%w: change %d: %v", ErrBadCRDT, i, err)
		}
		var buf bytes.Buffer
		_ = json.Compact(&buf, items[i])
		ch.Raw = buf.Bytes()
		cs.Changes = append(cs.Changes, ch)
	}
	cs.normalize()
	return cs, nil
}

func looksLikeCounter(fields []map[string]json.RawMessage) bool {
	for _, f := range fields {
		op, _ := jsonString(f["t"], "t")
		if op != "ADD" && op != "SUB" {
			return false
		}
		if _, err := jsonNumber(f["v"]); err != nil {
			return false
		}
		if _, err := jsonNumber(f["i"]); err != nil {
			return false
		}
		if _, err := jsonString(f["a"], "a"); err != nil {
			return false
		}
	}
	return true
}

func jsonNumber(raw json.RawMessage) (float64, error) {
	if len(raw) == 0 || !(raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')) {
		return 0, fmt.Errorf("not a number")
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsInf(f, 0) {
		return 0, fmt.Errorf("not a finite number")
	}
	return f, nil
}

// optString reads an optional string field; absent and null both mean "".
func optString(f map[string]json.RawMessage, name string) (string, error) {
	raw, ok := f[name]
	if !ok || string(raw) == "null" {
		return "", nil
	}
	return jsonString(raw, name)
}

func compactValue(raw json.RawMessage) json.RawMessage {
	if raw == nil {
		return nil
	}
	var buf bytes.Buffer
	_ = json.Compact(&buf, raw)
	return buf.Bytes()
}

func parseChange(kind CRDTKind, f map[string]json.RawMessage) (Change, error) {
	var ch Change
	var err error
	if ch.Op, err = jsonString(f["t"], "t"); err != nil {
		return ch, err
	}
	ch.Value = compactValue(f["v"])
	switch kind {
	case KindMap:
		if ch.Op != "SET" && ch.Op != "DEL" {
			return ch, fmt.Errorf("MAP op %q", ch.Op)
		}
		if ch.Key, err = jsonString(f["k"], "k"); err != nil {
			return ch, err
		}
		if ch.Author, err = jsonString(f["a"], "a"); err != nil {
			return ch, err
		}
		if ch.Seq, err = jsonNumber(f["i"]); err != nil {
			return ch, fmt.Errorf("i: %v", err)
		}
		if ch.Op == "SET" && ch.Value == nil {
			return ch, fmt.Errorf("SET without v")
		}
	case KindList:
		if ch.Index, err = jsonString(f["i"], "i"); err != nil {
			return ch, err
		}
		switch ch.Op {
		case "INS":
			if ch.Value == nil {
				return ch, fmt.Errorf("INS without v")
			}
			if ch.Prev, err = optString(f, "p"); err != nil {
				return ch, err
			}
			if ch.Next, err = optString(f, "n"); err != nil {
				return ch, err
			}
		case "DEL":
			if _, err := jsonString(ch.Value, "v"); err != nil {
				return ch, err
			}
		default:
			return ch, fmt.Errorf("LIST op %q", ch.Op)
		}
	case KindCounter:
		if ch.Op != "ADD" && ch.Op != "SUB" {
			return ch, fmt.Errorf("COUNTER op %q", ch.Op)
		}
		if ch.Author, err = jsonString(f["a"], "a"); err != nil {
			return ch, err
		}
		if ch.Seq, err = jsonNumber(f["i"]); err != nil {
			return ch, fmt.Errorf("i: %v", err)
		}
		if _, err = jsonNumber(ch.Value); err != nil {
			return ch, fmt.Errorf("v: %v", err)
		}
	}
	return ch, nil
}

// cmpIdentity orders changes by ToolDb's apply order, then by the rest of ToolDb's dedup
// identity for the kind: MAP (i, SET<DEL, a, k), LIST (i, t, v), COUNTER (i, a, t).
func cmpIdentity(kind CRDTKind, x, y *Change) int {
	switch kind {
	case KindMap:
		if c := cmp.Compare(x.Seq, y.Seq); c != 0 {
			return c
		}
		if x.Op != y.Op { // "DEL" < "SET" as strings; ToolDb applies SET first
			if x.Op == "SET" {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(x.Author, y.Author); c != 0 {
			return c
		}
		return cmp.Compare(x.Key, y.Key)
	case KindList:
		if c := cmp.Compare(x.Index, y.Index); c != 0 {
			return c
		}
		if c := cmp.Compare(x.Op, y.Op); c != 0 {
			return c
		}
		return bytes.Compare(x.Value, y.Value)
	case KindCounter:
		if c := cmp.Compare(x.Seq, y.Seq); c != 0 {
			return c
		}
		if c := cmp.Compare(x.Author, y.Author); c != 0 {
			return c
		}
		return cmp.Compare(x.Op, y.Op)
	}
	return 0
}

// normalize sorts the changes and keeps, of each identity, the change with the greatest bytes.
func (cs *ChangeSet) normalize() {
	sort.SliceStable(cs.Changes, func(i, j int) bool {
		if c := cmpIdentity(cs.Kind, &cs.Changes[i], &cs.Changes[j]); c != 0 {
			return c < 0
		}
		return bytes.Compare(cs.Changes[i].Raw, cs.Changes[j].Raw) < 0
	})
	out := cs.Changes[:0]
	for i := range cs.Changes {
		if n := len(out); n > 0 && cmpIdentity(cs.Kind, &out[n-1], &cs.Changes[i]) == 0 {
			out[n-1] = cs.Changes[i] // sorted by bytes: the later one is greater
			continue
		}
		out = append(out, cs.Changes[i])
	}
	cs.Changes = out
}

// Merge returns the union of cs and o. Sets of different non-empty kinds do not merge.
func (cs ChangeSet) Merge(o ChangeSet) (ChangeSet, error) {
	kind := cs.Kind
	switch {
	case cs.Kind == KindNone:
		kind = o.Kind
	case o.Kind != KindNone && o.Kind != cs.Kind:
		return ChangeSet{}, fmt.Errorf("%w: %s with %s", ErrCRDTKindConflict, cs.Kind, o.Kind)
	}
	out := ChangeSet{Kind: kind, Changes: make([]Change, 0, len(cs.Changes)+len(o.Changes))}
	out.Changes = append(append(out.Changes, cs.Changes...), o.Changes...)
	out.normalize()
	return out, nil
}

// Contains reports whether every change of o (same identity and bytes) is in cs.
func (cs ChangeSet) Contains(o ChangeSet) bool {
	if o.Kind != KindNone && cs.Kind != KindNone && o.Kind != cs.Kind {
		return false
	}
	i := 0
	for j := range o.Changes {
		for i < len(cs.Changes) && cmpChange(cs.Kind, &cs.Changes[i], &o.Changes[j]) < 0 {
			i++
		}
		if i == len(cs.Changes) || cmpChange(cs.Kind, &cs.Changes[i], &o.Changes[j]) != 0 {
			return false
		}
	}
	return true
}

func cmpChange(kind CRDTKind, x, y *Change) int {
	if c := cmpIdentity(kind, x, y); c != 0 {
		return c
	}
	return bytes.Compare(x.Raw, y.Raw)
}

// Equal reports whether cs and o hold the same changes.
func (cs ChangeSet) Equal(o ChangeSet) bool {
	return len(cs.Changes) == len(o.Changes) && cs.Contains(o)
}

// AppendJSON appends the change list as a JSON array, in apply order, each change as received.
func (cs ChangeSet) AppendJSON(b []byte) []byte {
	b = append(b, '[')
	for i := range cs.Changes {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, cs.Changes[i].Raw...)
	}
	return append(b, ']')
}

// Value computes the CRDT's value as JSON, applying the changes in order as ToolDb does: a MAP
// gives an object, a LIST an array, a COUNTER a number. An empty set gives null.
func (cs ChangeSet) Value() json.RawMessage {
	switch cs.Kind {
	case KindMap:
		return cs.mapValue()
	case KindList:
		return cs.listValue()
	case KindCounter:
		var sum float64
		for _, ch := range cs.Changes {
			v, _ := jsonNumber(ch.Value)
			if ch.Op == "ADD" {
				sum += v
			} else {
				sum -= v
			}
		}
		return appendJSNumber(nil, sum)
	}
	return json.RawMessage("null")
}

func (cs ChangeSet) mapValue() json.RawMessage {
	var keys []string
	vals := map[string]json.RawMessage{}
	for _, ch := range cs.Changes {
		switch ch.Op {
		case "SET":
			if _, ok := vals[ch.Key]; !ok {
				keys = append(keys, ch.Key)
			}
			vals[ch.Key] = ch.Value
		case "DEL":
			if _, ok := vals[ch.Key]; ok {
				delete(vals, ch.Key)
				for i, k := range keys {
					if k == ch.Key {
						keys = append(keys[:i], keys[i+1:]...)
						break
					}
				}
			}
		}
	}
	b := []byte{'{'}
	for i, k := range jsKeyOrder(keys) {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSString(b, k)
		b = append(b, ':')
		b = append(b, vals[k]...)
	}
	return append(b, '}')
}

// listValue replays ToolDb's ListCrdt.calculate: each INS goes after its p (or before its n,
// or first), each DEL tombstones its target. A DEL whose target is unknown is ignored (ToolDb
// throws).
func (cs ChangeSet) listValue() json.RawMessage {
	type cursor struct {
		index string
		value json.RawMessage
		tomb  bool
	}
	var temp []cursor
	find := func(idx string) int {
		for i := range temp {
			if temp[i].index == idx {
				return i
			}
		}
		return -1
	}
	for _, ch := range cs.Changes {
		switch ch.Op {
		case "INS":
			pos := 0
			if ch.Prev != "" {
				pos = find(ch.Prev) + 1
			} else if ch.Next != "" {
				pos = find(ch.Next)
			}
			if pos < 0 { // JavaScript's splice(-1, 0, x) counts from the end
				pos = max(len(temp)+pos, 0)
			}
			temp = append(temp, cursor{})
			copy(temp[pos+1:], temp[pos:])
			temp[pos] = cursor{index: ch.Index, value: ch.Value}
		case "DEL":
			var target string
			_ = json.Unmarshal(ch.Value, &target)
			if i := find(target); i >= 0 {
				temp[i].tomb = true
			}
		}
	}
	b := []byte{'['}
	n := 0
	for _, c := range temp {
		if c.tomb {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		b = append(b, c.value...)
		n++
	}
	return append(b, ']')
}
