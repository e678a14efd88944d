package db

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/tooldbtest"
)

// vectors.json is produced by `node testdata/tooldb/tooldb.js gen` with the real tool-db 2.6.6
// and @tool-db/ecdsa-user 1.1.3 from npm.
type vectors struct {
	Records []struct {
		PoW  int    `json:"pow"`
		Note string `json:"note"`
		JSON string `json:"json"`
	} `json:"records"`
	CRDTs []struct {
		Name   string            `json:"name"`
		Type   string            `json:"type"`
		JSONs  []string          `json:"jsons"`
		ValueA json.RawMessage   `json:"valueA"`
		ValueB json.RawMessage   `json:"valueB"`
		Merged json.RawMessage   `json:"merged"`
		Recs   []json.RawMessage `json:"records"`
	} `json:"crdts"`
	Signups []struct {
		User     string `json:"user"`
		Password string `json:"password"`
		JSON     string `json:"json"`
		Pub      string `json:"pub"`
		Priv     string `json:"priv"`
	} `json:"signups"`
	Keys []struct {
		Address string `json:"address"`
		Pub     string `json:"pub"`
		Priv    string `json:"priv"`
	} `json:"keys"`
}

func loadVectors(t *testing.T) vectors {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Records) == 0 || len(v.CRDTs) != 3 || len(v.Signups) == 0 || len(v.Keys) == 0 {
		t.Fatal("vectors.json is incomplete")
	}
	return v
}

// vectorNow is a clock just after the vectors were made (their t must not be in the future).
func vectorNow(t *testing.T, recs ...Record) time.Time {
	var max int64
	for _, r := range recs {
		max = maxInt(max, r.Time)
	}
	return time.UnixMilli(max).Add(time.Second)
}

func maxInt(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func TestGoldenRecordsVerify(t *testing.T) {
	v := loadVectors(t)
	for i, tc := range v.Records {
		rec, err := ParseRecord([]byte(tc.JSON))
		if err != nil {
			t.Fatalf("record %d (%s): %v", i, tc.Note, err)
		}
		vf := Verifier{PoW: tc.PoW}
		if err := vf.Verify(&rec, nil, vectorNow(t, rec)); err != nil {
			t.Errorf("record %d (%s, pow %d): %v", i, tc.Note, tc.PoW, err)
		}
		// Re-encoding gives ToolDb's exact bytes, and JavaScript's serialisation of v is ours.
		if got := AppendRecord(nil, &rec); string(got) != tc.JSON {
			t.Errorf("record %d: re-encoded\n%s\nwant\n%s", i, got, tc.JSON)
		}
		if c, err := CanonicalJSON(rec.Value); err != nil || !bytes.Equal(c, rec.Value) {
			t.Errorf("record %d: CanonicalJSON(%s) = %s, %v", i, rec.Value, c, err)
		}
	}
}

func TestGoldenCRDTs(t *testing.T) {
	v := loadVectors(t)
	for _, tc := range v.CRDTs {
		t.Run(tc.Name, func(t *testing.T) {
			var sets []ChangeSet
			for i, j := range tc.JSONs {
				rec, err := ParseRecord([]byte(j))
				if err != nil {
					t.Fatal(err)
				}
				if err := (&Verifier{}).Verify(&rec, nil, vectorNow(t, rec)); err != nil {
					t.Fatalf("source %d: %v", i, err)
				}
				cs, err := ParseChanges(rec.CRDT, rec.Value)
				if err != nil {
					t.Fatal(err)
				}
				// Every change keeps ToolDb's bytes; only the order of changes ToolDb's sort
				// leaves tied (MAP changes of one author and i on different keys) may differ.
				again, err := ParseChanges(rec.CRDT, cs.AppendJSON(nil))
				if err != nil || !again.Equal(cs) || len(cs.AppendJSON(nil)) != len(rec.Value) {
					t.Errorf("source %d: changes re-encode to\n%s\nwant\n%s", i, cs.AppendJSON(nil), rec.Value)
				}
				sets = append(sets, cs)
			}
			if tc.Name == "counter" && (tc.Type != TypeList || sets[0].Kind != KindCounter) {
				t.Errorf("ToolDb labelled the counter %q; we read it as %s", tc.Type, sets[0].Kind)
			}
			if !jsonEqual(t, sets[0].Value(), tc.ValueA) || !jsonEqual(t, sets[1].Value(), tc.ValueB) {
				t.Errorf("values %s, %s; ToolDb %s, %s", sets[0].Value(), sets[1].Value(), tc.ValueA, tc.ValueB)
			}
			m, err := sets[0].Merge(sets[1])
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, m.Value(), tc.Merged) {
				t.Errorf("merged %s; ToolDb %s", m.Value(), tc.Merged)
			}
		})
	}
}

func TestGoldenSignupAndKeys(t *testing.T) {
	v := loadVectors(t)
	for _, su := range v.Signups {
		rec, err := ParseRecord([]byte(su.JSON))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Key != "=="+su.User {
			t.Fatalf("signup key %q", rec.Key)
		}
		if err := (&Verifier{}).Verify(&rec, nil, vectorNow(t, rec)); err != nil {
			t.Fatal(err)
		}
		var acc Account
		if err := json.Unmarshal(rec.Value, &acc); err != nil {
			t.Fatal(err)
		}
		u, err := DecryptAccount(acc, su.Password)
		if err != nil {
			t.Fatal(err)
		}
		if u.Address() != rec.Author {
			t.Errorf("decrypted account address %s, record author %s", u.Address(), rec.Author)
		}
		if _, err := DecryptAccount(acc, su.Password+"x"); !errors.Is(err, ErrDecrypt) {
			t.Errorf("wrong password: %v", err)
		}
	}
	for _, k := range v.Keys {
		u, err := ImportKeys(Keys{Pub: k.Pub, Priv: k.Priv})
		if err != nil {
			t.Fatal(err)
		}
		if u.Address() != k.Address {
			t.Errorf("imported address %s, ToolDb says %s", u.Address(), k.Address)
		}
		if got, _ := u.ExportKeys(); got.Pub != k.Pub {
			t.Errorf("exported SPKI %s, ToolDb %s", got.Pub, k.Pub)
		}
	}
}

// TestToolDbVerifiesGoRecords runs the real ToolDb on records, signups and CRDT changes made in
// Go. It needs node and `(cd db/testdata/tooldb && npm ci)`; it skips without them, except in CI.
func TestToolDbVerifiesGoRecords(t *testing.T) {
	script := nodeScript(t)
	u, err := NewUser(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	type in struct {
		PoW    int    `json:"pow"`
		Record Record `json:"record"`
	}
	var recs []in
	for i, v := range []string{`"hello"`, `{"b":1,"10":2,"2":[1.5,1e21,-0,0.1],"x":"é<>&\u2028"}`, `[1,{"z":null}]`, `1.5e-7`} {
		for _, pow := range []int{0, 2} {
			r, err := u.NewRecord("go"+string(rune('a'+i)), []byte(v), "", now, pow)
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, in{pow, r})
		}
	}
	ur, _ := u.NewRecord(UserKey(u.Address(), "profile"), []byte(`{"n":1}`), "", now, 1)
	su, err := u.SignupRecord("gopher", "secret", now, 1)
	if err != nil {
		t.Fatal(err)
	}
	recs = append(recs, in{1, ur}, in{1, su})
	// Go-made CRDT changes, merged by ToolDb's own classes.
	other, _ := NewUser(nil)
	a, b := u.Address(), other.Address()
	mapA := `[{"t":"SET","k":"x","a":"` + a + `","v":1,"i":1},{"t":"DEL","k":"x","a":"` + a + `","i":2}]`
	mapB := `[{"t":"SET","k":"x","a":"` + b + `","v":"b","i":2},{"t":"SET","k":"y","a":"` + b + `","v":[1],"i":1}]`
	cntA := `[{"t":"ADD","v":5,"a":"` + a + `","i":0},{"t":"SUB","v":2,"a":"` + a + `","i":1}]`
	cntB := `[{"t":"ADD","v":5,"a":"` + b + `","i":0}]`
	crdtRec, err := u.NewRecord("counter", []byte(cntA), TypeCounter, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	recs = append(recs, in{0, crdtRec})
	input, _ := json.Marshal(map[string]any{
		"records": recs,
		"crdts": []map[string]any{
			{"type": "MAP", "changes": []json.RawMessage{json.RawMessage(mapA), json.RawMessage(mapB)}},
			{"type": "COUNTER", "changes": []json.RawMessage{json.RawMessage(cntA), json.RawMessage(cntB)}},
		},
	})
	cmd := exec.Command("node", script, "verify")
	cmd.Stdin = bytes.NewReader(input)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node verify: %v\n%s", err, out)
	}
	var res struct {
		Results []string          `json:"results"`
		Merged  []json.RawMessage `json:"merged"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for i, r := range res.Results {
		if r != "Verified" {
			t.Errorf("ToolDb says %q for Go record %s", r, AppendRecord(nil, &recs[i].Record))
		}
	}
	for i, pair := range [][2]string{{"MAP", mapA + "|" + mapB}, {"COUNTER", cntA + "|" + cntB}} {
		parts := bytes.SplitN([]byte(pair[1]), []byte("|"), 2)
		x, err := ParseChanges(pair[0], parts[0])
		if err != nil {
			t.Fatal(err)
		}
		y, _ := ParseChanges(pair[0], parts[1])
		m, _ := x.Merge(y)
		if !jsonEqual(t, m.Value(), res.Merged[i]) {
			t.Errorf("%s merged: Go %s, ToolDb %s", pair[0], m.Value(), res.Merged[i])
		}
	}
}

// nodeScriptPath returns the ToolDb script when node and its node_modules are installed.
func nodeScriptPath() string {
	if dir := tooldbtest.Find("testdata/tooldb"); dir != "" {
		return filepath.Join(dir, "tooldb.js")
	}
	return ""
}

func nodeScript(t *testing.T) string {
	t.Helper()
	return filepath.Join(tooldbtest.Require(t, "testdata/tooldb", "db/testdata/tooldb"), "tooldb.js")
}
