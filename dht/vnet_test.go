package dht_test

import (
	"context"
	"crypto/ed25519"
	"net/netip"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testnet"
)

// TestVNet runs a small network on pion's virtual network: the same code
// path as real sockets, through the injected transport.Net. Five
// persistent servers and one ephemeral public node, which announces.
func TestVNet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, err := testnet.NewVNet()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.AddDHTServers(5); err != nil {
		t.Fatal(err)
	}
	vn, err := v.AddPublic("203.0.113.6")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer v.Close()
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
