package bridge

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/db"
)

// Real wire captures from a ToolDb 2.6.6 server (reference §2.2), shortened where marked.
func TestParseToolDbCaptures(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		typ  string
		pred func(Message) bool
	}{
		{`{"type":"subscribe","key":"k1","to":["zJjoN_zBgTYGQIsWA2mw"],"id":"QVs1tVd0iM"}`, TypeSubscribe,
			func(m Message) bool {
				return m.Key == "k1" && m.ID == "QVs1tVd0iM" && m.To[0] == "zJjoN_zBgTYGQIsWA2mw"
			}},
		{`{"type":"queryAck","id":"q1","to":["78Yncm9WFc2IWnA1iCH4"],"keys":["k2"]}`, TypeQueryAck,
			func(m Message) bool { return len(m.Keys) == 1 && m.Keys[0] == "k2" }},
		{`{"return":"Function not found","type":"functionReturn","id":"f1","code":"NOT_FOUND","to":["78Yncm9WFc2IWnA1iCH4"]}`, TypeFunctionReturn,
			func(m Message) bool { return m.Code == CodeNotFound && string(m.Return) == `"Function not found"` }},
		{`{"type":"pong","isServer":true,"clientId":"78Yncm9WFc2IWnA1iCH4","to":["78Yncm9WFc2IWnA1iCH4"],"servers":[{"topic":"t","timestamp":1795482818976,"host":"127.0.0.1","port":18081,"address":"S9Cs","sig":"52f6"}],"id":"ping2"}`, TypePong,
			func(m Message) bool {
				return m.IsServer && m.ClientID == "78Yncm9WFc2IWnA1iCH4" && len(m.Servers) == 1 && m.Servers[0].Port == 18081
			}},
		{`{"type":"ping","clientId":"_HxxW_4tlJau3bdzhHCc","to":["_HxxW_4tlJau3bdzhHCc"],"isServer":false,"id":"btSINTHAKr","peer":{"topic":"t","timestamp":1795482802695,"host":"127.0.0.1","port":8080,"address":"3Esj","sig":"f4d5"}}`, TypePing,
			func(m Message) bool { return !m.IsServer && m.Peer != nil && m.Peer.Timestamp == 1795482802695 }},
	} {
		m, err := ParseMessage([]byte(tc.raw), 0)
		if err != nil {
			t.Fatalf("%s: %v", tc.raw, err)
		}
		if m.Type != tc.typ || !tc.pred(m) {
			t.Fatalf("%s parsed as %+v", tc.raw, m)
		}
	}
}

func TestMessageRoundTrip(t *testing.T) {
	rec := record(t, testUser, "k<&>\u2028", `{"a":"é<>&\u2028","2":1,"1":[1.5,1e+21]}`)
	d, err := SignPeerDesc(testUser, "topic", 1795482802695, "h", 9000)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []Message{
		{Type: TypePing, ID: "a", To: []string{"x"}, IsServer: true, ClientID: "c", Peer: &d, Swarmdb: 1},
		{Type: TypePong, ID: "a", To: []string{}, ClientID: "c", Servers: []PeerDesc{d}},
		{Type: TypePut, ID: "b", To: []string{"x", "y"}, Data: &rec, Catchup: true},
		{Type: TypeGet, ID: "c", Key: "q\"\\\n\x01"},
		{Type: TypeQueryAck, ID: "d", Keys: []string{"a", "b"}},
		{Type: TypeFunction, ID: "e", Function: "f", Args: json.RawMessage(`[1,{"a":2}]`)},
		{Type: TypeFunctionReturn, ID: "e", Code: CodeOK, Return: json.RawMessage(`{"x":1}`)},
		{Type: TypeError, ID: "f", Code: "BAD", Error: "nope", Ref: "z"},
		{Type: TypeSync, ID: "g", Sync: &SyncBody{Op: syncOpTree, Path: "3a", Sums: make([]SyncSum, 16)}},
		{Type: TypeSync, ID: "h", Sync: &SyncBody{Op: syncOpLeaf, Path: "3a", Items: []SyncItem{{Key: "k", Hash: "00"}}}},
		{Type: TypeSync, ID: "i", Sync: &SyncBody{Op: syncOpWant, Keys: []string{"k"}}},
		{Type: TypeSync, ID: "j", Sync: &SyncBody{Op: syncOpIHave, Items: []SyncItem{{Key: "k", Hash: "putid"}}}},
		{Type: TypeSync, ID: "k", Sync: &SyncBody{Op: syncOpGraft, Items: []SyncItem{{Key: "k", Hash: "putid"}}}},
		{Type: TypeSync, ID: "l", Sync: &SyncBody{Op: syncOpPrune}},
	}
	for _, m := range msgs {
		b := AppendMessage(nil, &m)
		if !json.Valid(b) {
			t.Fatalf("invalid JSON %s", b)
		}
		got, err := ParseMessage(b, 0)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if b2 := AppendMessage(nil, &got); string(b2) != string(b) {
			t.Fatalf("round trip changed\n%s\n%s", b, b2)
		}
	}
	// The record's value keeps its bytes (no HTML escaping, U+2028 raw), so the hash verifies.
	b := AppendMessage(nil, &msgs[2])
	if !strings.Contains(string(b), "é<>&\u2028") {
		t.Fatalf("value was re-escaped: %s", b)
	}
	got, _ := ParseMessage(b, 0)
	if err := (&db.Verifier{}).Verify(got.Data, nil, time.Now()); err != nil {
		t.Fatalf("record does not verify after a round trip: %v", err)
	}
}

func TestParseMessageRefuses(t *testing.T) {
	deep := strings.Repeat("[", 100) + strings.Repeat("]", 100)
	for _, tc := range []struct {
		raw  string
		want error
	}{
		{`nope`, ErrBadMessage},
		{`[1]`, ErrBadMessage},
		{`{"type":"put","id":"x","to":[]}`, ErrBadMessage},
		{`{"type":"get","id":"x","to":[]}`, ErrBadMessage},
		{`{"type":"get","id":"","key":"k"}`, ErrBadMessage},
		{`{"TYPE":"get","id":"x","key":"k"}`, ErrBadMessage}, // field names are exact
		{`{"type":"get","id":7,"key":"k"}`, ErrBadMessage},
		{`{"type":"get","id":"x","key":"k","to":[1]}`, ErrBadMessage},
		{`{"type":"crdt","id":"x"}`, ErrUnknownType},
		{`{"type":"join","id":"x"}`, ErrUnknownType},
		{`{"type":"get","id":"x","key":"k","v":` + deep + `}`, ErrTooDeep},
		{`{"type":"put","id":"x","data":{"k":"a"}}`, db.ErrMissingField},
		{`{"type":"put","id":"x","data":{"k":"a","a":"b","n":0.5,"t":1,"h":"","s":"","v":1,"c":null}}`, db.ErrMalformed},
		{`{"type":"swarmdbSync","id":"x","op":"tree","path":"zz","sums":[]}`, ErrBadMessage},
		{`{"type":"swarmdbSync","id":"x","op":"tree","path":"","sums":[[1,"a"]]}`, ErrBadMessage},
		{`{"type":"ping","id":"x","clientId":"c","isServer":"yes","peer":{}}`, ErrBadMessage},
	} {
		_, err := ParseMessage([]byte(tc.raw), 0)
		if !errors.Is(err, tc.want) {
			t.Errorf("%.80s: got %v, want %v", tc.raw, err, tc.want)
		}
	}
}

func TestPeerDescriptor(t *testing.T) {
	now := time.Now()
	d, err := SignPeerDesc(testUser, "t", now.UnixMilli(), "127.0.0.1", 8080)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyPeerDesc(&d, "t", now); err != nil {
		t.Fatal(err)
	}
	bad := d
	bad.Port = 8081 // the signature covers host:port
	if err := VerifyPeerDesc(&bad, "t", now); !errors.Is(err, ErrBadPeer) {
		t.Fatalf("tampered port: %v", err)
	}
	if err := VerifyPeerDesc(&d, "other", now); !errors.Is(err, ErrBadPeer) {
		t.Fatalf("wrong topic: %v", err)
	}
	future, _ := SignPeerDesc(testUser, "t", now.Add(time.Hour).UnixMilli(), "h", 1)
	if err := VerifyPeerDesc(&future, "t", now); !errors.Is(err, ErrBadPeer) {
		t.Fatalf("future timestamp: %v", err)
	}
	// ToolDb's verifyPeer accepts this (reference §1.6); we do not.
	bogus := PeerDesc{Topic: "t", Timestamp: 1, Host: "h", Port: 1, Address: "zz", Sig: "00"}
	if err := VerifyPeerDesc(&bogus, "t", now); !errors.Is(err, ErrBadPeer) {
		t.Fatalf("bogus descriptor: %v", err)
	}
}

func TestOriginAllowed(t *testing.T) {
	for _, tc := range []struct {
		origin  string
		allowed []string
		want    bool
	}{
		{"", []string{"a.example"}, true},
		{"https://evil.example", nil, true},
		{"https://app.example", []string{"app.example"}, true},
		{"https://APP.example", []string{"app.example"}, true},
		{"https://evil.example", []string{"app.example"}, false},
		{"https://x.app.example", []string{"*.app.example"}, true},
		{"http://app.example", []string{"https://app.example"}, false},
		{"https://app.example", []string{"https://app.example"}, true},
		{"::bad", []string{"app.example"}, false},
	} {
		if got := originAllowed(tc.origin, tc.allowed); got != tc.want {
			t.Errorf("origin %q allowed %v: got %v", tc.origin, tc.allowed, got)
		}
	}
}

func TestBucket(t *testing.T) {
	now := time.Unix(0, 0)
	b := newBucket(10, 3, now)
	for i := range 3 {
		if !b.take(now) {
			t.Fatalf("take %d refused within the burst", i)
		}
	}
	if b.take(now) {
		t.Fatal("take beyond the burst allowed")
	}
	if !b.take(now.Add(100 * time.Millisecond)) {
		t.Fatal("no token after 1/rate")
	}
}

func TestDedupBounded(t *testing.T) {
	d := newDedup(10)
	if !d.add("a") || d.add("a") {
		t.Fatal("dedup does not dedup")
	}
	for i := range 100 {
		d.add(keyN(i))
	}
	if d.has("a") {
		t.Fatal("dedup keeps entries forever")
	}
	if len(d.cur)+len(d.old) > 10 {
		t.Fatalf("dedup holds %d entries, bound 10", len(d.cur)+len(d.old))
	}
}

// An aged set forgets by time too; the test moves the current generation's birth back
// instead of waiting.
func TestDedupForgetsByAge(t *testing.T) {
	const age = time.Hour
	d := newDedupFor(10, age)
	d.add("a")
	d.born = d.born.Add(-age) // a is maxAge old: retired to the old generation, still known
	if !d.has("a") {
		t.Fatal("forgot an entry after one maxAge")
	}
	d.add("b")
	d.born = d.born.Add(-age) // a has been in the old generation for maxAge: dropped
	if d.has("a") || !d.has("b") {
		t.Fatalf("after two maxAge: has a %v (want false), has b %v (want true)", d.has("a"), d.has("b"))
	}
	d.add("c")
	d.born = d.born.Add(-2 * age) // idle for 2 maxAge: everything goes at once
	if d.has("b") || d.has("c") {
		t.Fatal("kept entries after an idle 2 maxAge")
	}
	if !d.add("c") {
		t.Fatal("a forgotten entry is not new again")
	}
}

func FuzzParseMessage(f *testing.F) {
	rec := record(f, testUser, "k", `{"a":1}`)
	d, _ := SignPeerDesc(testUser, "t", 1, "h", 1)
	for _, m := range []Message{
		{Type: TypePing, ID: "a", ClientID: "c", Peer: &d, Swarmdb: 1},
		{Type: TypePong, ID: "a", ClientID: "c", Servers: []PeerDesc{d}},
		{Type: TypePut, ID: "b", Data: &rec},
		{Type: TypeQuery, ID: "c", Key: "k"},
		{Type: TypeFunction, ID: "e", Function: "f", Args: json.RawMessage(`[1]`)},
		{Type: TypeSync, ID: "g", Sync: &SyncBody{Op: syncOpTree, Sums: make([]SyncSum, 16)}},
		{Type: TypeSync, ID: "h", Sync: &SyncBody{Op: syncOpLeaf, Path: "a", Items: []SyncItem{{Key: "k", Hash: "0"}}}},
		{Type: TypeSync, ID: "i", Sync: &SyncBody{Op: syncOpIHave, Items: []SyncItem{{Key: "k", Hash: "id"}}}},
		{Type: TypeSync, ID: "j", Sync: &SyncBody{Op: syncOpPrune}},
	} {
		f.Add(AppendMessage(nil, &m))
	}
	f.Add([]byte(`{"type":"get","id":"x","key":"k","to":["a"]}`))
	f.Add([]byte(`{"type":"error","id":"x","code":"c","error":"e"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b, 16)
		if err != nil {
			return
		}
		// Whatever parses re-encodes to valid JSON that parses to the same encoding.
		enc := AppendMessage(nil, &m)
		if !json.Valid(enc) {
			t.Fatalf("invalid encoding %q of %q", enc, b)
		}
		m2, err := ParseMessage(enc, 0)
		if err != nil {
			t.Fatalf("re-encoding %q does not parse: %v", enc, err)
		}
		if enc2 := AppendMessage(nil, &m2); string(enc2) != string(enc) {
			t.Fatalf("encoding not stable:\n%q\n%q", enc, enc2)
		}
	})
}
