package testnet

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/mainline"
)

// MainlineRouters starts n mainline DHT nodes that stand in for the public
// routers in tests: each starts from every one before it, replies are not
// rate-limited the way a public node's are (a router of a tiny network
// answers a whole test's queries in bursts), and it returns once each has
// heard from another. listen opens node i's socket; nil means loopback.
// The nodes close when the test ends. It returns them and their addresses.
//
// Give a test's nodes all the addresses: anacrolix/dht v2.24.0 answers
// find_node and get_peers only from the buckets at or below the target's,
// so on a network this small a router often returns no nodes at all, and a
// traversal that starts from one router can miss an announce stored at
// another.
func MainlineRouters(t testing.TB, n int, listen func(i int) (net.PacketConn, error)) ([]*mainline.Node, []string) {
	t.Helper()
	if listen == nil {
		listen = func(int) (net.PacketConn, error) { return net.ListenPacket("udp4", "127.0.0.1:0") }
	}
	var nodes []*mainline.Node
	var prev []netip.AddrPort
	var addrs []string
	for i := range n {
		c, err := listen(i)
		if err != nil {
			t.Fatal(err)
		}
		r, err := mainline.New(mainline.Config{Conn: c, Routers: prev, SendRate: 10000, SendBurst: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		nodes = append(nodes, r)
		prev = append(prev, r.LocalAddr())
		addrs = append(addrs, r.LocalAddr().String())
	}
	// Each router but the first has had an answer from one before it (a
	// router whose first bootstrap failed waits a minute for the next),
	// and the first has heard from one after it.
	deadline := time.Now().Add(testutil.Scaled(20 * time.Second))
	for i, r := range nodes {
		known := func() bool { st := r.Stats(); return n == 1 || st.GoodNodes > 0 || (i == 0 && st.Nodes > 0) }
		testutil.Eventually(t, time.Until(deadline), known, "mainline router %v to know another router", r.LocalAddr())
	}
	return nodes, addrs
}
