package dht_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

func newKey(t testing.TB) ed25519.PrivateKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func startNet(t testing.TB, persistent int, tweak func(int, *dht.Config)) *testnet.Network {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nw, err := testnet.Start(ctx, testnet.Config{Persistent: persistent, Tweak: tweak})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Close)
	return nw
}

func addEphemeral(t testing.TB, nw *testnet.Network, cfg dht.Config) *dht.Node {
	t.Helper()
	cfg.Mode = dht.ModeEphemeral
	n, err := nw.AddNode(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func hasPeer(recs []dht.PeerRecord, pub ed25519.PublicKey) bool {
	for _, r := range recs {
		if r.PublicKey.Equal(pub) {
			return true
		}
	}
	return false
}

// TestNetwork200 is the acceptance test: 150 persistent nodes and
// 50 ephemeral announcers on 50 topics; an ephemeral node's lookup of each
// topic returns its announcer, and a signaling payload relayed to each
// announcer through its record's relays comes back answered.
func TestNetwork200(t *testing.T) {
	if testing.Short() {
		t.Skip("200-node network in -short mode")
	}
	nw := startNet(t, 150, nil)
	type announcer struct {
		node  *dht.Node
		key   ed25519.PrivateKey
		topic dht.ID
	}
	ann := make([]announcer, 50)
	for i := range ann {
		key := newKey(t)
		a := announcer{key: key, topic: dht.TopicKey(fmt.Sprintf("topic-%d", i))}
		a.node = addEphemeral(t, nw, dht.Config{OnSignal: func(to ed25519.PublicKey, from netip.AddrPort, p []byte) []byte {
			return append([]byte("echo:"), p...)
		}})
		ann[i] = a
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for _, a := range ann {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := a.node.Announce(ctx, a.topic, a.key)
			if err != nil {
				t.Errorf("announce: %v", err)
				return
			}
			if res.Stored == 0 || len(res.Relays) == 0 {
				t.Errorf("announce stored at %d nodes with %d relays: %+v", res.Stored, len(res.Relays), a.node.Stats())
			}
		}()
	}
	wg.Wait()
	client := addEphemeral(t, nw, dht.Config{})
	for i, a := range ann {
		res, err := client.Lookup(ctx, a.topic)
		if err != nil {
			t.Fatalf("lookup %d: %v", i, err)
		}
		pub := a.key.Public().(ed25519.PublicKey)
		if !hasPeer(res.Peers, pub) {
			t.Fatalf("lookup %d: announcer missing from %d peers", i, len(res.Peers))
		}
		rec := res.Peers[0]
		for _, r := range res.Peers {
			if r.PublicKey.Equal(pub) {
				rec = r
			}
		}
		ans, err := client.Signal(ctx, rec.Relays[0], pub, []byte("hello"))
		if err != nil {
			t.Fatalf("signal %d via %s: %v", i, rec.Relays[0], err)
		}
		if string(ans) != "echo:hello" {
			t.Fatalf("signal %d: answer %q", i, ans)
		}
	}
	if st := client.Stats(); st.Persistent || st.RoutingTable == 0 {
		t.Fatalf("client stats: %+v", st)
	}
	// Ephemeral nodes never enter routing tables: every routing table
	// holds at most the 149 other persistent nodes.
	for _, n := range nw.Nodes()[:150] {
		if st := n.Stats(); !st.Persistent || st.RoutingTable > 149 {
			t.Fatalf("node %s: persistent=%v table=%d", n.LocalAddr(), st.Persistent, st.RoutingTable)
		}
	}
	for _, a := range ann {
		if a.node.Persistent() {
			t.Fatal("ephemeral announcer became persistent")
		}
	}
}

func TestUnannounceAndExpiry(t *testing.T) {
	nw := startNet(t, 12, func(i int, c *dht.Config) { c.RecordTTL = 400 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := addEphemeral(t, nw, dht.Config{})
	b := addEphemeral(t, nw, dht.Config{})
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	topic := dht.TopicKey("expiry")

	if _, err := a.Announce(ctx, topic, key); err != nil {
		t.Fatal(err)
	}
	res, err := b.Lookup(ctx, topic)
	if err != nil || !hasPeer(res.Peers, pub) {
		t.Fatalf("lookup after announce: %v, %d peers", err, len(res.Peers))
	}
	if err := a.Unannounce(ctx, topic, key); err != nil {
		t.Fatal(err)
	}
	res, err = b.Lookup(ctx, topic)
	if err != nil || hasPeer(res.Peers, pub) {
		t.Fatalf("lookup after unannounce: %v, found=%v", err, hasPeer(res.Peers, pub))
	}

	if _, err := a.Announce(ctx, topic, key); err != nil {
		t.Fatal(err)
	}
	// Polling an expiry clock; each check is a lookup, so not too often.
	expired := testutil.Poll(5*time.Second, 100*time.Millisecond, func() bool {
		res, err = b.Lookup(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		return !hasPeer(res.Peers, pub)
	})
	if !expired {
		t.Fatal("record did not expire")
	}
}

func TestSTUNBinding(t *testing.T) {
	nw := startNet(t, 3, nil)
	for _, n := range nw.Nodes() {
		conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(n.LocalAddr()))
		if err != nil {
			t.Fatal(err)
		}
		c, err := stun.NewClient(conn)
		if err != nil {
			t.Fatal(err)
		}
		var got stun.XORMappedAddress
		var cbErr error
		err = c.Do(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint), func(ev stun.Event) {
			if ev.Error != nil {
				cbErr = ev.Error
				return
			}
			cbErr = got.GetFrom(ev.Message)
		})
		// The client's own address, as the node must have seen it.
		local := conn.LocalAddr().(*net.UDPAddr)
		c.Close()
		if err != nil || cbErr != nil {
			t.Fatalf("stun: %v %v", err, cbErr)
		}
		if got.Port != local.Port || !got.IP.Equal(local.IP) {
			t.Fatalf("mapped %s, client is %s", got.String(), local)
		}
		if n.Stats().STUNAnswered == 0 {
			t.Fatal("STUNAnswered not counted")
		}
	}
}

// TestAdaptiveBecomesPersistent: on loopback every node is reachable, so
// an adaptive node must find that out and become persistent at the
// address others see. The network is large enough that the node's own
// lookups leave nodes it never contacted (the unsolicited probe must come
// from one of them).
func TestAdaptiveBecomesPersistent(t *testing.T) {
	nw := startNet(t, 120, nil)
	n, err := nw.AddNode(context.Background(), dht.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st := n.Stats()
	if !st.Persistent || st.ID != dht.NodeID(n.LocalAddr()) || st.ProbeRepliesUnsolicited == 0 {
		t.Fatalf("adaptive node: %+v", st)
	}
	forced, err := nw.AddNode(context.Background(), dht.Config{Mode: dht.ModeEphemeral})
	if err != nil {
		t.Fatal(err)
	}
	if forced.Persistent() {
		t.Fatal("forced-ephemeral node became persistent")
	}
}
