package bridge

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/swarmdb/swarmdb/db"
	"github.com/swarmdb/swarmdb/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// waitLimit bounds every wait in these tests: generous for a loaded 2-core CI machine, and only
// ever reached when something is broken.
const waitLimit = 20 * time.Second

func openStore(t testing.TB) *db.Store {
	t.Helper()
	s, err := db.Open(db.Config{Dir: "db", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newBridge(t testing.TB, cfg Config) *Bridge {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = openStore(t)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// link connects a (initiator) and b over an in-memory pipe and waits until both identified
// each other.
func link(t testing.TB, a, b *Bridge) (*Peer, *Peer) {
	t.Helper()
	ca, cb := Pipe(0)
	pb, err := b.Attach(cb, AttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pa, err := a.Attach(ca, AttachOptions{Initiator: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := pa.WaitIdentified(ctx); err != nil {
		t.Fatalf("a did not identify b: %v", err)
	}
	if err := pb.WaitIdentified(ctx); err != nil {
		t.Fatalf("b did not identify a: %v", err)
	}
	return pa, pb
}

var testUser = func() *db.User {
	u, err := db.NewUser(nil)
	if err != nil {
		panic(err)
	}
	return u
}()

func record(t testing.TB, u *db.User, key, value string) db.Record {
	t.Helper()
	r, err := u.NewRecord(key, []byte(value), "", time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitRecord waits until s holds key with hash h (any hash if h is "").
func waitRecord(t testing.TB, s *db.Store, key, h string) db.Record {
	t.Helper()
	w := s.Watch(key)
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for {
		if r, err := s.Get(key); err == nil && (h == "" || r.Hash == h) {
			return r
		}
		if _, err := w.Next(ctx); err != nil {
			t.Fatalf("waiting for %q: %v", key, err)
		}
	}
}

// fakePeer is a raw connection end driven by the test: it writes JSON and reads what the
// bridge answers.
type fakePeer struct {
	t    testing.TB
	c    Conn
	user *db.User
	id   string
}

// newFakePeer attaches a connection the test drives; with bridgeDials the bridge pings first.
func newFakePeer(t testing.TB, b *Bridge, bridgeDials bool) (*fakePeer, *Peer) {
	t.Helper()
	ours, theirs := Pipe(256)
	p, err := b.Attach(theirs, AttachOptions{Initiator: bridgeDials})
	if err != nil {
		t.Fatal(err)
	}
	u, err := db.NewUser(nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePeer{t: t, c: ours, user: u, id: ClientID(u.Address())}
	t.Cleanup(func() { ours.Close() })
	return f, p
}

func (f *fakePeer) send(s string) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := f.c.WriteMessage(ctx, []byte(s)); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakePeer) sendMsg(m *Message) { f.send(string(AppendMessage(nil, m))) }

// sendSync sends a swarmdbSync message with body.
func (f *fakePeer) sendSync(body *SyncBody) {
	f.sendMsg(&Message{Type: TypeSync, ID: newID(), To: []string{f.id}, Sync: body})
}

// next reads the next message the bridge sent, skipping types in skip.
func (f *fakePeer) next(skip ...string) Message {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for {
		raw, err := f.c.ReadMessage(ctx)
		if err != nil {
			f.t.Fatalf("reading from bridge: %v", err)
		}
		m, err := ParseMessage(raw, 0)
		if err != nil {
			f.t.Fatalf("bridge sent a bad message %s: %v", raw, err)
		}
		if !contains(skip, m.Type) {
			return m
		}
	}
}

// hello sends a ToolDb-style ping for topic and reads the pong.
func (f *fakePeer) hello(topic string, server, swarmdb bool) Message {
	f.t.Helper()
	d, err := SignPeerDesc(f.user, topic, time.Now().UnixMilli(), "127.0.0.1", 8080)
	if err != nil {
		f.t.Fatal(err)
	}
	m := &Message{Type: TypePing, ID: newID(), To: []string{f.id}, IsServer: server, ClientID: f.id, Peer: &d}
	if swarmdb {
		m.Swarmdb = ProtocolVersion
	}
	f.sendMsg(m)
	pong := f.next()
	if pong.Type != TypePong || pong.ID != m.ID {
		f.t.Fatalf("want pong %s, got %+v", m.ID, pong)
	}
	return pong
}

// expectClosed waits until the bridge closed the connection.
func (f *fakePeer) expectClosed() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for {
		_, err := f.c.ReadMessage(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				f.t.Fatal("connection was not closed")
			}
			return
		}
	}
}

func waitDone(t testing.TB, p *Peer) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(waitLimit):
		t.Fatal("peer did not end")
	}
}

func putMsg(rec db.Record) *Message {
	typ := TypePut
	if rec.CRDT != "" {
		typ = TypeCRDTPut
	}
	return &Message{Type: typ, ID: newID(), Data: &rec}
}

func keyN(i int) string { return fmt.Sprintf("key-%05d", i) }

// waitAccepted waits until s has counted want accepted records and fails if
// it counts another number. A record is readable a moment before the store
// counts it, so a test reads the count through here, not right after Get.
func waitAccepted(t testing.TB, s *db.Store, want uint64) {
	t.Helper()
	testutil.Poll(waitLimit, 0, func() bool { return s.Stats().Accepted >= want })
	if got := s.Stats().Accepted; got != want {
		t.Fatalf("store accepted %d records, want %d", got, want)
	}
}
