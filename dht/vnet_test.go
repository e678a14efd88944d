package dht_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v2/vnet"

	"github.com/swarmdb/swarmdb/dht"
)

// TestVNet runs a small network on pion's virtual network: the same code
// path as real sockets, through the injected transport.Net.
func TestVNet(t *testing.T) {
	wan, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: "203.0.113.0/24", LoggerFactory: logging.NewDefaultLoggerFactory()})
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*dht.Node
	var boot []netip.AddrPort
	for i := 1; i <= 6; i++ {
		ip := fmt.Sprintf("203.0.113.%d", i)
		vn, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{ip}})
		if err != nil {
			t.Fatal(err)
		}
		if err := wan.AddNet(vn); err != nil {
			t.Fatal(err)
		}
		mode := dht.ModePersistent
		if i == 6 {
			mode = dht.ModeEphemeral
		}
		n := dht.New(dht.Config{Net: vn, ListenAddr: ip + ":49737", Mode: mode, Bootstrap: boot})
		nodes = append(nodes, n)
		if i == 1 {
			boot = []netip.AddrPort{netip.MustParseAddrPort(ip + ":49737")}
		}
	}
	if err := wan.Start(); err != nil {
		t.Fatal(err)
	}
	defer wan.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, n := range nodes {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		if err := n.Bootstrap(ctx); err != nil {
			t.Fatal(err)
		}
	}
	key := newKey(t)
	topic := dht.TopicKey("vnet")
	if _, err := nodes[5].Announce(ctx, topic, key); err != nil {
		t.Fatal(err)
	}
	res, err := nodes[2].Lookup(ctx, topic)
	if err != nil || !hasPeer(res.Peers, key.Public().(ed25519.PublicKey)) {
		t.Fatalf("lookup: %v %+v", err, res)
	}
	if got := nodes[5].PublicAddr(); got.Addr() != netip.MustParseAddr("203.0.113.6") {
		t.Fatalf("public addr %s", got)
	}
}
