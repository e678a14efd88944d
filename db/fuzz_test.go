package db

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

func seedVectors(f *testing.F) vectors {
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		f.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		f.Fatal(err)
	}
	return v
}

// FuzzParseRecord: parsing never panics, and a parsed record re-encodes to bytes that parse to
// the same record.
func FuzzParseRecord(f *testing.F) {
	v := seedVectors(f)
	for _, r := range v.Records {
		f.Add([]byte(r.JSON))
	}
	for _, c := range v.CRDTs {
		f.Add([]byte(c.JSONs[0]))
	}
	f.Add([]byte(`{"k":"a","a":"b","n":0,"t":1,"h":"c","s":"d","v":1,"c":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRecord(b)
		if err != nil {
			return
		}
		again, err := ParseRecord(AppendRecord(nil, &r))
		if err != nil {
			t.Fatalf("re-encoded record does not parse: %v", err)
		}
		if again.Key != r.Key || again.Author != r.Author || again.Hash != r.Hash || again.Sig != r.Sig ||
			again.Time != r.Time || again.Nonce != r.Nonce || again.CRDT != r.CRDT || !bytes.Equal(again.Value, r.Value) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", r, again)
		}
		_ = (&Verifier{}).Verify(&r, nil, testNow)
	})
}

// FuzzParseChanges: parsing never panics; the re-encoded list parses to an equal set, merging
// with itself changes nothing, and computing the value never panics.
func FuzzParseChanges(f *testing.F) {
	v := seedVectors(f)
	for _, c := range v.CRDTs {
		for _, j := range c.JSONs {
			r, _ := ParseRecord([]byte(j))
			f.Add(r.CRDT, []byte(r.Value))
		}
	}
	f.Add(TypeList, []byte(`[{"t":"DEL","i":"a-00000001","v":"zz"},{"t":"INS","i":"a-00000000","v":1,"n":"q"}]`))
	f.Fuzz(func(t *testing.T, typ string, b []byte) {
		cs, err := ParseChanges(typ, b)
		if err != nil {
			return
		}
		_ = cs.Value()
		again, err := ParseChanges(typ, cs.AppendJSON(nil))
		if err != nil {
			t.Fatalf("re-encoded changes do not parse: %v", err)
		}
		if again.Kind != cs.Kind && cs.Kind != KindNone {
			// A LIST of counter-shaped changes is read as a counter either way.
			t.Fatalf("kind changed: %v -> %v", cs.Kind, again.Kind)
		}
		if !again.Equal(cs) {
			t.Fatal("round trip changed the set")
		}
		m, err := cs.Merge(cs)
		if err != nil || !m.Equal(cs) {
			t.Fatalf("merge with itself: %v", err)
		}
	})
}

// FuzzCanonicalJSON: the canonical form is valid JSON, canonical itself (a fixed point), and
// means the same as the input.
func FuzzCanonicalJSON(f *testing.F) {
	for _, s := range []string{`{"b":1,"2":[1e21,-0,1.5e-7]}`, `"\u2028<&>"`, `[{"a":{"a":1,"a":2}}]`, `123456789.123456789`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := CanonicalJSON(b)
		if err != nil {
			return
		}
		if !json.Valid(c) {
			t.Fatalf("invalid JSON %q from %q", c, b)
		}
		c2, err := CanonicalJSON(c)
		if err != nil || !bytes.Equal(c, c2) {
			t.Fatalf("not a fixed point: %q -> %q (%v)", c, c2, err)
		}
	})
}

// FuzzParseAddress: never panics; an accepted address round-trips.
func FuzzParseAddress(f *testing.F) {
	v := seedVectors(f)
	f.Add(v.Keys[0].Address)
	f.Add("not an address")
	f.Fuzz(func(t *testing.T, a string) {
		pub, err := ParseAddress(a)
		if err != nil {
			return
		}
		got, err := AddressOf(pub)
		if err != nil || got != a {
			t.Fatalf("address %q round-trips to %q (%v)", a, got, err)
		}
	})
}
