package node_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/bridge"
	"github.com/swarmdb/swarmdb/db"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/node"
)

// freePort returns a loopback TCP port nobody listens on right now, for a
// node whose --public-ws must name its own port before it starts.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startWebNode starts a node with a WebSocket server on loopback; tweak
// adjusts its config (nil: none). bootstrap nil means LAN only.
func startWebNode(t *testing.T, nw *testnet.Network, topic string, tweak func(*node.Config)) *node.Node {
	t.Helper()
	cfg := node.Config{Topic: topic, DataDir: t.TempDir(), ListenAddr: "127.0.0.1:0", KeepLoopback: true,
		DisableLAN: true, WebSocketAddr: "127.0.0.1:0"}
	if nw != nil {
		cfg.Bootstrap = nw.Bootstrap
	}
	if tweak != nil {
		tweak(&cfg)
	}
	if os.Getenv("B18DEBUG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return startConfigured(t, cfg)
}

func getJSON(t *testing.T, client *http.Client, url string, v any) http.Header {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.Header
}

func httpURL(nd *node.Node) string {
	return strings.Replace(strings.Replace(nd.WebSocketURL(), "wss://", "https://", 1), "ws://", "http://", 1)
}

// rawPing connects to url as a ToolDb client does, pings and returns the
// pong.
func rawPing(t *testing.T, url, topic string, client *http.Client) bridge.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := bridge.Dial(ctx, url, bridge.DialOptions{HTTPClient: client})
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
	// A fresh id each time: the node drops a (type, id) it has seen.
	ping := &bridge.Message{Type: bridge.TypePing, ID: id[:10], To: []string{id}, ClientID: id, Peer: &d}
	if err := c.WriteMessage(ctx, bridge.AppendMessage(nil, ping)); err != nil {
		t.Fatal(err)
	}
	for {
		b, err := c.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("no pong: %v", err)
		}
		m, err := bridge.ParseMessage(b, 64)
		if err == nil && m.Type == bridge.TypePong {
			return m
		}
	}
}

// The pong names where the node really listens (ToolDb's default,
// 127.0.0.1:8080, is gone), in its own descriptor and in servers.
func TestPongAdvertisesRealAddress(t *testing.T) {
	const topic = "pong-address"
	nd := startWebNode(t, nil, topic, nil)
	pong := rawPing(t, nd.WebSocketURL(), topic, nil)
	_, port, _ := net.SplitHostPort(nd.WebSocketAddr().String())
	if pong.Peer == nil || pong.Peer.Host != "127.0.0.1" || strconv.FormatInt(pong.Peer.Port, 10) != port {
		t.Fatalf("pong descriptor %+v, want 127.0.0.1:%s", pong.Peer, port)
	}
	if len(pong.Servers) == 0 || pong.Servers[0].Host != "127.0.0.1" || pong.Servers[0].Port != pong.Peer.Port {
		t.Fatalf("pong servers %+v", pong.Servers)
	}
	if err := bridge.VerifyPeerDesc(pong.Peer, topic, time.Now()); err != nil {
		t.Fatal(err)
	}
	// A public URL ToolDb can dial is advertised instead; one it cannot
	// (TLS on a port other than 443) is not advertised at all.
	pub := startWebNode(t, nil, topic, func(c *node.Config) { c.PublicWebSocketURL = "wss://node.example" })
	if p := rawPing(t, pub.WebSocketURL(), topic, nil).Peer; p.Host != "node.example" || p.Port != 443 {
		t.Fatalf("with --public-ws wss://node.example: %s:%d", p.Host, p.Port)
	}
	none := startWebNode(t, nil, topic, func(c *node.Config) { c.PublicWebSocketURL = "wss://node.example:8443" })
	if p := rawPing(t, none.WebSocketURL(), topic, nil).Peer; p.Host != "" || p.Port != 0 {
		t.Fatalf("with --public-ws wss://node.example:8443: %s:%d, want none", p.Host, p.Port)
	}
}

// The page, its files and the JSON endpoints share the WebSocket's port.
func TestWebEndpoints(t *testing.T) {
	nd := startWebNode(t, nil, "web-endpoints", nil)
	base := httpURL(nd)
	var st node.Status
	h := getJSON(t, http.DefaultClient, base+"/status.json", &st)
	if st.PublicKey == "" || st.Topic != "web-endpoints" || st.Version != node.StatusVersion || st.NAT.Class != "lan-only" || st.Mainline != nil {
		t.Fatalf("status %+v", st)
	}
	if h.Get("Cache-Control") != "no-store" {
		t.Errorf("status.json Cache-Control %q", h.Get("Cache-Control"))
	}
	var doc node.PeersDoc
	h = getJSON(t, http.DefaultClient, base+"/peers.json", &doc)
	if h.Get("Access-Control-Allow-Origin") != "*" || doc.Topic != "web-endpoints" || len(doc.Peers) != 0 {
		t.Fatalf("peers.json %+v, CORS %q", doc, h.Get("Access-Control-Allow-Origin"))
	}
	for path, want := range map[string]string{"/": "<title>swarmdb node</title>", "/app.js": "status.json", "/tooldb.js": "ToolDbClient", "/style.css": "--accent"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		// One Read may return only the first part of the body.
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("GET %s: %s, body lacks %q", path, resp.Status, want)
		}
	}
	resp, err := http.Get(base + "/nothing-here")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing-here: %s", resp.Status)
	}
}

// selfSigned writes a fresh self-signed certificate for 127.0.0.1 and its
// key to dir and returns the certificate.
func selfSigned(t *testing.T, dir, name string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Key first, then the certificate, each written whole (renamed into
	// place), as a renewal tool does.
	for _, f := range []struct {
		file, typ string
		der       []byte
	}{{"key.pem", "EC PRIVATE KEY", kder}, {"cert.pem", "CERTIFICATE", der}} {
		tmp := filepath.Join(dir, f.file+".tmp")
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, f.file)); err != nil {
			t.Fatal(err)
		}
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// --tls-cert/--tls-key: the page, the JSON endpoints and the WebSocket are
// served over TLS, and a certificate rewritten on disk is served without
// a restart.
func TestTLSServesAndReloads(t *testing.T) {
	dir := t.TempDir()
	first := selfSigned(t, dir, "first")
	const topic = "tls-test"
	nd := startWebNode(t, nil, topic, func(c *node.Config) {
		c.TLSCertFile, c.TLSKeyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	})
	if !strings.HasPrefix(nd.WebSocketURL(), "wss://") {
		t.Fatalf("WebSocketURL %q", nd.WebSocketURL())
	}
	pool := x509.NewCertPool()
	pool.AddCert(first)
	client := func(pool *x509.CertPool) *http.Client {
		return &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	var st node.Status
	getJSON(t, client(pool), httpURL(nd)+"/status.json", &st)
	if st.WebSocket != nd.WebSocketURL() || st.Advertised != "" {
		t.Fatalf("status ws %q advertised %q", st.WebSocket, st.Advertised)
	}
	if pong := rawPing(t, nd.WebSocketURL(), topic, client(pool)); pong.ClientID == "" {
		t.Fatal("no client id in the pong over wss")
	}

	second := selfSigned(t, dir, "second")
	pool2 := x509.NewCertPool()
	pool2.AddCert(second)
	var err error
	served := testutil.Poll(10*time.Second, 100*time.Millisecond, func() bool { // each check is a TLS handshake
		var resp *http.Response
		if resp, err = client(pool2).Get(httpURL(nd) + "/status.json"); err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.TLS.PeerCertificates[0].Subject.CommonName == "second"
	})
	if !served {
		t.Fatalf("the rewritten certificate is not served after 10 s (last error %v)", err)
	}
	rawPing(t, nd.WebSocketURL(), topic, client(pool2))
}

// /peers.json lists the public WebSocket URLs the DHT announced for the
// topic, once checked, and never a URL whose server has another key.
func TestPeersJSONFromDHT(t *testing.T) {
	nw := loopbackNet(t)
	const topic = "peers-json"
	interval := 300 * time.Millisecond
	public := func(port int) func(*node.Config) {
		return func(c *node.Config) {
			c.WebSocketAddr = "127.0.0.1:" + strconv.Itoa(port)
			c.PublicWebSocketURL = "ws://127.0.0.1:" + strconv.Itoa(port)
			c.PeersInterval = interval
		}
	}
	pa, pb := freePort(t), freePort(t)
	a := startWebNode(t, nw, topic, public(pa))
	b := startWebNode(t, nw, topic, public(pb))
	// An impostor announces a's URL under its own key: a's status page
	// names a's key, so the check fails and nobody lists it.
	startWebNode(t, nw, topic, func(c *node.Config) {
		c.WebSocketAddr = ""
		c.PublicWebSocketURL = "ws://127.0.0.1:" + strconv.Itoa(pa)
	})
	c := startWebNode(t, nw, topic, func(c *node.Config) { c.PeersInterval = interval })

	want := map[string]string{a.Status().PublicKey: "ws://127.0.0.1:" + strconv.Itoa(pa), b.Status().PublicKey: "ws://127.0.0.1:" + strconv.Itoa(pb)}
	var doc node.PeersDoc
	listed := testutil.Poll(30*time.Second, 100*time.Millisecond, func() bool {
		getJSON(t, http.DefaultClient, httpURL(c)+"/peers.json", &doc)
		return len(doc.Peers) == 2
	})
	if !listed {
		t.Fatalf("peers.json after 30 s: %+v", doc)
	}
	for _, p := range doc.Peers {
		if want[p.PublicKey] != p.URL || p.Self || time.Since(p.Verified) > 3*interval+5*time.Second {
			t.Errorf("entry %+v (want %v)", p, want)
		}
	}
	// A lists itself first, then b.
	getJSON(t, http.DefaultClient, httpURL(a)+"/peers.json", &doc)
	if len(doc.Peers) == 0 || !doc.Peers[0].Self || doc.Peers[0].URL != want[a.Status().PublicKey] {
		t.Fatalf("a's peers.json %+v", doc)
	}
}
