package node_test

import (
	"bufio"
	"context"
	"encoding/json"

	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/tooldbtest"
	"github.com/swarmdb/swarmdb/node"
)

// The Node.js project with discovery-channel 5.5.1 (and the bittorrent-dht
// 7.10.0 it installs), tool-db 2.6.6 and a WebSocket adapter for both sides
// is node/testdata/discovery. Every bittorrent-dht there is given its
// bootstrap list: left unset it would contact the public routers.

// jsEvent is one JSON line a script printed.
type jsEvent map[string]any

func (e jsEvent) str(k string) string { s, _ := e[k].(string); return s }

// jsProc is a running script of the discovery project.
type jsProc struct {
	t      *testing.T
	name   string
	stdin  io.WriteCloser
	events chan jsEvent
	mu     sync.Mutex
	stderr strings.Builder
}

// startJS runs `node script args...` in the project; it is stopped (stdin
// closed, then killed) when the test ends.
func startJS(t *testing.T, dir, script string, args ...string) *jsProc {
	t.Helper()
	cmd := exec.Command("node", append([]string{script}, args...)...)
	cmd.Dir = dir
	p := &jsProc{t: t, name: script, events: make(chan jsEvent, 64)}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &lockedWriter{p: p}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(p.events)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e jsEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				p.events <- e
			}
		}
	}()
	t.Cleanup(func() {
		_ = p.stdin.Close()
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(3 * time.Second):
			_ = cmd.Process.Kill() // only the process this test started
			<-exited
		}
		<-done
		if t.Failed() {
			t.Logf("%s stderr:\n%s", script, p.stderrText())
		}
	})
	return p
}

type lockedWriter struct{ p *jsProc }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.stderr.Write(b)
}

func (p *jsProc) stderrText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// wait returns the first event named name within d, skipping others.
func (p *jsProc) wait(name string, d time.Duration) jsEvent {
	p.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case e, ok := <-p.events:
			if !ok {
				p.t.Fatalf("%s exited before %q:\n%s", p.name, name, p.stderrText())
			}
			p.t.Logf("%s: %v", p.name, e)
			if e.str("event") == name {
				return e
			}
		case <-timeout:
			p.t.Fatalf("%s: no %q within %v", p.name, name, d)
		}
	}
}

// startJSRouters starts a closed mainline DHT of bittorrent-dht nodes.
func startJSRouters(t *testing.T, dir string, n int) []string {
	t.Helper()
	e := startJS(t, dir, "routers.js", strconv.Itoa(n)).wait("ready", 30*time.Second)
	var out []string
	for _, r := range e["routers"].([]any) {
		out = append(out, r.(string))
	}
	return out
}

// startDiscoveryNode starts a swarmdb node on loopback with no bootstrap
// nodes; cfg adds its discovery (Mainline, DisableLAN) and WebSocketAddr.
func startDiscoveryNode(t *testing.T, topic string, cfg node.Config, events func(node.MainlinePeer)) *node.Node {
	t.Helper()
	cfg.Topic, cfg.OnMainlinePeer = topic, events
	return startConfigured(t, cfg)
}

// TestDiscoveryChannelClientFindsNode: the reference ToolDb client
// (DC().join(topic), connectTo on "peer") finds a swarmdb node on a
// mainline DHT of bittorrent-dht nodes, reads a record written through the
// node and is notified of a later update.
func TestDiscoveryChannelClientFindsNode(t *testing.T) {
	dir := tooldbtest.Require(t, "testdata/discovery", "node/testdata/discovery")
	routers := startJSRouters(t, dir, 3)
	const topic = "swarmdb-dc-client"
	nd := startDiscoveryNode(t, topic, node.Config{Mainline: routers, WebSocketAddr: "127.0.0.1:0", DisableLAN: true}, nil)
	clientScenario(t, dir, nd, topic, "dht", strings.Join(routers, ","))
	if st, _ := nd.MainlineStats(); !st.WebSocketAnnounced {
		t.Fatalf("mainline stats %+v: the websocket is not announced", st)
	}
}

// TestDiscoveryChannelServerFound: a swarmdb node finds the reference
// ToolDb server (a tool-db server that announces with DC().join(topic,
// port)) on the mainline DHT, connects to it, and records written on
// either side are read on the other.
func TestDiscoveryChannelServerFound(t *testing.T) {
	dir := tooldbtest.Require(t, "testdata/discovery", "node/testdata/discovery")
	routers := startJSRouters(t, dir, 3)
	nd := serverScenario(t, dir, "swarmdb-dc-server", "dht", strings.Join(routers, ","),
		node.Config{Mainline: routers, WebSocketAddr: "127.0.0.1:0", DisableLAN: true})
	if st, _ := nd.MainlineStats(); st.ServersLinked < 1 {
		t.Fatalf("mainline stats %+v: no tooldb server linked", st)
	}
}

// TestDiscoveryChannelOverMDNS: the same two scenarios over
// discovery-channel's multicast DNS alone (no DHT anywhere), inside a
// network namespace the test makes, so multicast never leaves it.
func TestDiscoveryChannelOverMDNS(t *testing.T) {
	tooldbtest.Require(t, "testdata/discovery", "node/testdata/discovery")
	lab := natlab.New(t)
	h := lab.AddPublicHost("mdns")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := h.EnableLoopbackMulticast(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := h.RunTest(ctx, "TestDiscoveryChannelOverMDNSChild")
	t.Logf("child:\n%s", out)
	if err != nil || !strings.Contains(out, "--- PASS: TestDiscoveryChannelOverMDNSChild") {
		t.Fatalf("child: %v", err)
	}
}

// TestDiscoveryChannelOverMDNSChild is TestDiscoveryChannelOverMDNS's body,
// run inside the namespace.
func TestDiscoveryChannelOverMDNSChild(t *testing.T) {
	if os.Getenv(natlab.ChildEnv) == "" {
		t.Skip("helper for TestDiscoveryChannelOverMDNS; runs only inside a lab namespace")
	}
	dir := tooldbtest.Require(t, "testdata/discovery", "node/testdata/discovery")
	t.Run("client finds node", func(t *testing.T) {
		const topic = "swarmdb-mdns-client"
		nd := startDiscoveryNode(t, topic, node.Config{WebSocketAddr: "0.0.0.0:0"}, nil)
		clientScenario(t, dir, nd, topic, "mdns", "-")
	})
	t.Run("node finds server", func(t *testing.T) {
		serverScenario(t, dir, "swarmdb-mdns-server", "mdns", "-", node.Config{WebSocketAddr: "0.0.0.0:0"})
	})
}

// clientScenario runs the reference client against nd: it finds nd, reads
// "greeting" (written here first) and is notified when it changes.
func clientScenario(t *testing.T, dir string, nd *node.Node, topic, mode, bootstrap string) {
	t.Helper()
	ctx := context.Background()
	if _, err := nd.Put(ctx, "greeting", []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	client := startJS(t, dir, "client.js", topic, mode, bootstrap, "greeting")
	ws := nd.WebSocketAddr().(*net.TCPAddr)
	found := client.wait("found", 60*time.Second)
	if found["port"] != float64(ws.Port) {
		t.Fatalf("client found %v, want the node's websocket port %d", found, ws.Port)
	}
	t.Logf("discovery-channel (%s) found the node %v after the client started", mode, time.Since(start).Round(time.Millisecond))
	read := client.wait("read", 30*time.Second)
	if v, _ := read["value"].(map[string]any); v["n"] != 1.0 {
		t.Fatalf("client read %v, want {n:1}", read)
	}
	client.wait("subscribed", 10*time.Second)
	if _, err := nd.Put(ctx, "greeting", []byte(`{"n":2}`)); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(20 * time.Second)
	for {
		var e jsEvent
		select {
		case e = <-client.events:
		case <-deadline:
			t.Fatal("the client was not notified of the update")
		}
		if v, _ := e["value"].(map[string]any); e.str("event") == "notified" && v["n"] == 2.0 {
			return
		}
	}
}

// serverScenario starts the reference server, then a node configured by
// cfg, which must find the server by mode, read its record, and get its
// own record to it.
func serverScenario(t *testing.T, dir, topic, mode, bootstrap string, cfg node.Config) *node.Node {
	t.Helper()
	port := freePort(t)
	server := startJS(t, dir, "server.js", topic, mode, bootstrap, strconv.Itoa(port))
	server.wait("wrote", 30*time.Second)
	var ml mainlineLog
	start := time.Now()
	nd := startDiscoveryNode(t, topic, cfg, ml.add)
	waitValue(t, nd, "from-js", []byte(`{"by":"tool-db server"}`))
	t.Logf("the node (%s) read the tool-db server's record %v after its start", mode, time.Since(start).Round(time.Millisecond))
	found := false
	ml.mu.Lock()
	for _, e := range ml.events {
		found = found || (e.Addr.Port() == uint16(port) && e.Source == mode && e.Kind == "tooldb")
	}
	ml.mu.Unlock()
	if !found {
		t.Fatalf("events %v lack the server's port %d from %s", ml.events, port, mode)
	}
	if _, err := nd.Put(context.Background(), "from-go", []byte(`{"by":"swarmdb"}`)); err != nil {
		t.Fatal(err)
	}
	got := server.wait("got", 60*time.Second)
	if v, _ := got["value"].(map[string]any); v["by"] != "swarmdb" {
		t.Fatalf("the tool-db server got %v, want {by: swarmdb}", got)
	}
	return nd
}
