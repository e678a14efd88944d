package dht_test

import (
	"context"
	"crypto/ed25519"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testnet"
)

// TestLargeTopicLookup: a topic with more announcers than one datagram can
// list. Every reply stays within MaxPacketSize (a larger one would be
// dropped as malformed and the lookup would time out), and since each
// storing node returns a random share, a lookup still finds most peers.
func TestLargeTopicLookup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := testnet.Start(ctx, testnet.Config{Persistent: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	topic := dht.TopicKey("large-topic")
	const announcers = 40
	var wg sync.WaitGroup
	errs := make(chan error, announcers)
	for range announcers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := n.AddNode(ctx, dht.Config{Mode: dht.ModeEphemeral})
			if err != nil {
				errs <- err
				return
			}
			_, priv, _ := ed25519.GenerateKey(nil)
			if _, err := a.Announce(ctx, topic, priv); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	client, err := n.AddNode(ctx, dht.Config{Mode: dht.ModeEphemeral})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := client.Lookup(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lookup found %d of %d announcers in %v (%d requests)", len(res.Peers), announcers, time.Since(start), res.Queried)
	if len(res.Peers) < announcers/2 {
		t.Fatalf("found %d of %d announcers", len(res.Peers), announcers)
	}
	if st := client.Stats(); st.Timeouts > 0 {
		t.Errorf("%d requests timed out (oversized replies are dropped as malformed)", st.Timeouts)
	}
}
