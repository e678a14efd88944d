package dht_test

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/transport/v2/stdnet"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testutil"
)

// TestLostRelayRequestIsResentSoon: a relayed signal whose request is lost
// is sent again after two of the node's estimated round trips (the relay's
// and the announcer's legs), not after the whole RequestTimeout. Losing one
// of a signal's four datagrams cost a dial a second (the bench's wan part:
// join→connected 278 ms and 2.3 s at 5 % loss, where Hyperswarm took 33).
func TestLostRelayRequestIsResentSoon(t *testing.T) {
	std, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	// The client's next datagram to drop (set below) is lost.
	var drop atomic.Pointer[netip.AddrPort]
	var dropped atomic.Int32
	ln := &testutil.FilterNet{Net: std, Send: func(to net.Addr) bool {
		at := drop.Load()
		if ua, ok := to.(*net.UDPAddr); ok && at != nil && ua.AddrPort() == *at && drop.CompareAndSwap(at, nil) {
			dropped.Add(1)
			return false
		}
		return true
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const timeout = 5 * time.Second
	client, pub, relays := echoThroughRelays(t, ctx, dht.Config{}, dht.Config{Net: ln, RequestTimeout: timeout})
	// A first signal gets the relay's token (so the next one is a single
	// request) and round trips for the estimate.
	if _, err := client.Signal(ctx, relays[0], pub, []byte("first")); err != nil {
		t.Fatal(err)
	}
	drop.Store(&relays[0])
	start := time.Now()
	ans, err := client.Signal(ctx, relays[0], pub, []byte("again"))
	took := time.Since(start)
	if err != nil || string(ans) != "echo:again" {
		t.Fatalf("signal after a lost request: %q, %v", ans, err)
	}
	if dropped.Load() != 1 {
		t.Fatalf("%d datagrams dropped, want the one request", dropped.Load())
	}
	t.Logf("answered %v after the lost request was sent (RequestTimeout %v)", took.Round(time.Millisecond), timeout)
	if took >= timeout/2 {
		t.Fatalf("the lost relay request was resent after %v, want about two estimated round trips", took)
	}
}
