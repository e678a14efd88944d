package db

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestForgeryRefused replays a real ToolDb h and s onto a forged value with a newer timestamp:
// ToolDb at its default pow 0 stores it; we refuse it.
func TestForgeryRefused(t *testing.T) {
	v := loadVectors(t)
	var orig Record
	for _, r := range v.Records {
		if r.PoW == 0 && r.Note == "putData" {
			var err error
			if orig, err = ParseRecord([]byte(r.JSON)); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	now := vectorNow(t, orig)
	s := openMem(t, Config{Now: func() time.Time { return now }})
	if _, err := s.Put(context.Background(), orig); err != nil {
		t.Fatal(err)
	}
	forged := orig
	forged.Value = json.RawMessage(`"FORGED"`)
	forged.Time = orig.Time + 1
	if _, err := s.Put(context.Background(), forged); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("forgery: %v", err)
	}
	if got, _ := s.Get(orig.Key); got.Hash != orig.Hash || string(got.Value) != string(orig.Value) {
		t.Fatal("forgery changed the store")
	}
}

// TestEveryFailureRefused: each check has its own error, fires in ToolDb's order, and leaves
// nothing stored.
func TestEveryFailureRefused(t *testing.T) {
	u, other := mustUser(t), mustUser(t)
	good := func(key string) Record { return mustRecord(t, u, key, `{"x":1}`, "", testNow) }
	resign := func(r Record) Record {
		r.Hash = ComputeHash(r.Value, r.Author, r.Time, r.Nonce)
		r.Sig, _ = u.SignHash(r.Hash)
		return r
	}
	cases := []struct {
		name string
		rec  func() Record
		json string // when set, PutJSON this instead
		want error
	}{
		{name: "not json", json: `{"k":`, want: ErrMalformed},
		{name: "t not integer", json: `{"k":"a","a":"b","n":0,"t":1.5,"h":"c","s":"d","v":1,"c":null}`, want: ErrMalformed},
		{name: "c missing", json: `{"k":"a","a":"b","n":0,"t":1,"h":"c","s":"d","v":1}`, want: ErrMissingField},
		{name: "v missing", json: `{"k":"a","a":"b","n":0,"t":1,"h":"c","s":"d","c":null}`, want: ErrMissingField},
		{name: "empty key", rec: func() Record { r := good("k"); r.Key = ""; return r }, want: ErrMissingField},
		{name: "future", rec: func() Record {
			return mustRecord(t, u, "k", "1", "", testNow.Add(MaxClockSkew+time.Millisecond))
		}, want: ErrFutureTimestamp},
		{name: "frozen taken", rec: func() Record {
			return mustRecord(t, other, "==taken", "1", "", testNow)
		}, want: ErrFrozenKey},
		{name: "user key of another", rec: func() Record { return good(UserKey(other.Address(), "x")) }, want: ErrAddressMismatch},
		{name: "hash", rec: func() Record { r := good("k"); r.Value = json.RawMessage(`{"x":2}`); return r }, want: ErrHashMismatch},
		{name: "hash nonce", rec: func() Record { r := good("k"); r.Nonce++; return r }, want: ErrHashMismatch},
		{name: "pow", rec: func() Record {
			r := good("pow")
			for strings.HasPrefix(r.Hash, "0") { // keep a hash without the leading zero
				r.Nonce++
				r = resign(r)
			}
			return r
		}, want: ErrNoProofOfWork},
		{name: "address", rec: func() Record {
			r := good("k")
			r.Author = "not-an-address"
			return resign(r)
		}, want: ErrInvalidAddress},
		{name: "signature of another", rec: func() Record {
			r := good("k")
			r.Sig, _ = other.SignHash(r.Hash)
			return r
		}, want: ErrBadSignature},
		{name: "signature not hex", rec: func() Record { r := good("k"); r.Sig = strings.Repeat("z", 128); return r }, want: ErrBadSignature},
		{name: "bad crdt type", rec: func() Record { return mustRecord(t, u, "c", `[]`, "SET", testNow) }, want: ErrBadCRDT},
		{name: "bad crdt changes", rec: func() Record { return mustRecord(t, u, "c", `[{"t":"SET"}]`, TypeMap, testNow) }, want: ErrBadCRDT},
		{name: "hook", rec: func() Record { return good("guarded/1") }, want: ErrRejectedByHook},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pow := 0
			if c.name == "pow" {
				pow = 1
			}
			s := openMem(t, Config{Verifier: Verifier{PoW: pow, Hooks: []Hook{{
				Prefix: "guarded/",
				Check:  func(*Record, *Record) error { return errors.New("no") },
			}}}})
			owner, _ := u.NewRecord("==taken", []byte("0"), "", testNow.Add(-time.Hour), 1)
			if _, err := s.Put(context.Background(), owner); err != nil {
				t.Fatal(err)
			}
			before := dump(t, s)
			var err error
			if c.json != "" {
				_, err = s.PutJSON(context.Background(), []byte(c.json))
			} else {
				r := c.rec()
				if c.name == "pow" {
					r = resign(r)
				}
				_, err = s.Put(context.Background(), r)
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			for _, other := range cases {
				if other.want != c.want && errors.Is(err, other.want) {
					t.Fatalf("%v also matches %v", err, other.want)
				}
			}
			if dump(t, s) != before {
				t.Fatal("a refused record changed the store")
			}
			if st := s.Stats(); st.Rejected != 1 || st.Accepted != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestVerifyOrder: when several checks fail, the first in ToolDb's order is reported.
func TestVerifyOrder(t *testing.T) {
	u, other := mustUser(t), mustUser(t)
	r := mustRecord(t, u, UserKey(other.Address(), "x"), "1", "", testNow.Add(time.Hour))
	r.Value = json.RawMessage("2")
	vf := Verifier{}
	if err := vf.Verify(&r, nil, testNow); !errors.Is(err, ErrFutureTimestamp) {
		t.Fatal(err)
	}
	if err := vf.Verify(&r, nil, testNow.Add(time.Hour)); !errors.Is(err, ErrAddressMismatch) {
		t.Fatal(err)
	}
}

func TestCanonicalJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{"b":1,"a":2,"10":3,"2":4,"01":5}`:                             `{"2":4,"10":3,"b":1,"a":2,"01":5}`,
		`{"a":1,"b":2,"a":3}`:                                           `{"a":3,"b":2}`,
		`[1e21, 1e20, -0, 0.000001, 1e-7, 1.50, 123456789012345680000]`: `[1e+21,100000000000000000000,0,0.000001,1e-7,1.5,123456789012345680000]`,
		`"<&>\u2028\u0001\/"`:                                           "\"<&>\u2028\\u0001/\"",
		` { "x" : [ ] } `:                                               `{"x":[]}`,
		`1e400`:                                                         `null`,
	} {
		got, err := CanonicalJSON([]byte(in))
		if err != nil || string(got) != want {
			t.Errorf("CanonicalJSON(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
}
