package node

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

// TestWSReachable: the WebSocket is announced under the topic only where a
// client that connects to the announce's source address reaches it, at the
// port announced: its own, or the router's mapped port.
func TestWSReachable(t *testing.T) {
	local := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.1.0.10")}
	ap := netip.MustParseAddrPort
	ip := netip.MustParseAddr
	mapped := ap("198.51.100.9:40000")
	for _, c := range []struct {
		name   string
		ws     netip.AddrPort
		seen   netip.Addr
		mapped netip.AddrPort
		port   uint16
		reason string
	}{
		{"no websocket", netip.AddrPort{}, ip("10.1.0.10"), netip.AddrPort{}, 0, "no websocket"},
		{"seen unknown", ap("0.0.0.0:9000"), netip.Addr{}, mapped, 0, "not known yet"},
		{"behind NAT", ap("0.0.0.0:9000"), ip("198.51.100.9"), netip.AddrPort{}, 0, "behind NAT"},
		{"behind NAT, mapped", ap("0.0.0.0:9000"), ip("198.51.100.9"), mapped, 40000, ""},
		{"mapped elsewhere", ap("0.0.0.0:9000"), ip("198.51.100.10"), mapped, 0, "no port mapping"},
		{"bound elsewhere", ap("127.0.0.1:9000"), ip("10.1.0.10"), netip.AddrPort{}, 0, "listens on 127.0.0.1"},
		{"all interfaces", ap("0.0.0.0:9000"), ip("10.1.0.10"), netip.AddrPort{}, 9000, ""},
		{"all interfaces v6", ap("[::]:9000"), ip("10.1.0.10"), netip.AddrPort{}, 9000, ""},
		{"bound to the seen address", ap("127.0.0.1:9000"), ip("127.0.0.1"), netip.AddrPort{}, 9000, ""},
	} {
		port, reason := wsReachable(c.ws, c.seen, local, c.mapped)
		if port != c.port || !strings.Contains(reason, c.reason) {
			t.Errorf("%s: wsReachable = %d %q, want %d %q", c.name, port, reason, c.port, c.reason)
		}
	}
}

// TestTopicDelay: fast at first, so that a ToolDb server that starts a
// minute after us is found within about a minute, then
// discovery-channel's 10-15 min.
func TestTopicDelay(t *testing.T) {
	var at time.Duration // when each round runs
	for round := 0; ; round++ {
		if at >= time.Minute {
			if at > 2*time.Minute {
				t.Fatalf("the first round after 1 min runs at %v", at)
			}
			break
		}
		d := topicDelay(round, 0.5)
		if round > 0 && d < topicDelay(round-1, 0.5) {
			t.Fatalf("round %d waits %v, less than the round before", round, d)
		}
		at += d
	}
	for _, rnd := range []float64{0, 0.999} {
		if d := topicDelay(100, rnd); d < 10*time.Minute || d > 15*time.Minute {
			t.Fatalf("settled delay %v outside discovery-channel's 10-15 min", d)
		}
	}
}

// TestServerBackoff: the wait grows and is bounded.
func TestServerBackoff(t *testing.T) {
	prev := time.Duration(0)
	for n := 1; n < 20; n++ {
		d := serverBackoff(n)
		if d < prev || d > 15*time.Minute {
			t.Fatalf("serverBackoff(%d) = %v after %v", n, d, prev)
		}
		prev = d
	}
}

// TestNodeCache: what is saved is loaded; junk entries are dropped, the
// lists are bounded; a damaged file is an error and no cache, never a
// crash.
func TestNodeCache(t *testing.T) {
	dir := t.TempDir()
	c, err := loadNodeCache(dir)
	if err != nil || c.DHT != nil || c.Mainline != nil {
		t.Fatalf("missing file: %+v %v", c, err)
	}
	var many []netip.AddrPort
	for i := range 100 {
		many = append(many, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 49737))
	}
	in := nodeCache{
		DHT:      append([]netip.AddrPort{{}, netip.MustParseAddrPort("0.0.0.0:1"), netip.MustParseAddrPort("10.9.9.9:0")}, many...),
		Mainline: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.1:6881"), netip.MustParseAddrPort("198.51.100.1:6881")},
		Saved:    time.Unix(1e9, 0).UTC(),
	}
	if err := in.save(dir); err != nil {
		t.Fatal(err)
	}
	out, err := loadNodeCache(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.DHT) != maxCachedNodes || !slices.Equal(out.DHT, many[:maxCachedNodes]) {
		t.Fatalf("DHT list: %d entries, want the first %d valid", len(out.DHT), maxCachedNodes)
	}
	if len(out.Mainline) != 1 || !out.Saved.Equal(in.Saved) {
		t.Fatalf("loaded %+v", out)
	}
	if err := os.WriteFile(filepath.Join(dir, nodeCacheFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := loadNodeCache(dir); err == nil || c.DHT != nil {
		t.Fatalf("damaged file: %+v %v", c, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("the data dir holds %d entries after saving, want only %s", len(entries), nodeCacheFile)
	}

}

// startLoopbackNode starts a LAN-off node with a WebSocket on ws.
func startLoopbackNode(t *testing.T, ws string) *Node {
	t.Helper()
	nd, err := New(Config{Topic: "dialer-test", DataDir: t.TempDir(), ListenAddr: "127.0.0.1:0",
		KeepLoopback: true, DisableLAN: true, WebSocketAddr: ws})
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

func waitLinked(t *testing.T, d *serverDialer, want int, within time.Duration) {
	t.Helper()
	if !testutil.Poll(within, 0, func() bool { return d.linked() == want }) {
		t.Fatalf("%d links after %v, want %d", d.linked(), within, want)
	}
}

// TestServerDialerRelinks: a found ToolDb server is linked once however
// often it is found, relinked after it restarts, and the node's own
// WebSocket, found like any other, is not kept.
func TestServerDialerRelinks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	server := startLoopbackNode(t, addr)
	b := startLoopbackNode(t, "127.0.0.1:0")
	b.startDialer()
	found := netip.MustParseAddrPort(addr)
	for range 3 {
		b.serverFound(found, "dht")
	}
	waitLinked(t, b.dialer, 1, 10*time.Second)
	b.serverFound(b.wsAddrPort(), "mdns") // itself
	time.Sleep(500 * time.Millisecond)
	if n := b.dialer.linked(); n != 1 {
		t.Fatalf("%d links after finding itself, want 1", n)
	}
	server.Close()
	waitLinked(t, b.dialer, 0, 10*time.Second)
	startLoopbackNode(t, addr) // the server restarts on the same address
	waitLinked(t, b.dialer, 1, 30*time.Second)
	if got := len(b.reported); got != 2 {
		t.Fatalf("%d servers reported, want 2 (the server once, itself once)", got)
	}
}

// TestServerDialerBothWays: two nodes that found each other's WebSocket
// and each dialled the other replicate over what the bridge lets through
// (one identified connection per remote), in both directions.
func TestServerDialerBothWays(t *testing.T) {
	a := startLoopbackNode(t, "127.0.0.1:0")
	b := startLoopbackNode(t, "127.0.0.1:0")
	a.startDialer()
	b.startDialer()
	a.serverFound(b.wsAddrPort(), "dht")
	b.serverFound(a.wsAddrPort(), "dht")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, w := range []struct{ from, to *Node }{{a, b}, {b, a}} {
		key := "from-" + w.from.Address()[:8]
		if _, err := w.from.Put(ctx, key, []byte(`1`)); err != nil {
			t.Fatal(err)
		}
		deadline, _ := ctx.Deadline() // one budget for both directions
		testutil.Eventually(t, time.Until(deadline), func() bool { _, err := w.to.store.Get(key); return err == nil },
			"%s to reach the other node", key)
	}
	// One link, the same connection at both ends (the one the smaller client id dialled);
	// the other dial gave way at once instead of waiting out its identification timeout.
	for _, n := range []*Node{a, b} {
		testutil.Eventually(t, 10*time.Second, func() bool { return len(n.bridge.Peers()) == 1 && n.dialer.linked() <= 1 },
			"one connection left at %s", n.Address()[:8])
	}
	if pa, pb := a.bridge.Peers()[0], b.bridge.Peers()[0]; pa.Initiator == pb.Initiator || !pa.Identified || !pb.Identified {
		t.Fatalf("ends keep different connections: %+v and %+v", pa, pb)
	}
}
