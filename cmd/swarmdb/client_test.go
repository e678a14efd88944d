package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/bridge/client"
	"github.com/swarmdb/swarmdb/db"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/node"
)

// twoNodes starts a small loopback DHT and two nodes on topic with
// WebSocket endpoints, and waits until they are connected.
func twoNodes(t *testing.T, topic string, conns *connMetrics) (a, b *node.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nw, err := testnet.Start(ctx, testnet.Config{Persistent: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Close)
	start := func(hook func(node.PeerEvent)) *node.Node {
		nd, err := node.New(node.Config{Topic: topic, DataDir: t.TempDir(), ListenAddr: "127.0.0.1:0",
			Bootstrap: nw.Bootstrap, KeepLoopback: true, DisableLAN: true, WebSocketAddr: "127.0.0.1:0",
			OnPeerConnect: hook})
		if err != nil {
			t.Fatal(err)
		}
		if err := nd.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nd.Close() })
		return nd
	}
	var hook func(node.PeerEvent)
	if conns != nil {
		hook = conns.observe
	}
	a, b = start(hook), start(nil)
	testutil.Eventually(t, 30*time.Second, func() bool { return a.Stats().Bridge.Peers >= 1 && b.Stats().Bridge.Peers >= 1 },
		"the two nodes to connect")
	return a, b
}

func wsURL(nd *node.Node) string { return "ws://" + nd.WebSocketAddr().String() }

// runClient calls one of the client mains and returns its exit code and output.
func runClient(t *testing.T, main func(context.Context, []string, stdio) int, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := main(ctx, args, stdio{in: strings.NewReader(""), out: &stdout, err: &stderr})
	return code, stdout.String(), stderr.String()
}

// TestPutGetAcrossNodes: a put through A's WebSocket is confirmed, and a get
// through B's returns it (replicated over the swarm connection); a missing
// key exits 3; a wrong topic, a bad value and bad usage fail with 1, 2, 2.
func TestPutGetAcrossNodes(t *testing.T) {
	a, b := twoNodes(t, "cli-test", nil)
	code, out, errOut := runClient(t, putMain, "--ws", wsURL(a), "--topic", "cli-test", "color", `{"name": "blue"}`)
	if code != 0 || !strings.Contains(out, `stored "color"`) {
		t.Fatalf("put: exit %d, %q %q", code, out, errOut)
	}
	code, out, errOut = runClient(t, getMain, "--ws", wsURL(b), "--topic", "cli-test", "color")
	if code != 0 || out != `{"name":"blue"}`+"\n" {
		t.Fatalf("get on B: exit %d, %q %q", code, out, errOut)
	}
	code, out, _ = runClient(t, getMain, "--ws", wsURL(b), "--topic", "cli-test", "--json", "color")
	rec, err := db.ParseRecord([]byte(strings.TrimSpace(out)))
	if code != 0 || err != nil || rec.Key != "color" {
		t.Fatalf("get --json: exit %d, %q: %v", code, out, err)
	}
	var v db.Verifier
	if err := v.Verify(&rec, nil, time.Now()); err != nil {
		t.Fatalf("record from get --json does not verify: %v", err)
	}

	// A missing key is answered by the node (after asking A), not by the
	// client's own --timeout running out: it used to always take 5 s.
	if code, _, errOut := runClient(t, getMain, "--ws", wsURL(b), "--topic", "cli-test", "--timeout", "1m", "nothing-here"); code != exitNotFound ||
		!strings.Contains(errOut, "hold no record") {
		t.Fatalf("get of a missing key: exit %d (%s), want 3 with the node's answer", code, errOut)
	}
	// host:port works for --ws as ws:// does, flags after the key too.
	if code, out, errOut := runClient(t, getMain, "color", "--ws", b.WebSocketAddr().String(), "--topic", "cli-test"); code != 0 || out != `{"name":"blue"}`+"\n" {
		t.Fatalf("get with --ws host:port after the key: exit %d, %q %q", code, out, errOut)
	}
	if code, _, errOut := runClient(t, getMain, "--ws", wsURL(a), "--topic", "other", "color"); code != exitError || !strings.Contains(errOut, "BAD_PEER") {
		t.Fatalf("wrong topic: exit %d, %q", code, errOut)
	}
	if code, _, _ := runClient(t, putMain, "--ws", wsURL(a), "--topic", "cli-test", "k", "not json"); code != exitUsage {
		t.Fatalf("bad JSON: exit %d, want 2", code)
	}
	if code, _, _ := runClient(t, getMain, "--ws", wsURL(a), "--topic", "cli-test"); code != exitUsage {
		t.Fatalf("no key: exit %d, want 2", code)
	}
	if code, _, _ := runClient(t, putMain, "--ws", "ws://127.0.0.1:1", "--topic", "cli-test", "k", "1"); code != exitError {
		t.Fatalf("no node: exit %d, want 1", code)
	}
	// Another author's user key (":" namespace) is refused by the node.
	other, _ := db.NewUser(nil)
	code, _, errOut = runClient(t, putMain, "--ws", wsURL(a), "--topic", "cli-test", db.UserKey(other.Address(), "x"), "1")
	if code != exitError || !strings.Contains(errOut, "refused") {
		t.Fatalf("put to another user's key: exit %d, %q", code, errOut)
	}
}

// TestKeyFile: --key creates a 0600 account file once and writes as that
// account afterwards; a node's identity.json is read as well.
func TestKeyFile(t *testing.T) {
	a, _ := twoNodes(t, "key-test", nil)
	kf := filepath.Join(t.TempDir(), "me.json")
	author := func(key string) string {
		t.Helper()
		code, out, errOut := runClient(t, putMain, "--ws", wsURL(a), "--topic", "key-test", "--key", kf, "--json", key, "1")
		if code != 0 {
			t.Fatalf("put: exit %d %q", code, errOut)
		}
		rec, err := db.ParseRecord([]byte(strings.TrimSpace(out)))
		if err != nil {
			t.Fatal(err)
		}
		return rec.Author
	}
	first := author("k1")
	st, err := os.Stat(kf)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st.Mode(), err)
	}
	if second := author("k2"); second != first {
		t.Fatal("the key file did not keep the account")
	}
	dir := t.TempDir()
	nd, err := node.New(node.Config{Topic: "x", DataDir: dir, ListenAddr: "127.0.0.1:0", DisableLAN: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := nd.Start(context.Background()); err != nil { // Start writes identity.json
		t.Fatal(err)
	}
	if err := nd.Close(); err != nil {
		t.Fatal(err)
	}
	u, err := client.LoadUser(filepath.Join(dir, "identity.json"))
	if err != nil || u.Address() != nd.Address() {
		t.Fatalf("identity.json: %v", err)
	}
}

// TestWatch: watch prints the stored value, then each update made on the
// other node, and exits 0 when interrupted.
func TestWatch(t *testing.T) {
	a, b := twoNodes(t, "watch-test", nil)
	if code, _, errOut := runClient(t, putMain, "--ws", wsURL(a), "--topic", "watch-test", "temp", "20"); code != 0 {
		t.Fatalf("put: %s", errOut)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	var wg sync.WaitGroup
	codec := make(chan int, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		codec <- watchMain(ctx, []string{"--ws", wsURL(b), "--topic", "watch-test", "temp"}, stdio{out: pw, err: &stderr})
		pw.Close()
	}()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("watch ended: %s", stderr.String())
			}
			return l
		case <-time.After(20 * time.Second):
			t.Fatal("no line from watch")
		}
		return ""
	}
	// The first line is the value B holds once replication reached it.
	for l := next(); l != "20"; l = next() {
		t.Fatalf("first line %q", l)
	}
	for _, v := range []string{"21", `{"c":22}`} {
		if code, _, errOut := runClient(t, putMain, "--ws", wsURL(a), "--topic", "watch-test", "temp", v); code != 0 {
			t.Fatalf("put: %s", errOut)
		}
		if l := next(); l != v {
			t.Fatalf("watch printed %q, want %q", l, v)
		}
	}
	cancel()
	wg.Wait()
	if code := <-codec; code != 0 {
		t.Fatalf("watch exit %d after interrupt: %s", code, stderr.String())
	}
}

// TestMetrics scrapes the metrics of a node that has one peer and one
// stored record.
func TestMetrics(t *testing.T) {
	conns := newConnMetrics()
	a, _ := twoNodes(t, "metrics-test", conns)
	if code, _, errOut := runClient(t, putMain, "--ws", wsURL(a), "--topic", "metrics-test", "m", "1"); code != 0 {
		t.Fatalf("put: %s", errOut)
	}
	// put confirms by reading the record back, which can see it a moment
	// before the store counts it (db/store.go, the group commit).
	testutil.Poll(5*time.Second, 0, func() bool { return a.Stats().Store.Accepted > 0 }) // the metrics below show if not
	srv := httptest.NewServer(metricsHandler(a, conns))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	series := map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		if i := strings.LastIndexByte(l, ' '); i > 0 && !strings.HasPrefix(l, "#") {
			series[l[:i]] = l[i+1:]
		}
	}
	for name, want := range map[string]string{
		`swarmdb_records_total{result="accepted"}`: "1",
		`swarmdb_records_total{result="rejected"}`: "0",
		`swarmdb_store_commits_total`:              "1",
	} {
		if series[name] != want {
			t.Errorf("%s = %q, want %s", name, series[name], want)
		}
	}
	for _, name := range []string{"swarmdb_peers", "swarmdb_swarm_connections_opened_total", "swarmdb_dht_packets_total",
		"swarmdb_punch_connections_total", "swarmdb_bridge_messages_total", "swarmdb_dht_routing_table"} {
		found := false
		for s, v := range series {
			if strings.HasPrefix(s, name) && v != "0" {
				found = true
			}
		}
		if !found {
			t.Errorf("no non-zero %s", name)
		}
	}
	pub := a.Stats().PublicKey
	if !strings.Contains(text, `swarmdb_info{address="`+a.Address()+`",public_key="`+pub+`"} 1`) {
		t.Error("swarmdb_info lacks the node's identity")
	}
	if t.Failed() {
		t.Log(text)
	}

	// The health check the Docker image runs, against the same server.
	addr := strings.TrimPrefix(srv.URL, "http://")
	code, out, errOut := runClient(t, healthMain, "--metrics", addr)
	if code != exitOK || !strings.Contains(out, `"status":"ok"`) || !strings.Contains(out, pub) {
		t.Errorf("health: exit %d, %q %q", code, out, errOut)
	}
	srv.Close()
	if code, _, errOut := runClient(t, healthMain, "--metrics", addr, "--timeout", "1s"); code != exitError || errOut == "" {
		t.Errorf("health of a stopped node: exit %d, %q", code, errOut)
	}
}
