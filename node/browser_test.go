package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/bridge"
	"github.com/swarmdb/swarmdb/db"
	"github.com/swarmdb/swarmdb/internal/browsertest"
	"github.com/swarmdb/swarmdb/node"

	"github.com/chromedp/chromedp"
)

// The browser tests run the reference ToolDb browser stack (tool-db 2.6.6,
// @tool-db/indexeddb-store, @tool-db/ecdsa-user, pinned by
// testdata/browser/package-lock.json) with our WebSocket adapter, bundled
// by esbuild, in Debian's headless Chromium, against real nodes on
// loopback. The page that loads the bundle comes from a test server of its
// own, so the browser talks to the nodes cross-origin, as a web app would.

const browserWait = 30 * time.Second

// harness bundles the client, serves harness.html and the bundle, starts a
// browser on it and returns the browser and the page's origin.
func harness(t *testing.T) (*browsertest.Browser, string) {
	t.Helper()
	dir, err := filepath.Abs("testdata/browser")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	browsertest.Bundle(t, dir, "entry.js", filepath.Join(out, "bundle.js"),
		"--alias:crypto=./crypto-shim.js", "--define:global=globalThis")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(dir, "harness.html"))
	})
	mux.HandleFunc("/bundle.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(out, "bundle.js"))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	b := browsertest.Start(t)
	openHarness(t, b, srv.URL)
	return b, srv.URL
}

func openHarness(t *testing.T, b *browsertest.Browser, origin string) {
	t.Helper()
	b.Do(t, browserWait, chromedp.Navigate(origin+"/"))
	browsertest.WaitJS(t, b, browserWait, `typeof window.harness === "object"`, "the bundle loads")
}

func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// clientAccounts are the ToolDb addresses of the browser client: the user
// (author of its records) and the peer (its connections' identity).
type clientAccounts struct{ User, Peer string }

// startClient starts the browser client on topic with its data in
// IndexedDB under storage, connected to urls.
func startClient(t *testing.T, b *browsertest.Browser, topic, storage string, urls ...string) clientAccounts {
	t.Helper()
	if urls == nil {
		urls = []string{}
	}
	return browsertest.Eval[clientAccounts](t, b, browserWait, fmt.Sprintf(`harness.start({topic: %s, urls: %s, storageName: %s})`,
		js(topic), js(urls), js(storage)))
}

// webNodePair starts two nodes of topic that find each other on a loopback
// DHT, each serving WebSocket clients, and waits until they are connected.
func webNodePair(t *testing.T, topic string, tweak func(i int, c *node.Config)) (*node.Node, *node.Node) {
	t.Helper()
	nw := loopbackNet(t)
	a := startWebNode(t, nw, topic, func(c *node.Config) {
		if tweak != nil {
			tweak(0, c)
		}
	})
	b := startWebNode(t, nw, topic, func(c *node.Config) {
		if tweak != nil {
			tweak(1, c)
		}
	})
	waitPeers(t, a, 1)
	waitPeers(t, b, 1)
	return a, b
}

func put(t *testing.T, nd *node.Node, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := nd.Put(ctx, key, []byte(value)); err != nil {
		t.Fatal(err)
	}
}

// wsGet reads key as a Go ToolDb client over the node's WebSocket: ping,
// then get, and the put that answers it.
func wsGet(t *testing.T, url, topic, key string) json.RawMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := bridge.Dial(ctx, url, bridge.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	u, err := db.NewUser(nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := bridge.SignPeerDesc(u, topic, time.Now().UnixMilli(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	id := bridge.ClientID(u.Address())
	send := func(m *bridge.Message) {
		if err := c.WriteMessage(ctx, bridge.AppendMessage(nil, m)); err != nil {
			t.Fatal(err)
		}
	}
	send(&bridge.Message{Type: bridge.TypePing, ID: id[:10], To: []string{id}, ClientID: id, Peer: &d})
	getID := id[10:]
	for {
		b, err := c.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("get %q: %v", key, err)
		}
		m, err := bridge.ParseMessage(b, 64)
		switch {
		case err != nil:
		case m.Type == bridge.TypePong:
			send(&bridge.Message{Type: bridge.TypeGet, ID: getID, To: []string{id}, Key: key})
		case m.Type == bridge.TypePut && m.ID == getID && m.Data != nil:
			return m.Data.Value
		}
	}
}

// A browser client writes a record through node A: node B and a Go
// ToolDb client of B read it. It is notified live of records written on B.
// After a reload, with no connection at all, its data is still there in
// IndexedDB.
func TestBrowserClientWritesReadsAndReloads(t *testing.T) {
	const topic = "browser-basic"
	a, b := webNodePair(t, topic, nil)
	br, origin := harness(t)
	acct := startClient(t, br, topic, "basic", a.WebSocketURL())
	if len(acct.User) != 86 || len(acct.Peer) != 86 {
		t.Fatalf("browser ToolDb accounts %+v", acct)
	}

	// Write in the browser, read on the other node and from a Go client.
	start := time.Now()
	browsertest.Eval[string](t, br, browserWait, `harness.put("from-browser", {"hello": "from chromium", "n": 1})`)
	waitValue(t, b, "from-browser", []byte(`{"hello":"from chromium","n":1}`))
	t.Logf("browser put -> stored on the other node: %v", time.Since(start).Round(time.Millisecond))
	if v := wsGet(t, b.WebSocketURL(), topic, "from-browser"); string(v) != `{"hello":"from chromium","n":1}` {
		t.Fatalf("Go client read %s", v)
	}
	rec, err := b.Get(context.Background(), "from-browser")
	if err != nil || rec.Author != acct.User {
		t.Fatalf("record on b: author %q, want the browser's %q (%v)", rec.Author, acct.User, err)
	}

	// Live: records written on B reach the browser's subscription on A.
	browsertest.Eval[chromedp.Void](t, br, browserWait, `harness.watch("from-node")`)
	for i := 1; i <= 2; i++ {
		start := time.Now()
		put(t, b, "from-node", fmt.Sprintf(`{"n":%d}`, i))
		browsertest.WaitJS(t, br, browserWait, fmt.Sprintf(`harness.values("from-node").some(v => v && v.n === %d)`, i),
			"the browser is notified of a write on the other node")
		t.Logf("put on the other node -> browser notified: %v (ToolDb debounces key listeners by 100 ms)", time.Since(start).Round(time.Millisecond))
	}

	// Reload: a new page, the same IndexedDB, no network.
	openHarness(t, br, origin)
	// ToolDb keeps the peer account in IndexedDB too (the user account is
	// a fresh anonymous one unless the app signs in).
	if again := startClient(t, br, topic, "basic"); again.Peer != acct.Peer {
		t.Errorf("after the reload the client's peer is %q, was %q", again.Peer, acct.Peer)
	}
	for key, want := range map[string]string{"from-browser": `{"hello":"from chromium","n":1}`, "from-node": `{"n":2}`} {
		got := browsertest.Eval[json.RawMessage](t, br, browserWait, fmt.Sprintf(`harness.local(%s)`, js(key)))
		if !jsonEq(got, want) {
			t.Errorf("after reload, IndexedDB holds %s = %s, want %s", key, got, want)
		}
		got = browsertest.Eval[json.RawMessage](t, br, browserWait, fmt.Sprintf(`harness.get(%s, 500)`, js(key)))
		if !jsonEq(got, want) {
			t.Errorf("after reload, getData(%s) = %s, want %s", key, got, want)
		}
	}
	if n := browsertest.Eval[int](t, br, browserWait, `harness.openCount()`); n != 0 {
		t.Errorf("the reloaded client has %d connections, want 0", n)
	}
}

func jsonEq(a []byte, b string) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal([]byte(b), &y) == nil && fmt.Sprint(x) == fmt.Sprint(y)
}

// switchProxy forwards TCP connections to target while up; when down it
// cuts every open one and refuses new ones (accepts and closes them), as a
// dropped network does to a browser.
type switchProxy struct {
	ln     net.Listener
	target string
	down   atomic.Bool
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newSwitchProxy(t *testing.T, target string) *switchProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &switchProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *switchProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.down.Load() {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				_, _ = io.Copy(pair[0], pair[1])
				pair[0].Close()
				pair[1].Close()
			}()
		}
	}
}

// cut closes every forwarded connection.
func (p *switchProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *switchProxy) url() string { return "ws://" + p.ln.Addr().String() }

// The browser loses its connection while the record it watches changes on
// another node; once the network is back, the client reconnects by itself
// and catches up (it subscribes again; the node answers with what it holds).
func TestBrowserReconnectCatchesUp(t *testing.T) {
	const topic = "browser-reconnect"
	a, b := webNodePair(t, topic, nil)
	proxy := newSwitchProxy(t, a.WebSocketAddr().String())
	br, _ := harness(t)
	startClient(t, br, topic, "reconnect", proxy.url())
	browsertest.Eval[chromedp.Void](t, br, browserWait, `harness.watch("doc")`)
	put(t, b, "doc", `{"rev":1}`)
	browsertest.WaitJS(t, br, browserWait, `harness.values("doc").some(v => v && v.rev === 1)`, "first revision")

	proxy.down.Store(true)
	proxy.cut()
	browsertest.WaitJS(t, br, browserWait, `harness.openCount() === 0`, "the browser notices the cut")
	for rev := 2; rev <= 3; rev++ {
		put(t, b, "doc", fmt.Sprintf(`{"rev":%d}`, rev))
	}
	waitValue(t, a, "doc", []byte(`{"rev":3}`))
	// Still cut off: the browser has not seen the new revisions.
	if got := browsertest.Eval[json.RawMessage](t, br, browserWait, `harness.local("doc")`); !jsonEq(got, `{"rev":1}`) {
		t.Fatalf("while cut off the browser holds %s", got)
	}
	// The client keeps dialling while the network is down: the cut plus
	// two refused dials.
	browsertest.WaitJS(t, br, browserWait, `harness.events().filter(e => e.type === "close").length >= 3`,
		"the client retries while cut off")

	proxy.down.Store(false)
	start := time.Now()
	browsertest.WaitJS(t, br, browserWait, `harness.values("doc").some(v => v && v.rev === 3)`, "catch-up after the reconnect")
	t.Logf("network back -> caught up: %v (the client redials every 300 ms here)", time.Since(start).Round(time.Millisecond))
	if got := browsertest.Eval[json.RawMessage](t, br, browserWait, `harness.local("doc")`); !jsonEq(got, `{"rev":3}`) {
		t.Errorf("after the reconnect the browser holds %s", got)
	}
	// And its writes flow again.
	browsertest.Eval[string](t, br, browserWait, `harness.put("after-reconnect", {"ok": true})`)
	waitValue(t, b, "after-reconnect", []byte(`{"ok":true}`))
}

// The browser client knows one node; it reads that node's /peers.json
// (cross-origin: CORS), connects to the other node it learns of there, and
// writes through it.
func TestBrowserLearnsServerFromPeersJSON(t *testing.T) {
	const topic = "browser-peers"
	ports := []int{freePort(t), freePort(t)}
	a, b := webNodePair(t, topic, func(i int, c *node.Config) {
		c.WebSocketAddr = "127.0.0.1:" + strconv.Itoa(ports[i])
		c.PublicWebSocketURL = "ws://127.0.0.1:" + strconv.Itoa(ports[i])
		c.PeersInterval = 300 * time.Millisecond
	})
	br, _ := harness(t)
	startClient(t, br, topic, "peers")
	base := httpURL(a)
	start := time.Now()
	browsertest.WaitJS(t, br, browserWait,
		fmt.Sprintf(`harness.peersJSON(%s).then(d => d.peers.some(p => !p.self))`, js(base)), "a's peers.json lists another node")
	learned := browsertest.Eval[string](t, br, browserWait,
		fmt.Sprintf(`harness.peersJSON(%s).then(d => d.peers.find(p => !p.self).url)`, js(base)))
	t.Logf("b listed in a's peers.json %v after the browser started looking (lookup every 300 ms here)", time.Since(start).Round(time.Millisecond))
	if learned != b.WebSocketURL() {
		t.Fatalf("learned %q, want b at %q", learned, b.WebSocketURL())
	}
	if n := browsertest.Eval[int](t, br, browserWait, fmt.Sprintf(`harness.connect(%s)`, js(learned))); n != 1 {
		t.Fatalf("%d open connections", n)
	}
	browsertest.Eval[string](t, br, browserWait, `harness.put("via-learned", {"through": "b"})`)
	waitValue(t, b, "via-learned", []byte(`{"through":"b"}`))
	if st := b.Status(); st.WebSocketPeers != 1 {
		t.Errorf("b has %d WebSocket peers, want the browser", st.WebSocketPeers)
	}
}

// A node whose --origin excludes the page refuses the browser before the
// upgrade (403): the client sees its dials fail, never opens, and nothing
// reaches the node. The same page is accepted where its origin is allowed.
func TestBrowserRefusedByOrigin(t *testing.T) {
	const topic = "browser-origin"
	refusing := startWebNode(t, nil, topic, func(c *node.Config) { c.AllowedOrigins = []string{"app.example"} })
	br, origin := harness(t)
	got := browsertest.Eval[string](t, br, browserWait, fmt.Sprintf(
		`harness.start({topic: %s, urls: [], storageName: "origin", wait: 50, maxRetries: 2})
		   .then(() => harness.db.network.connectURL(%s)).then(() => "connected", e => "refused: " + e.message)`,
		js(topic), js(refusing.WebSocketURL())))
	if !strings.HasPrefix(got, "refused") {
		t.Fatalf("the client %s", got)
	}
	events := browsertest.Eval[[]map[string]any](t, br, browserWait, `harness.events()`)
	closes := 0
	for _, e := range events {
		switch e["type"] {
		case "open", "identified":
			t.Errorf("event %v on a refused connection", e)
		case "close":
			closes++
			if e["code"] != 1006.0 {
				t.Errorf("close code %v, want 1006 (the handshake failed)", e["code"])
			}
		}
	}
	if closes != 3 {
		t.Errorf("%d failed dials, want 1 + maxRetries 2 (events %v)", closes, events)
	}
	if st := refusing.Status(); st.WebSocketPeers != 0 || st.Messages.In != 0 {
		t.Errorf("the refusing node has %d WebSocket peers and %d messages in", st.WebSocketPeers, st.Messages.In)
	}
	// What the browser's handshake got: 403, from the origin check.
	req, _ := http.NewRequest(http.MethodGet, httpURL(refusing)+"/", nil)
	for k, v := range map[string]string{"Origin": origin, "Connection": "Upgrade", "Upgrade": "websocket",
		"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("upgrade from %s: %s, want 403", origin, resp.Status)
	}

	host := strings.TrimPrefix(origin, "http://")
	allowing := startWebNode(t, nil, topic, func(c *node.Config) { c.AllowedOrigins = []string{"app.example", host} })
	if n := browsertest.Eval[int](t, br, browserWait, fmt.Sprintf(`harness.connect(%s)`, js(allowing.WebSocketURL()))); n != 1 {
		t.Fatalf("%d open connections to the allowing node", n)
	}
}
