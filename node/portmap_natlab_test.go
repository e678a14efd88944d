package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/mainline"
	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/node"
	"github.com/swarmdb/swarmdb/portmap"
)

// spreadDHT starts n persistent DHT nodes on one public host, each on an
// address of its own, joined to each other. The DHT's reachability check
// needs strangers: its probe counts only when it comes from an IP the node
// never sent to, and a node's join contacts about twenty others.
func spreadDHT(t *testing.T, lab *natlab.Lab, n int) []netip.AddrPort {
	t.Helper()
	h := lab.AddPublicHost("dhts")
	ips := []netip.Addr{h.IP()}
	for len(ips) < n {
		ips = append(ips, h.AddIP())
	}
	var addrs []netip.AddrPort
	var nodes []*dht.Node
	for i, ip := range ips {
		cfg := dht.Config{Net: h.Net(), ListenAddr: netip.AddrPortFrom(ip, 49737).String(), Mode: dht.ModePersistent}
		if i > 0 {
			cfg.Bootstrap = addrs[:1]
		}
		d := dht.New(cfg)
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		nodes = append(nodes, d)
		addrs = append(addrs, d.LocalAddr())
	}
	// The joins run at once: one after another, 160 of them took over 30 s
	// on a loaded 2-core machine (load 19).
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Scaled(30*time.Second))
	defer cancel()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, d := range nodes {
		wg.Go(func() { errs[i] = d.Bootstrap(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return addrs
}

// startLabNode starts a node on lab host h with the router port mapping
// asked of h's gateway, and reports how long Start took.
func startLabNode(t *testing.T, h *natlab.Host, cfg node.Config) (*node.Node, time.Duration) {
	t.Helper()
	cfg.DataDir, cfg.Net, cfg.ListenAddr, cfg.DisableLAN = t.TempDir(), h.Net(), h.IP().String()+":0", true
	cfg.PortMap.Gateway = func() (netip.Addr, error) { return h.Gateway(), nil }
	nd, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := nd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Cleanup(func() { nd.Close() })
	return nd, took
}

// TestNodePortMapNATLab: a node behind a port-restricted home router that
// runs miniupnpd (PCP, NAT-PMP, UPnP-IGD), with --map-ws. It gets UDP and
// TCP mappings at the router's public address; the DHT's own reachability
// check, whose unsolicited probe now gets through, makes it a persistent
// DHT node; its NAT measures open to anyone (endpoint-independent
// filtering); the mainline part announces its WebSocket at the mapped
// address and port, where a client on the public segment reads its
// status; Close removes the mappings. Before that, behind a router whose
// daemon stopped, a node starts as one with --no-portmap does (no error,
// and the gateway's closed ports are known at once rather than waited for)
// and stays ephemeral. Root and miniupnpd only.
func TestNodePortMapNATLab(t *testing.T) {
	natlab.RequireMiniUPnPd(t)
	lab := natlab.New(t)
	all := spreadDHT(t, lab, 160)
	boot := all[:2] // two observers of our address; most of the others stay strangers
	routers := labMainlineRouters(t, lab, 3)
	client := lab.AddPublicHost("client")
	r := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted})
	d := r.StartMiniUPnPd(natlab.MiniUPnPdConfig{})
	pub := r.PublicIP()

	// First a router whose daemon stopped: as one without port mapping.
	stopped := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted})
	if err := stopped.StartMiniUPnPd(natlab.MiniUPnPdConfig{}).Stop(); err != nil {
		t.Fatal(err)
	}
	base, baseTook := startLabNode(t, stopped.AddHost("base"), node.Config{Topic: "natlab-portmap-off", Bootstrap: boot, DisablePortMap: true})
	off, offTook := startLabNode(t, stopped.AddHost("off"), node.Config{Topic: "natlab-portmap-off", Bootstrap: boot})
	t.Logf("start with the daemon stopped %v, with --no-portmap %v", offTook.Round(time.Millisecond), baseTook.Round(time.Millisecond))
	if _, ok := base.PortMap(); ok {
		t.Fatal("DisablePortMap node has a port-mapping client")
	}
	pm, ok := off.PortMap()
	if !ok || pm.State != portmap.StateUnavailable || !errors.Is(pm.Err, portmap.ErrUnreachable) {
		t.Fatalf("daemon stopped: port map %+v (%v), want unavailable, the gateway's ports closed", pm, pm.Err)
	}
	for _, n := range []*node.Node{base, off} {
		if st := n.Status(); st.DHT == nil || st.DHT.Persistent {
			t.Fatalf("a node behind a port-restricted router without a mapping became persistent: %+v", st.DHT)
		}
		if nat := waitNAT(t, n); nat.Class != natcheck.ClassPortRestricted {
			t.Fatalf("NAT %s, want portrestricted", nat.Class)
		}
	}

	// Then the router with its daemon.
	h := r.AddHost("n")
	nd, took := startLabNode(t, h, node.Config{Topic: "natlab-portmap", Bootstrap: boot, Mainline: routers, Server: true,
		WebSocketAddr: h.IP().String() + ":9000", MapWebSocket: true, Logger: portMapLogger("mapped")})
	pm, ok = nd.PortMap()
	if !ok || pm.State != portmap.StateMapped || pm.UDP == nil || pm.TCP == nil {
		t.Fatalf("port map status %+v (ok %v)", pm, ok)
	}
	t.Logf("started in %v with %s mappings %s and %s", took.Round(time.Millisecond), pm.Protocol, pm.UDP.External, pm.TCP.External)
	if pm.UDP.External.Addr() != pub || pm.UDP.Internal.Port() != nd.LocalAddr().Port() || pm.TCP.External.Addr() != pub {
		t.Fatalf("mappings %s, %s: want the router's address %s", pm.UDP.External, pm.TCP.External, pub)
	}
	if st := nd.Status(); st.DHT == nil || !st.DHT.Persistent || st.PortMap == nil {
		t.Fatalf("status %+v: want a persistent DHT node (the reachability check got through the mapping)", st.DHT)
	}
	// The measurement's stranger probe now gets through. (It runs while
	// the swarm joins the DHT, so in a lab DHT this small the stranger is
	// sometimes one the join had already contacted, which reads as
	// "unknown"; a filtered probe would read as port-dependent.)
	nat := waitNAT(t, nd)
	if nat.Filtering == natcheck.FilteringAddressAndPortDependent {
		t.Fatalf("NAT measured %s/%s: a mapped port is open to anyone", nat.Mapping, nat.Filtering)
	}
	t.Logf("NAT measured %s (filtering %s) behind a port-restricted router with a mapping", nat.Class, nat.Filtering)

	// The mainline announce carries the mapped port, and a client on the
	// public segment reaches the WebSocket's server there.
	const within = 40 * time.Second // for the announce and the lookup together
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	testutil.Eventually(t, within, func() bool { st, _ := nd.MainlineStats(); return st.WebSocketAnnounced }, "the websocket announced")
	found := lookupMainline(ctx, t, client, routers, "natlab-portmap")
	if !slices.Contains(found, pm.TCP.External) {
		t.Fatalf("mainline lookup found %v, want the mapped websocket %s", found, pm.TCP.External)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
			return client.Net().Dial(network, addr)
		}}}
	resp, err := hc.Get("http://" + pm.TCP.External.String() + "/status.json")
	if err != nil {
		t.Fatalf("status through the websocket's mapping: %v", err)
	}
	var st node.Status
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || st.PublicKey != nd.Status().PublicKey || st.PortMap == nil || st.PortMap.UDP == nil {
		t.Fatalf("status through the mapping: %v %+v", err, st)
	}

	if err := nd.Close(); err != nil {
		t.Fatal(err)
	}
	if rs, err := d.Redirects(ctx); err != nil || len(rs) != 0 {
		t.Fatalf("router rules after Close: %v (%v)", rs, err)
	}

}

func waitNAT(t *testing.T, nd *node.Node) natcheck.Report {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() bool { return nd.NAT().Class != "" }, "a NAT measurement")
	return nd.NAT()
}

// lookupMainline looks topic up on the lab's mainline DHT from a public
// host and returns the peers found.
func lookupMainline(ctx context.Context, t *testing.T, h *natlab.Host, routers []string, topic string) []netip.AddrPort {
	t.Helper()
	c, err := h.Net().ListenPacket("udp4", h.IP().String()+":6881")
	if err != nil {
		t.Fatal(err)
	}
	var rs []netip.AddrPort
	for _, r := range routers {
		rs = append(rs, netip.MustParseAddrPort(r))
	}
	ml, err := mainline.New(mainline.Config{Conn: c, Routers: rs, SendRate: 10000, SendBurst: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if err := ml.Start(); err != nil {
		t.Fatal(err)
	}
	defer ml.Close()
	var mu sync.Mutex
	var found []netip.AddrPort
	for {
		_, err := ml.Lookup(ctx, mainline.TopicInfohash(topic), func(p netip.AddrPort) {
			mu.Lock()
			found = append(found, p)
			mu.Unlock()
		})
		if err != nil && ctx.Err() != nil {
			t.Fatalf("mainline lookup: %v", err)
		}
		mu.Lock()
		got := slices.Clone(found)
		mu.Unlock()
		if len(got) > 0 {
			return got
		}
		{
			select {
			case <-ctx.Done():
				t.Fatal("mainline lookup found nothing")
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// TestNodesSymmetricPortMapNATLab: two nodes, each behind a symmetric NAT
// whose router runs miniupnpd, connect directly (without port mapping that
// pair needs a TURN relay; the lab DHT here offers none) and replicate.
// Root and miniupnpd only.
func TestNodesSymmetricPortMapNATLab(t *testing.T) {
	natlab.RequireMiniUPnPd(t)
	lab := natlab.New(t)
	boot := spreadDHT(t, lab, 3)
	var nodes []*node.Node
	for _, name := range []string{"a", "b"} {
		r := lab.AddRouter(natlab.RouterConfig{Type: natlab.Symmetric})
		r.StartMiniUPnPd(natlab.MiniUPnPdConfig{})
		nd, _ := startLabNode(t, r.AddHost(name), node.Config{Topic: "natlab-portmap-sym", Bootstrap: boot, Logger: portMapLogger(name)})
		if pm, ok := nd.PortMap(); !ok || pm.State != portmap.StateMapped {
			t.Fatalf("%s: port map %+v", name, pm)
		}
		nodes = append(nodes, nd)
	}
	for _, nd := range nodes {
		waitPeers(t, nd, 1)
		if p := nd.Stats().Swarm.ByPath; p["direct"] != 1 {
			t.Fatalf("connected by %v, want direct", p)
		}
	}
	for _, p := range nodes[0].Status().Peers {
		t.Logf("symmetric+upnp to symmetric+upnp: %s in %.1f ms", p.Path, p.ConnectMS)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := nodes[0].Put(ctx, "sym", []byte(`"through two mapped symmetric NATs"`)); err != nil {
		t.Fatal(err)
	}
	waitValue(t, nodes[1], "sym", []byte(`"through two mapped symmetric NATs"`))
}

// portMapLogger logs a lab node's debug output to stderr when
// SWARMDB_TEST_LOG is set.
func portMapLogger(name string) *slog.Logger {
	if os.Getenv("SWARMDB_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("n", name)
}
