package node_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/node"
)

// TestMainlineOnlyNATLab: two nodes behind different NATs (port-restricted
// and symmetric), given nothing but the addresses of mainline routers on
// the lab's public segment, find the swarmdb bootstrap node under the
// bootstrap name, join its DHT, find each other there and replicate. Root
// only.
func TestMainlineOnlyNATLab(t *testing.T) {
	lab := natlab.New(t)
	routers := labMainlineRouters(t, lab, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Two public swarmdb nodes, which find each other under the bootstrap
	// name too: the NAT check needs two servers to tell a symmetric NAT
	// (and so birthday punching) from the others.
	for i := range 2 {
		bh := lab.AddPublicHost(fmt.Sprintf("boot%d", i))
		b := node.NewBootstrap(node.BootstrapConfig{
			Net: bh.Net(), ListenAddr: bh.IP().String() + ":49737", TURNAddr: bh.IP().String() + ":49738",
			Mainline: routers,
		})
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer b.Close()
	}
	types := []natlab.NATType{natlab.PortRestricted, natlab.Symmetric}
	var nodes []*node.Node
	for _, typ := range types {
		h := lab.AddRouter(natlab.RouterConfig{Type: typ}).AddHost("n")
		nd, err := node.New(node.Config{
			Topic: "natlab-mainline", DataDir: t.TempDir(), Net: h.Net(), ListenAddr: h.IP().String() + ":0",
			Mainline: routers, DisableLAN: true,
			// Seen once under heavy load: the port-restricted node
			// connected by relay. Its logs say which NAT classes the
			// dial's signals carried (holepunch's "handshake done").
			Logger: testutil.LogOnFailure(t, 3000).With("node", string(typ)),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := nd.Start(ctx); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		defer nd.Close()
		nodes = append(nodes, nd)
	}
	start := time.Now()
	for i, nd := range nodes {
		waitPeers(t, nd, 1)
		st, _ := nd.MainlineStats()
		t.Logf("%s node: connected %v after start, by path %v; mainline: joins by name %d, read-only %v",
			types[i], time.Since(start).Round(time.Millisecond), nd.Stats().Swarm.ByPath, st.JoinsByName, st.ReadOnly)
		if st.JoinsByName == 0 || !st.ReadOnly {
			t.Fatalf("%s node's mainline stats %+v: want a join by name, read-only behind NAT", types[i], st)
		}
		// The NAT was measured against the nodes found by name before
		// the dial, so the pair punches (birthday) instead of relaying.
		if p := nd.Stats().Swarm.ByPath; p["direct"] != 1 {
			t.Fatalf("%s node connected by %v, want direct", types[i], p)
		}
	}
	if _, err := nodes[1].Put(ctx, "lab-mainline", []byte(`"from behind a symmetric NAT"`)); err != nil {
		t.Fatal(err)
	}
	waitValue(t, nodes[0], "lab-mainline", []byte(`"from behind a symmetric NAT"`))
}

// labMainlineRouters starts n mainline routers on public hosts of the lab
// and returns their addresses.
func labMainlineRouters(t *testing.T, lab *natlab.Lab, n int) []string {
	t.Helper()
	_, addrs := testnet.MainlineRouters(t, n, func(i int) (net.PacketConn, error) {
		h := lab.AddPublicHost(fmt.Sprintf("ml%d", i))
		return h.Net().ListenPacket("udp4", h.IP().String()+":6881")
	})
	return addrs
}
