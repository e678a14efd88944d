package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/db"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/node"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// loopbackNet starts a small persistent DHT on loopback.
func loopbackNet(t *testing.T) *testnet.Network {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := testnet.Start(ctx, testnet.Config{Persistent: 6})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// startNode starts a node on loopback with dir as its data directory.
func startNode(t *testing.T, n *testnet.Network, topic, dir string) *node.Node {
	t.Helper()
	nd, err := node.New(node.Config{
		Topic: topic, DataDir: dir, ListenAddr: "127.0.0.1:0", Bootstrap: n.Bootstrap,
		KeepLoopback: true, DisableLAN: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := nd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return nd
}

// startConfigured starts a node configured by cfg on loopback: DataDir a
// fresh temporary directory unless set, the socket on 127.0.0.1, loopback
// candidates kept. It is closed when the test ends.
func startConfigured(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.ListenAddr, cfg.KeepLoopback = "127.0.0.1:0", true
	nd, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := nd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nd.Close() })
	return nd
}

// waitPeers waits until nd's message layer has want identified peers.
func waitPeers(t *testing.T, nd *node.Node, want int) {
	t.Helper()
	if !testutil.Poll(30*time.Second, 0, func() bool { return nd.Stats().Bridge.Peers >= want }) {
		t.Fatalf("%d peers after 30 s, want %d", nd.Stats().Bridge.Peers, want)
	}
}

// waitValue waits until nd stores key with value.
func waitValue(t *testing.T, nd *node.Node, key string, value []byte) {
	t.Helper()
	var rec db.Record
	var err error
	arrived := testutil.Poll(30*time.Second, 50*time.Millisecond, func() bool { // each check may ask the peers
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		rec, err = nd.Get(ctx, key)
		return err == nil && bytes.Equal(rec.Value, value)
	})
	if !arrived {
		t.Fatalf("key %q never arrived (last: %v %s)", key, err, rec.Value)
	}
}

// TestThreeNodesReplicate: three nodes on one topic connect to each other;
// a put on one reaches the subscriptions of the other two.
func TestThreeNodesReplicate(t *testing.T) {
	n := loopbackNet(t)
	var nodes []*node.Node
	for i := range 3 {
		nd := startNode(t, n, "replicate-test", t.TempDir())
		defer nd.Close()
		_ = i
		nodes = append(nodes, nd)
	}
	for _, nd := range nodes {
		waitPeers(t, nd, 2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var watchers []interface {
		Close()
	}
	subs := make([]chan []byte, 0, 2)
	for _, nd := range nodes[1:] {
		w, err := nd.Subscribe("greeting")
		if err != nil {
			t.Fatal(err)
		}
		watchers = append(watchers, w)
		ch := make(chan []byte, 1)
		subs = append(subs, ch)
		go func() {
			ev, err := w.Next(ctx)
			if err == nil {
				ch <- ev.Record.Value
			}
		}()
	}
	defer func() {
		for _, w := range watchers {
			w.Close()
		}
	}()
	start := time.Now()
	if _, err := nodes[0].Put(ctx, "greeting", []byte(`"hello swarm"`)); err != nil {
		t.Fatal(err)
	}
	for i, ch := range subs {
		select {
		case v := <-ch:
			if string(v) != `"hello swarm"` {
				t.Fatalf("node %d got %s", i+1, v)
			}
		case <-ctx.Done():
			t.Fatalf("node %d: no subscription event", i+1)
		}
	}
	t.Logf("put reached both subscribers in %v", time.Since(start))
	keys, err := nodes[2].Query("gree")
	if err != nil || len(keys) != 1 || keys[0] != "greeting" {
		t.Fatalf("query: %v %v", keys, err)
	}
}

// TestRestartCatchesUp: a node that was down keeps its identity and its
// data when it comes back, and catches up on what it missed.
func TestRestartCatchesUp(t *testing.T) {
	n := loopbackNet(t)
	a := startNode(t, n, "restart-test", t.TempDir())
	defer a.Close()
	dir := t.TempDir()
	b := startNode(t, n, "restart-test", dir)
	id := b.PublicKey()
	waitPeers(t, a, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := a.Put(ctx, "before", []byte(`1`)); err != nil {
		t.Fatal(err)
	}
	waitValue(t, b, "before", []byte(`1`))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := a.Put(ctx, fmt.Sprintf("missed-%02d", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	b = startNode(t, n, "restart-test", dir)
	defer b.Close()
	if !bytes.Equal(b.PublicKey(), id) {
		t.Fatal("identity changed across restart")
	}
	// Query reads the local store only (Get would ask the peers), so this
	// waits for the anti-entropy catch-up itself.
	var keys []string
	var err error
	if !testutil.Poll(30*time.Second, 0, func() bool { keys, err = b.Query(""); return err == nil && len(keys) == 21 }) {
		t.Fatalf("restarted node holds %d of 21 records (%v)", len(keys), err)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := node.New(node.Config{DataDir: t.TempDir()}); !errors.Is(err, node.ErrConfig) {
		t.Fatalf("no topic: %v", err)
	}
	if _, err := node.New(node.Config{Topic: "x"}); !errors.Is(err, node.ErrConfig) {
		t.Fatalf("no data dir: %v", err)
	}
	nd, err := node.New(node.Config{Topic: "x", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nd.Put(context.Background(), "k", []byte(`1`)); !errors.Is(err, node.ErrNotStarted) {
		t.Fatalf("put before start: %v", err)
	}
}
