package bridge

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/db"
)

// expectError reads the next message and checks it is an error with code (and ref, if given).
func (f *fakePeer) expectError(code, ref string) Message {
	f.t.Helper()
	m := f.next()
	if m.Type != TypeError || m.Code != code || ref != "" && m.Ref != ref {
		f.t.Fatalf("want error %s (ref %q), got %+v", code, ref, m)
	}
	return m
}

// usable checks the connection still answers.
func (f *fakePeer) usable() {
	f.t.Helper()
	q := &Message{Type: TypeQuery, ID: newID(), Key: "zzz-none"}
	f.sendMsg(q)
	if m := f.next(); m.Type != TypeQueryAck || m.ID != q.ID {
		f.t.Fatalf("connection not usable: got %+v", m)
	}
}

func TestBadInputGetsErrorAndConnectionStays(t *testing.T) {
	b := newBridge(t, Config{Server: true, Limits: Limits{MaxMessageSize: 4096, MaxDepth: 16}})
	f, _ := newFakePeer(t, b, false)

	get := &Message{Type: TypeGet, ID: newID(), Key: "k"}
	f.sendMsg(get)
	f.expectError("NOT_IDENTIFIED", get.ID)
	f.hello(DefaultTopic, false, false)

	f.send(`{"type":"put","id":"abc",`)
	f.expectError("BAD_MESSAGE", "")
	f.usable()

	f.send(`{"type":"teleport","id":"t1","to":[]}`)
	f.expectError("UNKNOWN_TYPE", "t1")
	f.usable()

	f.send(`{"type":"get","id":"big","key":"` + strings.Repeat("x", 5000) + `"}`)
	f.expectError("TOO_LARGE", "big")
	f.usable()

	f.send(`{"type":"get","id":"deep","key":"k","x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`)
	f.expectError("TOO_DEEP", "")
	f.usable()

	future, err := f.user.NewRecord("future", []byte(`1`), "", time.Now().Add(time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	m := putMsg(future)
	f.sendMsg(m)
	if e := f.expectError("REJECTED", m.ID); !strings.Contains(e.Error, "future") {
		t.Fatalf("future timestamp error: %q", e.Error)
	}

	forged := record(t, f.user, "forged", `"original"`)
	forged.Value = []byte(`"FORGED"`) // ToolDb at pow 0 stores this (reference §1.6)
	m = putMsg(forged)
	f.sendMsg(m)
	f.expectError("REJECTED", m.ID)

	other := record(t, testUser, ":"+f.user.Address()+".profile", `1`)
	m = putMsg(other)
	f.sendMsg(m)
	f.expectError("REJECTED", m.ID)
	f.usable()

	for _, k := range []string{"future", "forged", ":" + f.user.Address() + ".profile"} {
		if _, err := b.Store().Get(k); !errors.Is(err, db.ErrNotFound) {
			t.Fatalf("%q was stored: %v", k, err)
		}
	}
}

func TestClaimingAnotherPeersID(t *testing.T) {
	b := newBridge(t, Config{Server: true})
	first, _ := newFakePeer(t, b, false)
	first.hello(DefaultTopic, false, false)

	// A ping whose client id is not derived from its (validly signed) address.
	f, _ := newFakePeer(t, b, false)
	d, _ := SignPeerDesc(f.user, DefaultTopic, time.Now().UnixMilli(), "h", 1)
	ping := &Message{Type: TypePing, ID: newID(), ClientID: first.id, Peer: &d}
	f.sendMsg(ping)
	f.expectError("ID_CLAIMED", ping.ID)

	// A replay of the first peer's descriptor while it is connected.
	d1, _ := SignPeerDesc(first.user, DefaultTopic, time.Now().UnixMilli(), "127.0.0.1", 8080)
	ping = &Message{Type: TypePing, ID: newID(), ClientID: first.id, Peer: &d1}
	f.sendMsg(ping)
	f.expectError("ID_CLAIMED", ping.ID)

	// A replay of the bridge's own descriptor.
	own := b.Descriptor()
	ping = &Message{Type: TypePing, ID: newID(), ClientID: b.ClientID(), Peer: &own}
	f.sendMsg(ping)
	f.expectError("ID_CLAIMED", ping.ID)

	// A descriptor with a bad signature.
	bad := d
	bad.Sig = strings.Repeat("0", 128)
	ping = &Message{Type: TypePing, ID: newID(), ClientID: f.id, Peer: &bad}
	f.sendMsg(ping)
	f.expectError("BAD_PEER", ping.ID)

	// Still unidentified: the claims got it nothing.
	get := &Message{Type: TypeGet, ID: newID(), Key: "k"}
	f.sendMsg(get)
	f.expectError("NOT_IDENTIFIED", get.ID)
}

func TestRepeatedAbuseCloses(t *testing.T) {
	b := newBridge(t, Config{Server: true, Limits: Limits{MaxStrikes: 3}})
	f, p := newFakePeer(t, b, false)
	for range 4 {
		f.send(`not json`)
	}
	f.expectClosed()
	waitDone(t, p)
	if !errors.Is(p.Err(), ErrAbuse) {
		t.Fatalf("peer ended with %v", p.Err())
	}
	if b.Stats().AbuseDisconnects != 1 {
		t.Fatalf("stats: %+v", b.Stats())
	}
}

func TestRateLimit(t *testing.T) {
	start := time.Now()
	// A clock that never moves: the bucket never refills, so the count is exact.
	b := newBridge(t, Config{Server: true, Now: func() time.Time { return start },
		Limits: Limits{MessagesPerSecond: 1, Burst: 3, MaxStrikes: 100}})
	f, _ := newFakePeer(t, b, false)
	f.hello(DefaultTopic, false, false) // token 1
	ids := []string{}
	for range 5 {
		q := &Message{Type: TypeQuery, ID: newID(), Key: "k"}
		ids = append(ids, q.ID)
		f.sendMsg(q)
	}
	for i := range 2 { // tokens 2 and 3
		if m := f.next(); m.Type != TypeQueryAck || m.ID != ids[i] {
			t.Fatalf("query %d: %+v", i, m)
		}
	}
	// Each query over the rate is answered, naming it, so the client knows what to resend.
	for _, id := range ids[2:] {
		f.expectError("RATE_LIMITED", id)
	}
}

// TestNotFoundAnswered: a client's get of a key nobody holds is answered NOT_FOUND (ref:
// the get's id): at once when there is no peer to ask, after GetTimeout when the peers
// asked stay silent. A swarmdb node relaying a get is not answered (its own client is).
func TestNotFoundAnswered(t *testing.T) {
	const getTimeout = 100 * time.Millisecond
	b := newBridge(t, Config{Server: true, GetTimeout: getTimeout})
	c, _ := newFakePeer(t, b, false)
	c.hello(DefaultTopic, false, false)
	g := &Message{Type: TypeGet, ID: newID(), Key: "nobody-has-this"}
	c.sendMsg(g)
	c.expectError("NOT_FOUND", g.ID)

	// A silent server peer: the get is relayed to it, and the client waits GetTimeout.
	s, _ := newFakePeer(t, b, false)
	s.hello(DefaultTopic, true, true)
	g = &Message{Type: TypeGet, ID: newID(), Key: "nobody-has-this-either"}
	start := time.Now()
	c.sendMsg(g)
	if m := s.next(TypeSync); m.Type != TypeGet || m.ID != g.ID {
		t.Fatalf("relayed get: %+v", m)
	}
	c.expectError("NOT_FOUND", g.ID)
	if took := time.Since(start); took < getTimeout {
		t.Fatalf("NOT_FOUND after %v, before the peers had GetTimeout (%v) to answer", took, getTimeout)
	}
	// The swarmdb peer relaying a get of its own hears nothing back for a miss.
	r := &Message{Type: TypeGet, ID: newID(), Key: "still-nobody"}
	s.sendMsg(r)
	s.sendMsg(&Message{Type: TypeQuery, ID: newID(), Key: "zzz"})
	if m := s.next(TypeSync); m.Type != TypeQueryAck {
		t.Fatalf("swarmdb peer got %+v for its relayed get, want nothing before the query's ack", m)
	}
}

func TestSlowConsumerDisconnected(t *testing.T) {
	b := newBridge(t, Config{Server: true, Limits: Limits{OutboundQueue: 4}})
	f, p := newFakePeer(t, b, false)
	f.hello(DefaultTopic, false, false)
	// Never read: the pipe holds 256 answers, then the bridge's queue of 4 fills.
	for range 400 {
		msg := AppendMessage(nil, &Message{Type: TypeQuery, ID: newID(), Key: "k"})
		if f.c.WriteMessage(context.Background(), msg) != nil {
			break // the bridge closed the connection
		}
	}
	waitDone(t, p)
	if !errors.Is(p.Err(), ErrSlowConsumer) || b.Stats().SlowDisconnects != 1 {
		t.Fatalf("peer ended with %v, stats %+v", p.Err(), b.Stats())
	}
}

func TestSubscriptionLimit(t *testing.T) {
	b := newBridge(t, Config{Server: true, Limits: Limits{MaxSubscriptions: 2}})
	f, _ := newFakePeer(t, b, false)
	f.hello(DefaultTopic, false, false)
	for _, k := range []string{"a", "b", "a"} {
		f.sendMsg(&Message{Type: TypeSubscribe, ID: newID(), Key: k})
	}
	s := &Message{Type: TypeSubscribe, ID: newID(), Key: "c"}
	f.sendMsg(s)
	f.expectError("TOO_MANY_SUBSCRIPTIONS", s.ID)
	if _, err := b.Put(context.Background(), record(t, testUser, "c", `1`)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(context.Background(), record(t, testUser, "b", `1`)); err != nil {
		t.Fatal(err)
	}
	if m := f.next(); m.Type != TypePut || m.Data.Key != "b" {
		t.Fatalf("want the push for b only, got %+v", m)
	}
}

// A swarm peer whose connection the swarm replaced identifies over the new one while the old
// one's peer has not ended yet: the new connection takes the client id and the old one is
// closed (ErrReplaced), instead of the new one being refused as a claim of a held id.
func TestSwarmPeerReplacesItsConnection(t *testing.T) {
	b := newBridge(t, Config{Server: true})
	attach := func() (*fakePeer, *Peer) {
		ours, theirs := Pipe(256) // every pipe end is "pipe-b": one swarm peer's key
		p, err := b.Attach(theirs, AttachOptions{Kind: KindSwarm})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ours.Close() })
		return &fakePeer{t: t, c: ours}, p
	}
	old, oldPeer := attach()
	u, err := db.NewUser(nil)
	if err != nil {
		t.Fatal(err)
	}
	old.user, old.id = u, ClientID(u.Address())
	old.hello(DefaultTopic, true, true)

	renewed, newPeer := attach()
	renewed.user, renewed.id = old.user, old.id
	renewed.hello(DefaultTopic, true, true)
	waitDone(t, oldPeer)
	if !errors.Is(oldPeer.Err(), ErrReplaced) {
		t.Fatalf("old connection ended with %v, want ErrReplaced", oldPeer.Err())
	}
	if !newPeer.Status().Identified {
		t.Fatal("the new connection is not identified")
	}

	// A different swarm peer (another key) claiming the id is still refused.
	ours, theirs := Pipe(256)
	theirs.(*pipeConn).name = "another key"
	if _, err := b.Attach(theirs, AttachOptions{Kind: KindSwarm}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ours.Close() })
	other := &fakePeer{t: t, c: ours, user: old.user, id: old.id}
	d, _ := SignPeerDesc(other.user, DefaultTopic, time.Now().UnixMilli(), "127.0.0.1", 8080)
	ping := &Message{Type: TypePing, ID: newID(), ClientID: other.id, Peer: &d}
	other.sendMsg(ping)
	other.expectError("ID_CLAIMED", ping.ID)
}
