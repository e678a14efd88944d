package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/db"
)

func TestPutReplicatesBothWays(t *testing.T) {
	a := newBridge(t, Config{Server: true})
	b := newBridge(t, Config{Server: true})
	link(t, a, b)
	r1 := record(t, testUser, "k1", `{"hello":"world"}`)
	if out, err := a.Put(context.Background(), r1); err != nil || out != db.Stored {
		t.Fatalf("put: %v %v", out, err)
	}
	waitRecord(t, b.Store(), "k1", r1.Hash)
	r2 := record(t, testUser, "k2", `2`)
	if _, err := b.Put(context.Background(), r2); err != nil {
		t.Fatal(err)
	}
	waitRecord(t, a.Store(), "k2", r2.Hash)
}

func TestRelayReachesOtherServersNeverOrigin(t *testing.T) {
	a := newBridge(t, Config{Server: true})
	b := newBridge(t, Config{Server: true})
	c := newBridge(t, Config{Server: true})
	link(t, a, b)
	link(t, b, c)
	s, _ := newFakePeer(t, b, false)
	s.hello(DefaultTopic, true, false)
	client, _ := newFakePeer(t, b, false) // a ToolDb client: gets data only by asking
	client.hello(DefaultTopic, false, false)
	rec := record(t, s.user, "relayed", `"v"`)
	put := putMsg(rec)
	put.To = []string{s.id}
	s.sendMsg(put)
	waitRecord(t, a.Store(), "relayed", rec.Hash)
	waitRecord(t, c.Store(), "relayed", rec.Hash)
	// Had b sent the put back to its origin, it would be queued before this answer.
	s.sendMsg(&Message{Type: TypeQuery, ID: newID(), Key: "relay"})
	if m := s.next(); m.Type != TypeQueryAck || len(m.Keys) != 1 {
		t.Fatalf("origin got %+v, want only the queryAck", m)
	}
	client.sendMsg(&Message{Type: TypeQuery, ID: newID(), Key: "relay"})
	if m := client.next(); m.Type != TypeQueryAck {
		t.Fatalf("client got %+v, want only the queryAck (puts go to servers)", m)
	}
}

func TestDedupByIDAndHash(t *testing.T) {
	// A triangle: a relayed put could circle forever without dedup.
	a, b, c := putInTriangle(t, "tri")
	for _, x := range []*Bridge{a, b, c} {
		waitAccepted(t, x.Store(), 1)
	}

	f, _ := newFakePeer(t, b, false)
	f.hello(DefaultTopic, false, false)
	r2 := record(t, f.user, "dup", `2`)
	m := putMsg(r2)
	f.sendMsg(m)
	f.sendMsg(m) // same id: dropped before parsing the record
	m2 := putMsg(r2)
	f.sendMsg(m2) // new id, same record: dropped by hash (or Duplicate in the store)
	waitRecord(t, b.Store(), "dup", r2.Hash)
	f.sendMsg(&Message{Type: TypeQuery, ID: newID(), Key: "dup"})
	f.next(TypeError)
	if d := b.Stats().Duplicates; d < 1 {
		t.Fatalf("duplicates counted: %d", d)
	}
	waitAccepted(t, b.Store(), 2)
}

func TestSubscriptionPushesFreshIDs(t *testing.T) {
	a := newBridge(t, Config{Server: true})
	b := newBridge(t, Config{Server: true})
	link(t, a, b)
	x, _ := newFakePeer(t, b, false)
	x.hello(DefaultTopic, false, false)
	first := record(t, testUser, "watched", `0`)
	if _, err := b.Put(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	sub := &Message{Type: TypeSubscribe, ID: newID(), Key: "watched"}
	x.sendMsg(sub)
	// ToolDb answers a subscribe at once with the stored value, under the subscribe id.
	if m := x.next(); m.Type != TypePut || m.ID != sub.ID || m.Data.Hash != first.Hash {
		t.Fatalf("subscribe answer: %+v", m)
	}
	ids := map[string]bool{sub.ID: true}
	for i := 1; i <= 3; i++ {
		rec, err := testUser.NewRecord("watched", []byte(fmt.Sprint(i)), "", time.Now().Add(time.Duration(i)*time.Millisecond), 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Put(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
		m := x.next()
		if m.Type != TypePut || m.Data.Hash != rec.Hash {
			t.Fatalf("push %d: %+v", i, m)
		}
		if ids[m.ID] {
			t.Fatalf("push %d reuses id %s (ToolDb's bug)", i, m.ID)
		}
		ids[m.ID] = true
	}
}

func TestGetMissAsksPeersAndAnswersAsker(t *testing.T) {
	a := newBridge(t, Config{Server: true, DisableSync: true})
	b := newBridge(t, Config{Server: true, DisableSync: true, GetTimeout: 200 * time.Millisecond})
	link(t, a, b)
	only := record(t, testUser, "only-on-a", `"x"`)
	// Store on a directly: nothing relays it to b.
	if _, err := a.Store().Put(context.Background(), only); err != nil {
		t.Fatal(err)
	}
	x, _ := newFakePeer(t, b, false)
	x.hello(DefaultTopic, false, false)
	get := &Message{Type: TypeGet, ID: newID(), Key: "only-on-a"}
	x.sendMsg(get)
	if m := x.next(); m.Type != TypePut || m.ID != get.ID || m.Data.Hash != only.Hash {
		t.Fatalf("relayed get answer: %+v", m)
	}
	// b stored the verified answer.
	waitRecord(t, b.Store(), "only-on-a", only.Hash)

	other := record(t, testUser, "other", `"y"`)
	if _, err := a.Store().Put(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	got, err := b.Get(context.Background(), "other")
	if err != nil || got.Hash != other.Hash {
		t.Fatalf("Get through peers: %v %v", got, err)
	}
	if _, err := b.Get(context.Background(), "nowhere"); !errors.Is(err, db.ErrNotFound) {
		t.Fatalf("Get of a missing key: %v", err)
	}
}

func mapRecord(t testing.TB, u *db.User, key string, changes string, at time.Time) db.Record {
	t.Helper()
	r, err := u.NewRecord(key, []byte(changes), db.TypeMap, at, 0)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCRDTReplicatesAndMerges(t *testing.T) {
	a := newBridge(t, Config{Server: true})
	b := newBridge(t, Config{Server: true})
	link(t, a, b)
	u1, u2 := testUser, func() *db.User { u, _ := db.NewUser(nil); return u }()
	now := time.Now()
	r1 := mapRecord(t, u1, "map", fmt.Sprintf(`[{"t":"SET","k":"x","a":%q,"i":1,"v":1}]`, u1.Address()), now)
	r2 := mapRecord(t, u2, "map", fmt.Sprintf(`[{"t":"SET","k":"y","a":%q,"i":1,"v":2}]`, u2.Address()), now.Add(time.Millisecond))
	if _, err := a.Put(context.Background(), r1); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(context.Background(), r2); err != nil {
		t.Fatal(err)
	}
	want := `{"x":1,"y":2}`
	for _, x := range []*Bridge{a, b} {
		w := x.Store().Watch("map")
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		for {
			st, err := x.Store().CRDT("map")
			if err == nil && jsonEq(st.Value(), want) {
				break
			}
			if _, err := w.Next(ctx); err != nil {
				t.Fatalf("CRDT did not converge: %v: %s %v; stats %+v", err, st.Value(), len(st.Sources), x.Stats())
			}
		}
		cancel()
		w.Close()
	}
	// A ToolDb client gets ToolDb's merged record for crdtGet.
	x, _ := newFakePeer(t, b, false)
	x.hello(DefaultTopic, false, false)
	g := &Message{Type: TypeCRDTGet, ID: newID(), Key: "map"}
	x.sendMsg(g)
	m := x.next()
	if m.Type != TypeCRDTPut || m.ID != g.ID {
		t.Fatalf("crdtGet answer: %+v", m)
	}
	cs, err := db.ParseChanges(m.Data.CRDT, m.Data.Value)
	if err != nil || !jsonEq(cs.Value(), want) {
		t.Fatalf("crdtGet merged value %s: %v", m.Data.Value, err)
	}
}

func TestQueryAndFunctions(t *testing.T) {
	b := newBridge(t, Config{Server: true, Functions: map[string]Function{
		"add": func(_ context.Context, args []byte) (any, error) {
			var xs []int
			if err := json.Unmarshal(args, &xs); err != nil {
				return nil, err
			}
			return xs[0] + xs[1], nil
		},
	}})
	for _, k := range []string{"chat-1", "chat-2", "other"} {
		if _, err := b.Put(context.Background(), record(t, testUser, k, `1`)); err != nil {
			t.Fatal(err)
		}
	}
	x, _ := newFakePeer(t, b, false)
	x.hello(DefaultTopic, false, false)
	q := &Message{Type: TypeQuery, ID: newID(), Key: "chat-"}
	x.sendMsg(q)
	if m := x.next(); m.Type != TypeQueryAck || m.ID != q.ID || strings.Join(m.Keys, ",") != "chat-1,chat-2" {
		t.Fatalf("queryAck: %+v", m)
	}
	for _, tc := range []struct{ fn, args, code, ret string }{
		{"add", `[2,3]`, CodeOK, `5`},
		{"add", `"x"`, CodeErr, ""},
		{"nope", `null`, CodeNotFound, `"Function not found"`},
	} {
		f := &Message{Type: TypeFunction, ID: newID(), Function: tc.fn, Args: json.RawMessage(tc.args)}
		x.sendMsg(f)
		m := x.next()
		if m.Type != TypeFunctionReturn || m.ID != f.ID || m.Code != tc.code || tc.ret != "" && string(m.Return) != tc.ret {
			t.Fatalf("%s(%s): %+v %s", tc.fn, tc.args, m, m.Return)
		}
	}
}

func TestPeerEventsAndClose(t *testing.T) {
	events := make(chan PeerEvent, 8)
	a := newBridge(t, Config{Server: true, OnPeer: func(e PeerEvent) { events <- e }})
	b := newBridge(t, Config{Server: true})
	pa, _ := link(t, a, b)
	e := <-events
	if !e.Up || e.Peer.ClientID != b.ClientID() || !e.Peer.Swarmdb || !e.Peer.IsServer {
		t.Fatalf("up event: %+v", e)
	}
	if n := a.Stats().Peers; n != 1 {
		t.Fatalf("peers: %d", n)
	}
	pa.Close()
	waitDone(t, pa)
	if e := <-events; e.Up || !errors.Is(e.Err, ErrClosed) {
		t.Fatalf("down event: %+v", e)
	}
	if n := a.Stats().Peers; n != 0 {
		t.Fatalf("peers after close: %d", n)
	}
}

// jsonEq compares JSON values, ignoring object key order.
func jsonEq(a []byte, b string) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return fmt.Sprint(x) == fmt.Sprint(y)
}

// A relayed get is answered only by a record of the key asked for.
func TestRelayedGetAnswerMustMatchKey(t *testing.T) {
	b := newBridge(t, Config{Server: true})
	s, _ := newFakePeer(t, b, false)
	s.hello(DefaultTopic, true, false)
	x, _ := newFakePeer(t, b, false)
	x.hello(DefaultTopic, false, false)
	get := &Message{Type: TypeGet, ID: newID(), Key: "wanted"}
	x.sendMsg(get)
	relayed := s.next()
	if relayed.Type != TypeGet || relayed.ID != get.ID || !contains(relayed.To, x.id) {
		t.Fatalf("relayed get: %+v", relayed)
	}
	wrong := record(t, s.user, "something-else", `"spoof"`)
	m := putMsg(wrong)
	m.ID = get.ID
	s.sendMsg(m)
	// The record itself is valid and stored, but it is no answer to the get.
	waitRecord(t, b.Store(), "something-else", wrong.Hash)
	q := &Message{Type: TypeQuery, ID: newID(), Key: "zz"}
	x.sendMsg(q)
	if got := x.next(); got.Type != TypeQueryAck {
		t.Fatalf("asker got %+v before its query answer: a record of another key", got)
	}
}

func TestIdentifyTimeout(t *testing.T) {
	b := newBridge(t, Config{Limits: Limits{IdentifyTimeout: 50 * time.Millisecond}})
	f, p := newFakePeer(t, b, false)
	f.expectClosed()
	waitDone(t, p)
	if !errors.Is(p.Err(), ErrNotIdentified) {
		t.Fatalf("ended with %v", p.Err())
	}
}

// A put sent to b and c lists both in "to", so neither relays it to the other: in a triangle
// every node gets the record once, and nobody relays.
func TestRelaySkipsRecipients(t *testing.T) {
	_, b, c := putInTriangle(t, "tri-to")
	if r := b.Stats().Relayed + c.Stats().Relayed; r != 0 {
		t.Fatalf("%d copies relayed to peers that were already sent the put", r)
	}
}

// putInTriangle links three server bridges in a triangle, puts a record under key on the
// first and waits until the other two hold it.
func putInTriangle(t *testing.T, key string) (a, b, c *Bridge) {
	t.Helper()
	a = newBridge(t, Config{Server: true})
	b = newBridge(t, Config{Server: true})
	c = newBridge(t, Config{Server: true})
	link(t, a, b)
	link(t, b, c)
	link(t, c, a)
	rec := record(t, testUser, key, `1`)
	if _, err := a.Put(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	waitRecord(t, b.Store(), key, rec.Hash)
	waitRecord(t, c.Store(), key, rec.Hash)
	return a, b, c
}

func TestPeekTypeID(t *testing.T) {
	m := &Message{Type: TypePut, ID: "abc123XYZ0", To: []string{"x"}}
	typ, id, ok := peekTypeID(AppendMessage(nil, m))
	if !ok || typ != TypePut || id != m.ID {
		t.Fatalf("own encoding: %q %q %v", typ, id, ok)
	}
	for _, raw := range []string{
		`{"id":"abc","type":"put"}`,          // ToolDb's order: full parse
		`{"type":"put","id":"a\"b","to":[]}`, // escaped quote
		`{"type":"p\u0075t","id":"abc"}`,     // escape in the type
		`{"type":"put","id":"abc`,            // cut short
		` {"type":"put","id":"abc"}`,         // leading space
	} {
		if typ, id, ok := peekTypeID([]byte(raw)); ok {
			t.Errorf("%s peeked as %q %q", raw, typ, id)
		}
	}
}

// With no Host and Port the descriptor advertises none, which ToolDb's
// client skips; ToolDb's own default (127.0.0.1:8080) would send peers to
// their own machine. A configured address is signed into it.
func TestDescriptorAdvertisesConfiguredAddressOrNone(t *testing.T) {
	if d := newBridge(t, Config{}).Descriptor(); d.Host != "" || d.Port != 0 {
		t.Fatalf("zero config advertises %s:%d", d.Host, d.Port)
	}
	d := newBridge(t, Config{Host: "203.0.113.9", Port: 9000}).Descriptor()
	if d.Host != "203.0.113.9" || d.Port != 9000 {
		t.Fatalf("descriptor %s:%d", d.Host, d.Port)
	}
	if err := VerifyPeerDesc(&d, DefaultTopic, time.Now()); err != nil {
		t.Fatal(err)
	}
}
