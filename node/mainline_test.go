package node_test

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/mainline"
	"github.com/swarmdb/swarmdb/node"
)

// startRouters starts size mainline routers on loopback.
func startRouters(t *testing.T, size int) ([]*mainline.Node, []string) {
	t.Helper()
	return testnet.MainlineRouters(t, size, nil)
}

// startBootstrap starts a swarmdb bootstrap node that announces itself
// under the bootstrap name on the given mainline routers.
func startBootstrap(t *testing.T, routers []string) *node.Bootstrap {
	t.Helper()
	b := node.NewBootstrap(node.BootstrapConfig{ListenAddr: "127.0.0.1:0", Mainline: routers})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// startMainlineNode starts a node whose only way into any DHT is the
// mainline routers given (no bootstrap address, no LAN discovery).
func startMainlineNode(t *testing.T, topic, dir string, routers []string, events func(node.MainlinePeer)) *node.Node {
	t.Helper()
	return startConfigured(t, node.Config{Topic: topic, DataDir: dir, Mainline: routers, DisableLAN: true, OnMainlinePeer: events})
}

// mainlineLog collects MainlinePeer events.
type mainlineLog struct {
	mu     sync.Mutex
	events []node.MainlinePeer
}

func (l *mainlineLog) add(p node.MainlinePeer) {
	l.mu.Lock()
	l.events = append(l.events, p)
	l.mu.Unlock()
}

func (l *mainlineLog) has(p node.MainlinePeer) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.events, p)
}

// TestBootstrapWithNoAddress: two nodes given only mainline routers find a
// swarmdb bootstrap node under the bootstrap name, join its DHT, find each
// other there and replicate. Stopped, and restarted with the routers gone,
// they join again from the node cache and replicate again.
func TestBootstrapWithNoAddress(t *testing.T) {
	routers, routerAddrs := startRouters(t, 3)
	b := startBootstrap(t, routerAddrs)
	const topic = "mainline-bootstrap-test"
	dirA, dirB := t.TempDir(), t.TempDir()
	var logA mainlineLog
	a := startMainlineNode(t, topic, dirA, routerAddrs, logA.add)
	c := startMainlineNode(t, topic, dirB, routerAddrs, nil)
	t.Cleanup(func() {
		if t.Failed() {
			for _, nd := range []*node.Node{a, c} {
				ms, _ := nd.MainlineStats()
				ds, _ := nd.DHTStats()
				t.Logf("node %v: mainline %+v\ndht %+v\nswarm %+v", nd.LocalAddr(), ms, ds, nd.Stats().Swarm)
			}
			bs, _ := b.MainlineStats()
			t.Logf("bootstrap %v: mainline %+v dht %+v", b.DHT().LocalAddr(), bs, b.DHT().Stats())
		}
	})
	waitPeers(t, a, 1)
	waitPeers(t, c, 1)
	if _, err := a.Put(context.Background(), "greeting", []byte(`"via mainline"`)); err != nil {
		t.Fatal(err)
	}
	waitValue(t, c, "greeting", []byte(`"via mainline"`))
	if st, ok := a.MainlineStats(); !ok || st.JoinsByName == 0 {
		t.Fatalf("node A's mainline stats %+v: want a join through a node found by name", st)
	}
	if want := (node.MainlinePeer{Addr: b.DHT().LocalAddr(), Source: "dht", Kind: "swarmdb"}); !logA.has(want) {
		t.Fatalf("events %v lack %v", logA.events, want)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	for _, r := range routers {
		r.Close()
	}
	a = startMainlineNode(t, topic, dirA, routerAddrs, nil)
	defer a.Close()
	c = startMainlineNode(t, topic, dirB, routerAddrs, nil)
	defer c.Close()
	waitPeers(t, a, 1)
	if _, err := c.Put(context.Background(), "again", []byte(`"from the cache"`)); err != nil {
		t.Fatal(err)
	}
	waitValue(t, a, "again", []byte(`"from the cache"`))
	if st, _ := a.MainlineStats(); st.JoinsByName != 0 {
		t.Fatalf("restarted node joined by name (%d), want from the cache", st.JoinsByName)
	}
}

// TestBootstrapCandidatesVerified: addresses announced under the bootstrap
// name that do not answer, or answer as no persistent swarmdb DHT node
// does, are skipped; the node joins through the real one.
func TestBootstrapCandidatesVerified(t *testing.T) {
	_, routerAddrs := startRouters(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	wrong := dht.New(dht.Config{ListenAddr: "127.0.0.1:0", Mode: dht.ModeEphemeral}) // answers, with no id
	if err := wrong.Start(); err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	var all []netip.AddrPort
	for _, a := range routerAddrs {
		all = append(all, netip.MustParseAddrPort(a))
	}
	forger, err := mainline.New(mainline.Config{Conn: mustListen(t), Routers: all})
	if err != nil {
		t.Fatal(err)
	}
	if err := forger.Start(); err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	for _, port := range []uint16{udpPort(silent.LocalAddr()), wrong.LocalAddr().Port()} {
		if _, err := forger.Announce(ctx, mainline.BootstrapInfohash, int(port), false, nil); err != nil {
			t.Fatal(err)
		}
	}
	b := startBootstrap(t, routerAddrs)
	nd := startMainlineNode(t, "verify-test", t.TempDir(), routerAddrs, nil)
	defer nd.Close()
	var st node.MainlineStats
	joined := testutil.Poll(30*time.Second, 0, func() bool {
		st, _ = nd.MainlineStats()
		dst, _ := nd.DHTStats()
		return st.JoinsByName > 0 && dst.RoutingTable > 0
	})
	if !joined {
		t.Fatalf("no join through %v after 30 s: %+v", b.DHT().LocalAddr(), st)
	}
	if st.Rejected < 2 {
		t.Fatalf("joined with %d candidates rejected, want the 2 forged ones", st.Rejected)
	}
}

func mustListen(t *testing.T) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func udpPort(a net.Addr) uint16 { return uint16(a.(*net.UDPAddr).Port) }
