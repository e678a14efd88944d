package client_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/swarmdb/swarmdb/internal/testutil"

	"github.com/swarmdb/swarmdb/bridge"
	"github.com/swarmdb/swarmdb/bridge/client"
	"github.com/swarmdb/swarmdb/db"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// waitLimit bounds every exchange with the in-process server.
const waitLimit = 20 * time.Second

// serve runs a bridge on an in-memory store behind a WebSocket server for
// topic and returns its ws:// URL.
func serve(t *testing.T, topic string) string {
	t.Helper()
	st, err := db.Open(db.Config{Dir: "db", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bridge.New(bridge.Config{Store: st, Server: true, Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(b.Handler())
	t.Cleanup(func() {
		b.Close() // ends the peers, so the handlers return
		srv.Close()
		st.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func dial(t *testing.T, url, topic string, u *client.User) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := client.Dial(ctx, url, topic, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestPutGetSubscribe: a put is confirmed, a get returns it, a
// subscriber sees the stored record then the update, and a missing key is
// ErrNotFound.
func TestPutGetSubscribe(t *testing.T) {
	url := serve(t, "client-test")
	u, err := client.LoadUser("")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	writer, watcher := dial(t, url, "client-test", u), dial(t, url, "client-test", mustUser(t))

	put := func(v string) client.Record {
		t.Helper()
		rec, err := u.NewRecord("k", []byte(v), "", time.Now(), 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := writer.Put(ctx, &rec); err != nil {
			t.Fatalf("put %s: %v", v, err)
		}
		return rec
	}
	first := put(`{"n":1}`)
	got, err := writer.Get(ctx, "k")
	if err != nil || got.Hash != first.Hash {
		t.Fatalf("get: %+v, %v", got, err)
	}
	sub, err := watcher.Subscribe(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := sub.Next(ctx); err != nil || string(rec.Value) != `{"n":1}` {
		t.Fatalf("first: %q, %v", rec.Value, err)
	}
	put(`{"n":2}`)
	if rec, err := sub.Next(ctx); err != nil || string(rec.Value) != `{"n":2}` {
		t.Fatalf("update: %q, %v", rec.Value, err)
	}

	gctx, gcancel := context.WithTimeout(ctx, 3*time.Second)
	defer gcancel()
	if _, err := writer.Get(gctx, "nothing-here"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
}

// TestDialWrongTopic: the node refuses a client of another topic.
func TestDialWrongTopic(t *testing.T) {
	url := serve(t, "client-test")
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if c, err := client.Dial(ctx, url, "other", mustUser(t)); err == nil || !strings.Contains(err.Error(), "node refused us") {
		if c != nil {
			c.Close()
		}
		t.Fatalf("wrong topic: %v", err)
	}
	if _, err := client.Dial(ctx, url, "", mustUser(t)); !errors.Is(err, client.ErrNoTopic) {
		t.Fatalf("no topic: %v", err)
	}
}

// TestLoadUser: an account file is created once (0600) and read back.
func TestLoadUser(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "me.json")
	a, err := client.LoadUser(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := client.LoadUser(path)
	if err != nil || a.Address() != b.Address() {
		t.Fatalf("reload: %v, same %v", err, a.Address() == b.Address())
	}
}

func mustUser(t *testing.T) *client.User {
	t.Helper()
	u, err := client.LoadUser("")
	if err != nil {
		t.Fatal(err)
	}
	return u
}
