package dht_test

import (
	"context"
	"crypto/ed25519"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"

	"github.com/swarmdb/swarmdb/dht"
)

// TestLostRelayRequestIsResentSoon: a relayed signal whose request is lost
// is sent again after two of the node's estimated round trips (the relay's
// and the announcer's legs), not after the whole RequestTimeout. Losing one
// of a signal's four datagrams cost a dial a second (the bench's wan part:
// join→connected 278 ms and 2.3 s at 5 % loss, where Hyperswarm took 33).
func TestLostRelayRequestIsResentSoon(t *testing.T) {
	nw := startNet(t, 8, nil)
	std, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	ln := &lossyNet{Net: std}
	echo := func(_ ed25519.PublicKey, _ netip.AddrPort, p []byte) []byte { return append([]byte("echo:"), p...) }
	server := addEphemeral(t, nw, dht.Config{OnSignal: echo})
	const timeout = 5 * time.Second
	client := addEphemeral(t, nw, dht.Config{Net: ln, RequestTimeout: timeout})
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	relays, err := server.Register(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	// A first signal gets the relay's token (so the next one is a single
	// request) and round trips for the estimate.
	if _, err := client.Signal(ctx, relays[0], pub, []byte("first")); err != nil {
		t.Fatal(err)
	}
	ln.dropNextTo(relays[0])
	start := time.Now()
	ans, err := client.Signal(ctx, relays[0], pub, []byte("again"))
	took := time.Since(start)
	if err != nil || string(ans) != "echo:again" {
		t.Fatalf("signal after a lost request: %q, %v", ans, err)
	}
	if ln.dropped.Load() != 1 {
		t.Fatalf("%d datagrams dropped, want the one request", ln.dropped.Load())
	}
	t.Logf("answered %v after the lost request was sent (RequestTimeout %v)", took.Round(time.Millisecond), timeout)
	if took >= timeout/2 {
		t.Fatalf("the lost relay request was resent after %v, want about two estimated round trips", took)
	}
}

// lossyNet is the real network whose sockets can lose one datagram to a
// chosen address (dropNextTo).
type lossyNet struct {
	transport.Net
	target  atomic.Pointer[netip.AddrPort]
	dropped atomic.Int32
}

func (l *lossyNet) dropNextTo(to netip.AddrPort) { l.target.Store(&to) }

func (l *lossyNet) ListenPacket(network, address string) (net.PacketConn, error) {
	pc, err := l.Net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	return &lossyConn{PacketConn: pc, net: l}, nil
}

type lossyConn struct {
	net.PacketConn
	net *lossyNet
}

func (c *lossyConn) WriteTo(b []byte, to net.Addr) (int, error) {
	if t := c.net.target.Load(); t != nil {
		if ua, ok := to.(*net.UDPAddr); ok && ua.AddrPort() == *t && c.net.target.CompareAndSwap(t, nil) {
			c.net.dropped.Add(1)
			return len(b), nil
		}
	}
	return c.PacketConn.WriteTo(b, to)
}
