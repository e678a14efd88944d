package dht_test

import (
	"context"
	"crypto/ed25519"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/transport/v2/vnet"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testnet"
)

// TestVNet runs a small network on pion's virtual network: the same code
// path as real sockets, through the injected transport.Net. Five
// persistent servers and one ephemeral public node, which announces.
func TestVNet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, nets := startVNet(t, ctx, 5, "203.0.113.6")
	vn := nets[0]
	client := dht.New(dht.Config{Net: vn, ListenAddr: "203.0.113.6:49737", Mode: dht.ModeEphemeral, Bootstrap: v.Bootstrap})
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if client.Bootstrapped() {
		t.Fatal("bootstrapped before Bootstrap")
	}
	if err := client.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if !client.Bootstrapped() {
		t.Fatal("not bootstrapped after Bootstrap")
	}

	key := newKey(t)
	topic := dht.TopicKey("vnet")
	if _, err := client.Announce(ctx, topic, key); err != nil {
		t.Fatal(err)
	}
	res, err := v.Servers[2].Lookup(ctx, topic)
	if err != nil || !hasPeer(res.Peers, key.Public().(ed25519.PublicKey)) {
		t.Fatalf("lookup: %v %+v", err, res)
	}
	if got := client.PublicAddr(); got.Addr() != netip.MustParseAddr("203.0.113.6") {
		t.Fatalf("public addr %s", got)
	}
}

// startVNet starts a vnet WAN with servers persistent DHT servers and a public host at each
// of ips (their nets returned in order); it closes when the test ends. Hosts at ips must not
// take the servers' addresses (203.0.113.1 on).
func startVNet(t *testing.T, ctx context.Context, servers int, ips ...string) (*testnet.VNet, []*vnet.Net) {
	t.Helper()
	v, err := testnet.NewVNet()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.AddDHTServers(servers); err != nil {
		t.Fatal(err)
	}
	var nets []*vnet.Net
	for _, ip := range ips {
		vn, err := v.AddPublic(ip)
		if err != nil {
			t.Fatal(err)
		}
		nets = append(nets, vn)
	}
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v, nets
}
