package main

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/mainline"
)

// startRouters starts n mainline routers on loopback and returns them and
// their addresses as a --mainline value.
func startRouters(t *testing.T, n int) ([]*mainline.Node, string) {
	t.Helper()
	nodes, addrs := testnet.MainlineRouters(t, n, nil)
	return nodes, strings.Join(addrs, ",")
}

// TestNodeMainlineOnly is issue 14's process case: two `swarmdb node`
// processes given only --mainline (loopback routers) and a `swarmdb
// bootstrap` that announces itself there find the bootstrap through the
// mainline DHT and then each other; stopped, and restarted with the routers
// gone, they reconnect from the node cache in their data directories.
func TestNodeMainlineOnly(t *testing.T) {
	bin := buildBinary(t)
	routers, routerList := startRouters(t, 3)
	boot := startProc(t, bin, "bootstrap", "--listen", "127.0.0.1:0", "--turn", "off", "--mainline", routerList, "--json")
	bootReady := boot.waitEvent("ready")
	bootAddr := bootReady["addr"].(string)
	if ml, _ := bootReady["mainline"].(map[string]any); ml == nil || ml["routers"] != 3.0 {
		t.Fatalf("bootstrap ready: mainline %v", bootReady["mainline"])
	}
	const topic = "mainline-cli"
	dirs := []string{filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")}
	nodeArgs := func(dir string) []string {
		return []string{"node", "--topic", topic, "--data", dir, "--mainline", routerList, "--listen", "127.0.0.1:0",
			"--ws", "127.0.0.1:0", "--loopback", "--no-lan", "--json"}
	}
	start := time.Now()
	var procs []*proc
	for _, dir := range dirs {
		p := startProc(t, bin, nodeArgs(dir)...)
		if r := p.waitEvent("ready"); r["lan_only"] != false || r["mainline"] == "off" {
			t.Fatalf("ready: %v", r)
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		// The nodes also find each other's WebSocket under the topic
		// (kind tooldb); the event that matters here names the bootstrap.
		ev := p.waitEvent("mainline_peer")
		for ev["kind"] != "swarmdb" {
			ev = p.waitEvent("mainline_peer")
		}
		if ev["source"] != "dht" || net.JoinHostPort(ev["host"].(string), strconv.Itoa(int(ev["port"].(float64)))) != bootAddr {
			t.Fatalf("mainline_peer %v, want the bootstrap node %s", ev, bootAddr)
		}
		p.waitEvent("peer_connected")
	}
	t.Logf("both nodes connected %v after they started, through a bootstrap node found on the mainline DHT", time.Since(start).Round(time.Millisecond))
	for _, p := range procs {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		p.waitEvent("stopped")
		_ = p.cmd.Wait()
	}
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "nodes.json")); err != nil {
			t.Fatalf("no node cache: %v", err)
		}
	}

	for _, r := range routers {
		r.Close()
	}
	start = time.Now()
	for _, dir := range dirs {
		p := startProc(t, bin, nodeArgs(dir)...)
		p.waitEvent("ready")
		procs = append(procs, p)
	}
	for _, p := range procs[2:] {
		p.waitEvent("peer_connected")
	}
	t.Logf("restarted with the routers gone, both nodes connected %v after they started", time.Since(start).Round(time.Millisecond))
}
