package swarm

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testutil"
)

// lookupKeys returns the keys announced on topic, as a fresh DHT client
// sees them.
func lookupKeys(t *testing.T, node *dht.Node, topic Topic) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := node.Lookup(ctx, topic.id())
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]bool)
	for _, p := range res.Peers {
		out[string(p.PublicKey)] = true
	}
	return out
}

func TestLeaveUnannouncesAndStopsDialling(t *testing.T) {
	testutil.CheckLeaks(t)
	nw := startNet(t, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The server refuses the client, so the client keeps a retry queued.
	server := startSwarm(t, nw, nil, nil)
	client := startSwarm(t, nw, nil, func(c *Config) {
		c.Backoff = Backoff{Short: 100 * time.Millisecond, Medium: 200 * time.Millisecond, Long: 300 * time.Millisecond}
	})
	server.cfg.Firewall = func(remote ed25519.PublicKey, inbound bool) error {
		if remote.Equal(client.PublicKey()) {
			return errors.New("not you")
		}
		return nil
	}
	topic := TopicOf("leave")
	if _, err := server.JoinKey(topic, JoinOptions{Server: true}); err != nil {
		t.Fatal(err)
	}
	if err := server.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if !lookupKeys(t, client.Node(), topic)[string(server.PublicKey())] {
		t.Fatal("server record not in the DHT after join")
	}
	if _, err := client.JoinKey(topic, JoinOptions{Client: true}); err != nil {
		t.Fatal(err)
	}
	waitState(t, client, 20*time.Second, "client retrying the refused server", func() bool {
		st := client.Stats()
		return st.FailuresByReason["refused"] >= 1
	})
	if err := client.Leave(ctx, topic); err != nil {
		t.Fatal(err)
	}
	// Structurally nothing is left to dial: no queued peer, no dial
	// scheduled, and the peer is forgotten.
	waitState(t, client, 20*time.Second, "client idle after Leave", func() bool {
		st := client.Stats()
		return st.Queued == 0 && st.Dialing == 0
	})
	client.mu.Lock()
	known := len(client.table.peers)
	client.mu.Unlock()
	if known != 0 {
		t.Fatalf("client still tracks %d peers after leaving the topic", known)
	}
	if err := server.Leave(ctx, topic); err != nil {
		t.Fatal(err)
	}
	if lookupKeys(t, client.Node(), topic)[string(server.PublicKey())] {
		t.Fatal("server record still in the DHT after Leave")
	}
	if err := server.Leave(ctx, topic); !errors.Is(err, ErrNotJoined) {
		t.Fatalf("second Leave: %v", err)
	}
}

func TestFirewallRefusesBothWays(t *testing.T) {
	testutil.CheckLeaks(t)
	nw := startNet(t, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var refusedKey ed25519.PublicKey
	server := startSwarm(t, nw, nil, func(c *Config) {
		c.Firewall = func(remote ed25519.PublicKey, inbound bool) error {
			if remote.Equal(refusedKey) {
				return fmt.Errorf("inbound=%v: refused", inbound)
			}
			return nil
		}
	})
	bad := startSwarm(t, nw, nil, nil)
	good := startSwarm(t, nw, nil, nil)
	refusedKey = bad.PublicKey()
	server.Join("fw", JoinOptions{Server: true})
	if err := server.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	bad.Join("fw", JoinOptions{Client: true})
	good.Join("fw", JoinOptions{Client: true})
	waitConns(t, good, 20*time.Second, server.PublicKey())
	waitState(t, bad, 20*time.Second, "refusal seen by the refused client", func() bool {
		return bad.Stats().FailuresByReason["refused"] >= 1
	})
	if server.Conn(bad.PublicKey()) != nil || bad.Conn(server.PublicKey()) != nil {
		t.Fatal("refused peer connected")
	}
	if n := server.Stats().InboundRefused["firewall"]; n == 0 {
		t.Fatalf("server counted no firewall refusal: %+v", server.Stats().InboundRefused)
	}

	// Outgoing: a client's firewall stops the dial before any packet.
	out := startSwarm(t, nw, nil, func(c *Config) {
		c.Firewall = func(remote ed25519.PublicKey, inbound bool) error {
			if !inbound {
				return errors.New("no dialling")
			}
			return nil
		}
	})
	out.Join("fw", JoinOptions{Client: true})
	if err := out.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st := out.Stats()
	if st.FailuresByReason["firewall"] == 0 || st.Connections != 0 || st.Queued != 0 {
		t.Fatalf("outgoing firewall: %+v", st)
	}
}

func TestBanClosesAndRefuses(t *testing.T) {
	testutil.CheckLeaks(t)
	nw := startNet(t, 6)
	a := startSwarm(t, nw, nil, nil)
	b := startSwarm(t, nw, nil, func(c *Config) {
		c.Backoff = Backoff{Short: 100 * time.Millisecond, Medium: 200 * time.Millisecond, Long: 300 * time.Millisecond, Explicit: 300 * time.Millisecond}
	})
	waitListening(t, b, a, 30*time.Second)
	if err := b.JoinPeer(a.PublicKey()); err != nil {
		t.Fatal(err)
	}
	waitConns(t, a, 20*time.Second, b.PublicKey())
	a.Ban(b.PublicKey())
	a.rec.wait(t, 10*time.Second, "disconnect of the banned peer", func() bool {
		return len(a.rec.closed) == 1
	})
	// b keeps redialling (explicit peer); a refuses each time.
	waitState(t, b, 20*time.Second, "b refused twice", func() bool {
		return b.Stats().FailuresByReason["refused"] >= 2
	})
	if a.Conn(b.PublicKey()) != nil {
		t.Fatal("banned peer connected again")
	}
	if a.Stats().InboundRefused["banned"] == 0 {
		t.Fatalf("no banned refusal counted: %+v", a.Stats().InboundRefused)
	}
	a.Unban(b.PublicKey())
	waitConns(t, a, 20*time.Second, b.PublicKey())
}

// waitListening waits until from can find the relays of to's key (to's
// endpoint finished Listen). Each check is a lookup: one every 100 ms.
func waitListening(t *testing.T, from, to *testSwarm, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	found := testutil.Poll(within, 100*time.Millisecond, func() bool {
		_, err := from.Node().FindRelays(ctx, to.PublicKey())
		return err == nil
	})
	if !found {
		t.Fatalf("%x never found the relays of %x within %v", from.PublicKey()[:4], to.PublicKey()[:4], within)
	}
}

func TestInboundLimitEnforced(t *testing.T) {
	testutil.CheckLeaks(t)
	nw := startNet(t, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	server := startSwarm(t, nw, nil, func(c *Config) { c.MaxInbound = 2 })
	server.Join("limit", JoinOptions{Server: true})
	if err := server.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var clients []*testSwarm
	for range 4 {
		c := startSwarm(t, nw, nil, nil)
		c.Join("limit", JoinOptions{Client: true})
		clients = append(clients, c)
	}
	for _, c := range clients {
		if err := c.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, server, 30*time.Second, "two refusals at the limit", func() bool {
		return server.Stats().InboundRefused["limit"] >= 2
	})
	// The two accepted handshakes may still be finishing when the second
	// refusal is counted.
	waitState(t, server, 30*time.Second, "two connections at the limit", func() bool {
		return server.Stats().Connections == 2
	})
	if n := server.Stats().Connections; n != 2 {
		t.Fatalf("server holds %d connections with MaxInbound 2", n)
	}
	connected := 0
	for _, c := range clients {
		if c.Conn(server.PublicKey()) != nil {
			connected++
		}
	}
	if connected != 2 {
		t.Fatalf("%d clients connected, want 2", connected)
	}
}

func TestMaxPeersBoundsDialling(t *testing.T) {
	testutil.CheckLeaks(t)
	nw := startNet(t, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for range 4 {
		s := startSwarm(t, nw, nil, nil)
		s.Join("maxpeers", JoinOptions{Server: true})
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	client := startSwarm(t, nw, nil, func(c *Config) { c.MaxPeers = 2 })
	client.Join("maxpeers", JoinOptions{Client: true})
	if err := client.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st := client.Stats()
	if st.Connections != 2 || st.Attempts != 2 || st.Queued != 2 {
		t.Fatalf("MaxPeers 2: %+v", st)
	}
}

// TestNetworkChangedDropsSilentConnections: after NetworkChanged, a
// (the default LivenessCheck, 2.5 keepalive intervals, so a live peer is
// heard from even on a loaded machine)
// connection whose peer went silent is closed within LivenessCheck instead
// of the 15 s dead timeout, and live connections stay.
func TestNetworkChangedDropsSilentConnections(t *testing.T) {
	testutil.CheckLeaks(t)
	nw := startNet(t, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// DefaultLivenessCheck: 5 s, 2.5 keepalive intervals. The membership's
	// own probe (StaleAfter) would find the silent peer first; this test is
	// about NetworkChanged's check (TestSilentConnectionRedialled is about
	// the probe).
	a := startSwarm(t, nw, nil, func(c *Config) { c.StaleAfter = time.Minute })
	silentNet := newCrashNet(t)
	silent := startSwarm(t, nw, nil, func(c *Config) { c.Net = silentNet })
	live := startSwarm(t, nw, nil, nil)
	a.Join("netchange", JoinOptions{Server: true})
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	silent.Join("netchange", JoinOptions{Client: true})
	live.Join("netchange", JoinOptions{Client: true})
	waitConns(t, a, 20*time.Second, silent.PublicKey(), live.PublicKey())
	silentNet.Dead.Store(true)
	changedAt := time.Now()
	a.NetworkChanged()
	a.rec.wait(t, 10*time.Second, "silent peer dropped", func() bool {
		for _, c := range a.rec.closed {
			if c.info.PublicKey.Equal(silent.PublicKey()) {
				if !errors.Is(c.err, ErrDead) {
					t.Errorf("dropped with %v, want ErrDead", c.err)
				}
				return true
			}
		}
		return false
	})
	t.Logf("silent peer dropped %v after NetworkChanged", time.Since(changedAt).Round(time.Millisecond))
	if a.Conn(live.PublicKey()) == nil {
		t.Fatal("live connection dropped by the liveness check")
	}
	if st := a.Stats(); st.NetworkChanges != 1 || st.DeadAfterChange != 1 {
		t.Fatalf("stats: %+v", st)
	}
}
