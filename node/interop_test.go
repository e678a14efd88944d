package node_test

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/bridge"
	"github.com/swarmdb/swarmdb/node"

	"github.com/swarmdb/swarmdb/internal/tooldbtest"
)

// The Node.js project with the pinned tool-db@2.6.6 and a small WebSocket
// adapter for it is bridge's (bridge/testdata/tooldb).

// TestToolDbAcrossSwarm: a real ToolDb client on node A writes; a ToolDb
// client on node C, which reaches A only through the swarm, reads it, is
// notified through its subscription, lists the keys with a query and calls
// a server function.
func TestToolDbAcrossSwarm(t *testing.T) {
	dir := tooldbtest.Require(t, "../bridge/testdata/tooldb", "bridge/testdata/tooldb")
	const topic = "swarmdb-interop"
	n := loopbackNet(t)
	echo := map[string]bridge.Function{"echo": func(_ context.Context, args []byte) (any, error) {
		return json.RawMessage(args), nil
	}}
	var nodes []*node.Node
	for range 3 {
		nd, err := node.New(node.Config{
			Topic: topic, DataDir: t.TempDir(), ListenAddr: "127.0.0.1:0", Bootstrap: n.Bootstrap,
			KeepLoopback: true, DisableLAN: true, WebSocketAddr: "127.0.0.1:0", Functions: echo,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err = nd.Start(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		defer nd.Close()
		nodes = append(nodes, nd)
	}
	for _, nd := range nodes {
		waitPeers(t, nd, 2)
	}
	a, c := nodes[0].WebSocketAddr().(*net.TCPAddr), nodes[2].WebSocketAddr().(*net.TCPAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "interop.js", topic, a.IP.String(), strconv.Itoa(a.Port), strconv.Itoa(c.Port))
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	outb, err := cmd.Output()
	if err != nil {
		t.Fatalf("interop.js: %v\n%s", err, stderr.String())
	}
	t.Logf("ToolDb scenario across the swarm took %v: %s", time.Since(start).Round(time.Millisecond), outb)
	var out struct {
		First  map[string]any  `json:"first"`
		Second map[string]any  `json:"second"`
		Get    map[string]any  `json:"get"`
		Keys   []string        `json:"keys"`
		Fn     json.RawMessage `json:"fn"`
	}
	if err := json.Unmarshal(outb, &out); err != nil {
		t.Fatalf("interop.js printed %q: %v", outb, err)
	}
	if out.First["n"] != 1.0 || out.Second["n"] != 2.0 {
		t.Errorf("subscription on C: first %v second %v", out.First, out.Second)
	}
	if out.Get["from"] != "X" {
		t.Errorf("get on C of A's write: %v", out.Get)
	}
	if !strings.Contains(strings.Join(out.Keys, ","), "interop-get") || !strings.Contains(strings.Join(out.Keys, ","), "interop-sub") {
		t.Errorf("query keys on C: %v", out.Keys)
	}
	if !strings.Contains(string(out.Fn), `"hello":"go"`) {
		t.Errorf("function on C: %s", out.Fn)
	}
	// Node B, which no ToolDb client touched, holds A's record too.
	if keys, err := nodes[1].Query("interop-"); err != nil || len(keys) < 2 {
		t.Errorf("node B holds %v (%v)", keys, err)
	}
}
