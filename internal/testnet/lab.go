package testnet

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/testutil"
)

// LabPort is the DHT port of the public nodes LabDHT starts.
const LabPort = 49737

// LabDHT starts persistent DHT nodes on n new public hosts of lab
// ("dht0", "dht1", ...) and joins them; it returns their addresses, the
// first being the bootstrap node. tweak, when set, adjusts each node's
// config (for instance to serve TURN) before it starts. The nodes close
// when the test ends.
func LabDHT(t testing.TB, lab *natlab.Lab, n int, tweak func(i int, h *natlab.Host, c *dht.Config)) []netip.AddrPort {
	t.Helper()
	var addrs []netip.AddrPort
	var nodes []*dht.Node
	for i := range n {
		h := lab.AddPublicHost(fmt.Sprintf("dht%d", i))
		cfg := dht.Config{Net: h.Net(), ListenAddr: fmt.Sprintf("%s:%d", h.IP(), LabPort), Mode: dht.ModePersistent}
		// Each node bootstraps from every earlier one, so that each earlier
		// node hears from it directly: through the first node alone, the
		// second learns the third only if the first had finished verifying
		// the second when the third asked it (a few round trips; not always
		// on a loaded machine) — CI once waited 10 s for that.
		cfg.Bootstrap = slices.Clone(addrs)
		if tweak != nil {
			tweak(i, h, &cfg)
		}
		node := dht.New(cfg)
		if err := node.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { node.Close() })
		nodes = append(nodes, node)
		addrs = append(addrs, node.LocalAddr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, node := range nodes {
		if err := node.Bootstrap(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// NAT measurements ask a lab node for a stranger to send a probe from, which it picks
	// from the nodes it knows: every node knows every other before the lab is used.
	for i, node := range nodes {
		testutil.Eventually(t, 10*time.Second, func() bool { return len(node.Contacts()) >= n-1 },
			"lab dht%d to know the other %d nodes", i, n-1)
	}
	return addrs
}
