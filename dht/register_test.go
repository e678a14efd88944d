package dht_test

import (
	"context"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
)

// TestRegisterOverlapsShareOneRound: overlapping registrations of one key (a swarm's start
// listens and announces at once) share one lookup and one registration at each relay, where
// each did the whole round before. Counted by the announces the relays stored: two
// overlapping calls cost what one call costs. A 50 ms WAN makes a round last several
// hundred milliseconds, so the two calls overlap.
func TestRegisterOverlapsShareOneRound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ips := []string{"203.0.113.20", "203.0.113.21"}
	v, nets := startVNet(t, ctx, 50*time.Millisecond, 6, ips...)
	var clients []*dht.Node
	for i, ip := range ips {
		clients = append(clients, dht.New(dht.Config{Net: nets[i], ListenAddr: ip + ":49737", Mode: dht.ModeEphemeral, Bootstrap: v.Bootstrap}))
	}
	stored := func() (sum uint64) {
		for _, s := range v.Servers {
			sum += s.Stats().AnnouncesStored
		}
		return sum
	}
	for _, c := range clients {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Bootstrap(ctx); err != nil {
			t.Fatal(err)
		}
	}

	before := stored()
	if _, err := clients[0].Register(ctx, newKey(t)); err != nil {
		t.Fatal(err)
	}
	one := stored() - before

	before = stored()
	key := newKey(t)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := clients[1].Register(ctx, key)
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if two := stored() - before; two != one || one == 0 {
		t.Fatalf("two overlapping registrations stored %d announces, one stores %d", two, one)
	}
}
