package dht_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testnet"
)

// Bootstrap-loss sizes: 3 bootstrap nodes among 30 persistent nodes, and
// ephemeral nodes (the typical home node) doing the announcing and looking
// up. A short request timeout makes the dead bootstrap nodes, which stay
// in routing tables until pings evict them, cost little per lookup.
const (
	blPersistent = 30
	blBootstraps = 3
	blEphemeral  = 6
	blTopics     = 6
)

// TestBootstrapLoss is issue 9's "bootstrap loss": after the nodes have
// joined, every bootstrap node closes; the remaining nodes keep finding
// each other's announcements through the rest of the DHT. Records
// announced before the loss are still found (replicas on other nodes), and
// new announces made after it are stored and found, by persistent and
// ephemeral nodes alike.
func TestBootstrapLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nw, err := testnet.Start(ctx, testnet.Config{Persistent: blPersistent, Bootstraps: blBootstraps,
		Tweak: func(_ int, c *dht.Config) { c.RequestTimeout = 300 * time.Millisecond }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Close)
	var eph []*dht.Node
	for range blEphemeral {
		eph = append(eph, addEphemeral(t, nw, dht.Config{RequestTimeout: 300 * time.Millisecond}))
	}
	nodes := nw.Nodes()
	boot, persistent := nodes[:blBootstraps], nodes[blBootstraps:blPersistent]
	for i, b := range boot {
		if b.LocalAddr() != nw.Bootstrap[i] {
			t.Fatalf("node %d is %s, bootstrap list %v", i, b.LocalAddr(), nw.Bootstrap)
		}
	}
	// The users: ephemeral nodes and the non-bootstrap persistent ones.
	users := append(append([]*dht.Node(nil), eph...), persistent...)

	type ann struct {
		topic dht.ID
		pub   ed25519.PublicKey
	}
	announce := func(prefix string, i int) ann {
		t.Helper()
		key := newKey(t)
		a := ann{dht.TopicKey(fmt.Sprintf("%s-%d", prefix, i)), key.Public().(ed25519.PublicKey)}
		by := users[(3*i)%len(users)]
		res, err := by.Announce(ctx, a.topic, key)
		if err != nil {
			t.Fatalf("%s announce %d by %s: %v", prefix, i, by.LocalAddr(), err)
		}
		if res.Stored == 0 {
			t.Fatalf("%s announce %d stored nowhere", prefix, i)
		}
		return a
	}
	// lookupAll looks every announce up from a node other than its
	// announcer and returns how many found it.
	lookupAll := func(stage string, anns []ann) int {
		t.Helper()
		found := 0
		for i, a := range anns {
			by := users[(3*i+1)%len(users)]
			res, err := by.Lookup(ctx, a.topic)
			if err == nil && hasPeer(res.Peers, a.pub) {
				found++
				continue
			}
			t.Errorf("%s lookup %d by %s: err %v, announcer missing", stage, i, by.LocalAddr(), err)
		}
		return found
	}

	start := time.Now()
	var before []ann
	for i := range blTopics {
		before = append(before, announce("before", i))
	}
	if got := lookupAll("before the loss", before); got != blTopics {
		t.Fatalf("before the loss only %d/%d found", got, blTopics)
	}
	beforeTook := time.Since(start)

	for _, b := range boot {
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	start = time.Now()
	oldFound := lookupAll("old records after the loss", before)
	var after []ann
	for i := range blTopics {
		after = append(after, announce("after", i))
	}
	newFound := lookupAll("new records after the loss", after)
	t.Logf("bootstrap loss: %d bootstrap nodes closed; %d nodes remain (%d persistent, %d ephemeral)",
		blBootstraps, len(users), len(persistent), len(eph))
	t.Logf("after the loss: %d/%d old records found, %d/%d new announces stored and found",
		oldFound, blTopics, newFound, blTopics)
	t.Logf("%d announces + %d lookups took %v before the loss; %d lookups + %d announces + %d lookups took %v after (dead contacts time out until evicted)",
		blTopics, blTopics, beforeTook.Round(time.Millisecond), blTopics, blTopics, blTopics, time.Since(start).Round(time.Millisecond))

	// The survivors still hold each other: every remaining persistent node
	// has live contacts besides the dead bootstrap nodes.
	for _, n := range persistent {
		if st := n.Stats(); st.RoutingTable <= blBootstraps {
			t.Errorf("node %s routing table holds %d contacts", n.LocalAddr(), st.RoutingTable)
		}
	}
}
