package dht

import (
	"context"
	"crypto/ed25519"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestEnsureRelaysSharesARound: a registration of a key that finds one in flight waits for
// it and takes its result (a swarm's start listens and announces at once, and each ran the
// whole round); but when the set lost a relay after that round began, it runs a round of its
// own afterwards, so that two relays dying at once are both replaced. The node is never
// started, so a round of its own fails at once: only the shared round can return relays.
func TestEnsureRelaysSharesARound(t *testing.T) {
	shared := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.5:49737")}
	for _, tc := range []struct {
		name    string
		dropped int // relays dropped since the round in flight began
		joins   bool
	}{
		{"joins", 0, true},
		{"stale", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := New(Config{})
			_, priv, err := ed25519.GenerateKey(nil)
			if err != nil {
				t.Fatal(err)
			}
			f := &relayFlight{done: make(chan struct{})}
			n.announced[keyOf(priv.Public().(ed25519.PublicKey))] = &relaySet{priv: priv, flight: f, dropped: tc.dropped}
			type result struct {
				relays []netip.AddrPort
				err    error
			}
			got := make(chan result, 1)
			go func() {
				r, err := n.ensureRelays(context.Background(), priv)
				got <- result{r, err}
			}()
			select {
			case r := <-got:
				t.Fatalf("returned %v, %v before the round in flight ended", r.relays, r.err)
			case <-time.After(50 * time.Millisecond):
			}
			n.mu.Lock()
			f.relays = shared
			n.announced[keyOf(priv.Public().(ed25519.PublicKey))].flight = nil
			n.mu.Unlock()
			close(f.done)
			r := <-got
			if joined := r.err == nil && slices.Equal(r.relays, shared); joined != tc.joins {
				t.Fatalf("got %v, %v; want the shared round's relays: %v", r.relays, r.err, tc.joins)
			}
		})
	}
}
