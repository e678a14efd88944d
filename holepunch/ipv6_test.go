package holepunch_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/holepunch/dhtlink"
	"github.com/swarmdb/swarmdb/internal/testnet"
)

// startDualNet starts a loopback DHT of dual-stack nodes (127.x.y.z and
// ::1). Every IPv6 node shares ::1, so per-IP rate limits are off.
func startDualNet(t testing.TB, persistent int) *testnet.Network {
	t.Helper()
	probe := dht.New(dht.Config{ListenAddr: "[::1]:0"})
	err := probe.Start()
	probe.Close()
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := testnet.Start(ctx, testnet.Config{Persistent: persistent, Tweak: func(_ int, c *dht.Config) {
		c.ListenAddr6, c.RateLimit = "[::1]:0", -1
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// familyPeer starts a peer on the dual network: listen is its DHT
// ListenAddr ("[::1]:0" for an IPv6-only node), listen6 its ListenAddr6.
func familyPeer(t testing.TB, nw *testnet.Network, listen, listen6 string) *peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	boot := nw.Bootstrap
	if listen == "[::1]:0" {
		boot = nil
		for _, n := range nw.Nodes()[:2] {
			boot = append(boot, n.LocalAddrIn(dht.IPv6))
		}
	}
	link := dhtlink.New()
	node := dht.New(dht.Config{Mode: dht.ModeEphemeral, ListenAddr: listen, ListenAddr6: listen6, Bootstrap: boot, RateLimit: -1,
		OnSignal: link.HandleSignal})
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	p := newPeer(t, node, link, boot, nil, func(c *holepunch.EndpointConfig) { c.KeepLoopback = true })
	if r := p.ep.WaitNAT(ctx); r.Class == "" {
		t.Fatalf("%s: no nat measurement", listen)
	}
	if err := node.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	return p
}

// Peers of every family mix on one network: IPv6-only peers connect to
// each other and to dual-stack ones over IPv6, dual-stack ones connect,
// and an IPv4-only peer cannot reach an IPv6-only one (and fails at once,
// not after timeouts).
func TestConnectIPv6Loopback(t *testing.T) {
	nw := startDualNet(t, 8)
	peers := map[string]*peer{
		"v6":   familyPeer(t, nw, "[::1]:0", ""),
		"v6b":  familyPeer(t, nw, "[::1]:0", ""),
		"dual": familyPeer(t, nw, "127.0.0.1:0", "[::1]:0"),
		"v4":   familyPeer(t, nw, "127.0.0.1:0", ""),
	}
	for _, p := range peers {
		p.listen(t)
	}
	if r := peers["v6"].ep.NAT(); r.IPv6 == nil || r.IPv6.Answered == 0 || r.Answered != 0 {
		t.Fatalf("IPv6-only peer's report: %+v", r)
	}
	if r := peers["dual"].ep.NAT(); r.IPv6 == nil || r.IPv6.Answered == 0 || r.Answered == 0 {
		t.Fatalf("dual-stack peer's report: %+v (ipv6 %+v)", r, r.IPv6)
	}
	for _, c := range []struct {
		client, server string
		v6             bool // the path must be IPv6
	}{
		{"v6", "v6b", true},
		{"dual", "v6", true},
		{"v6", "dual", true},
		{"dual", "v4", false},
		{"v4", "dual", false},
	} {
		t.Run(c.client+"-to-"+c.server, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			conn, err := peers[c.client].ep.Connect(ctx, peers[c.server].pub, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			s := peers[c.server].accept(t)
			defer s.Close()
			echo(t, conn, s, bytes.Repeat([]byte{6}, 256<<10))
			waitSettled(t, conn)
			if got := conn.Remote().Addr().Is6(); got != c.v6 || !conn.Remote().IsValid() {
				t.Fatalf("path to %s, want IPv6 %v", conn.Remote(), c.v6)
			}
			t.Logf("%s in %v to %s", conn.Path(), conn.ConnectTime, conn.Remote())
		})
	}
	t.Run("v4-to-v6", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		start := time.Now()
		_, err := peers["v4"].ep.Connect(ctx, peers["v6"].pub, nil)
		if !errors.Is(err, holepunch.ErrNoRelays) {
			t.Fatalf("IPv4-only to IPv6-only: %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("took %v to give up", d)
		}
	})
}
