package node_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/node"
)

// lanNode is a LAN-only node config on loopback: no DHT, no mDNS.
func lanNode(dir string) node.Config {
	return node.Config{Topic: "datadir-test", DataDir: dir, ListenAddr: "127.0.0.1:0", DisableLAN: true}
}

func start(t *testing.T, cfg node.Config) (*node.Node, error) {
	t.Helper()
	nd, err := node.New(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := nd.Start(ctx); err != nil {
		return nil, err
	}
	return nd, nil
}

// TestDataDirInUse: a second node on a running node's data directory is
// refused before it touches the store, with a message naming the holder's
// pid (it was Pebble's "resource temporarily unavailable"). Once the first
// closes, the directory is free again.
func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	a, err := start(t, lanNode(dir))
	if err != nil {
		t.Fatal(err)
	}
	_, err = start(t, lanNode(dir))
	if !errors.Is(err, node.ErrDataDirInUse) {
		t.Fatalf("second node on the same data dir: %v", err)
	}
	if want := fmt.Sprintf("in use by another node (pid %d)", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Fatalf("message %q lacks %q", err, want)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := start(t, lanNode(dir))
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	if !b.PublicKey().Equal(a.PublicKey()) {
		t.Fatal("the identity changed across restarts")
	}
	_ = b.Close()
}

// TestFailedStartCreatesNothing: a Start that fails (here: the WebSocket
// port is taken) leaves no data directory, no identity and no store behind,
// whether the directory did not exist or existed empty.
func TestFailedStartCreatesNothing(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	parent := t.TempDir()
	for _, dir := range []string{filepath.Join(parent, "new"), parent} {
		cfg := lanNode(dir)
		cfg.WebSocketAddr = taken.Addr().String()
		if _, err := start(t, cfg); err == nil {
			t.Fatal("start with a taken WebSocket port succeeded")
		}
		if dir != parent {
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("failed start left %s: %v", dir, err)
			}
			continue
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Fatalf("failed start left %v in the existing directory", left)
		}
	}
}

// TestMissingIdentityNextToStore: deleting identity.json of a node that has
// a store is an error naming the file, never a new identity for old data;
// a bad identity file is an error too.
func TestMissingIdentityNextToStore(t *testing.T) {
	dir := t.TempDir()
	a, err := start(t, lanNode(dir))
	if err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	id := filepath.Join(dir, "identity.json")
	if err := os.Rename(id, id+".bak"); err != nil {
		t.Fatal(err)
	}
	_, err = node.New(lanNode(dir))
	if !errors.Is(err, node.ErrIdentity) || !strings.Contains(err.Error(), "identity.json is missing") {
		t.Fatalf("missing identity next to a store: %v", err)
	}
	if err := os.WriteFile(id, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := node.New(lanNode(dir)); !errors.Is(err, node.ErrIdentity) {
		t.Fatalf("bad identity file: %v", err)
	}
}
