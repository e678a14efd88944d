package holepunch_test

import (
	"bytes"
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
)

// TestRelayLoss is issue 9's relay-loss fault: the DHT nodes that relay a
// server's signaling die. The server notices, registers at others, and new
// clients still connect, also when all they have is the dead relays from
// an old record; a connection made before keeps working.
func TestRelayLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := testnet.Start(ctx, testnet.Config{Persistent: 12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	fast := func(c *dht.Config) { c.RelayKeepalive = 200 * time.Millisecond }
	server := addPeerDHT(t, n, fast, nil)
	relays, err := server.ep.Listen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old := addPeer(t, n, nil)
	oc, err := old.ep.Connect(ctx, server.pub, relays)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	os := server.accept(t)
	defer os.Close()

	// Kill every relay (none is the bootstrap node, which the others need).
	killed := 0
	for _, node := range n.Nodes() {
		if slices.Contains(relays, node.LocalAddr()) && node.LocalAddr() != n.Bootstrap[0] {
			node.Close()
			killed++
		}
	}
	t.Logf("killed %d of %d relays %v", killed, len(relays), relays)
	if killed == 0 {
		t.Skip("every relay was the bootstrap node")
	}
	var now []netip.AddrPort
	if !testutil.Poll(20*time.Second, 0, func() bool {
		now = server.node.Relays(server.pub)
		return len(now) == len(relays) && !overlaps(now, relays, n.Bootstrap[0])
	}) {
		t.Fatalf("server still lists relays %v", now)
	}
	t.Logf("server re-registered at %v", now)
	echo(t, oc, os, []byte("the old connection is unaffected"))

	// A new client holding only the dead relays (as from a stale topic
	// record) still connects: it falls back to the key's current relays.
	fresh := addPeer(t, n, nil)
	fc, err := fresh.ep.Connect(ctx, server.pub, relays)
	if err != nil {
		t.Fatalf("new client after relay loss: %v", err)
	}
	defer fc.Close()
	fs := server.accept(t)
	defer fs.Close()
	echo(t, fc, fs, bytes.Repeat([]byte{7}, 4096))
}

// overlaps reports whether a and b share an address other than except.
func overlaps(a, b []netip.AddrPort, except netip.AddrPort) bool {
	for _, x := range a {
		if x != except && slices.Contains(b, x) {
			return true
		}
	}
	return false
}
