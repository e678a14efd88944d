package dht_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/transport/v2/vnet"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
)

// probeClientAddr is where probeSetup's client listens.
const probeClientAddr = "203.0.113.6:49737"

// probeSetup starts a three-server DHT on a vnet, waits until the first server (the
// probes' server) knows the other two (its candidate helpers), and starts an ephemeral
// client at probeClientAddr that has contacted nobody.
func probeSetup(t *testing.T, ctx context.Context) (*testnet.VNet, *dht.Node) {
	t.Helper()
	v, nets := startVNet(t, ctx, 3, "203.0.113.6")
	testutil.Eventually(t, 10*time.Second, func() bool { return len(v.Servers[0].Contacts()) == 2 }, "the server to know both other nodes")
	client := dht.New(dht.Config{Net: nets[0], ListenAddr: probeClientAddr, Mode: dht.ModeEphemeral})
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return v, client
}

// TestNATProbeStrangerIsNeverContacted: the node that sends the other-node probe's packet is
// one the requester never sent to. The requester lists the IPs it contacted and the server
// picks among the rest; before, the server picked among its far contacts at random, and a
// requester that had spoken to one of them (the first server, when a measurement had to move
// on) got that one about half the time: a contacted sender, filtering unknown.
func TestNATProbeStrangerIsNeverContacted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, client := probeSetup(t, ctx)
	server, contacted, stranger := v.Servers[0], v.Servers[1], v.Servers[2]
	if err := client.VerifyNode(ctx, contacted.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		res, err := client.NATProbe(ctx, server.LocalAddr(), dht.ProbeOtherNode, func(time.Duration, bool) time.Duration { return 2 * time.Second })
		if err != nil {
			t.Fatal(err)
		}
		if !res.Arrived || !res.Unsolicited || res.From != stranger.LocalAddr() {
			t.Fatalf("probe %d: %+v, want a packet from the stranger %s", i, res, stranger.LocalAddr())
		}
	}
	// With every other node contacted there is no stranger left, and the server says so.
	if err := client.VerifyNode(ctx, stranger.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, err := client.NATProbe(ctx, server.LocalAddr(), dht.ProbeOtherNode, func(time.Duration, bool) time.Duration { return time.Second }); !errors.Is(err, dht.ErrNoStranger) {
		t.Fatalf("probe with no stranger left: %v, want %v", err, dht.ErrNoStranger)
	}
}

// TestNATProbeHoldsTheHelper: while an other-node probe waits for its packet, the requester
// sends nothing to the helper the server named (a packet of ours would open the filter being
// measured), so it may contact other nodes meanwhile; the hold ends with the probe.
func TestNATProbeHoldsTheHelper(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, client := probeSetup(t, ctx)
	server := v.Servers[0]

	var during [2]error
	var isolated bool
	var heldDuring []netip.AddrPort
	res, err := client.NATProbe(ctx, server.LocalAddr(), dht.ProbeOtherNode, func(_ time.Duration, held bool) time.Duration {
		isolated = held
		heldDuring = client.HeldForProbes()
		for i, s := range v.Servers[1:] {
			during[i] = client.VerifyNode(ctx, s.LocalAddr())
		}
		return 2 * time.Second
	})
	if err != nil || !res.Arrived || !res.Unsolicited {
		t.Fatalf("probe: %+v, %v", res, err)
	}
	if !isolated {
		t.Fatal("the other-node probe's wait was not isolated: the server named no helper")
	}
	for i, s := range v.Servers[1:] {
		helper := s.LocalAddr() == res.From
		if got := errors.Is(during[i], dht.ErrHeldForProbe); got != helper {
			t.Errorf("sending to %s during the wait: %v (helper %v)", s.LocalAddr(), during[i], helper)
		}
	}
	if !slices.Equal(heldDuring, []netip.AddrPort{res.From}) {
		t.Errorf("held during the wait: %v, want the helper %s", heldDuring, res.From)
	}
	if err := client.VerifyNode(ctx, res.From); err != nil || len(client.HeldForProbes()) != 0 {
		t.Fatalf("the helper is still held after the probe: %v %v", err, client.HeldForProbes())
	}
	if _, err := client.NATProbe(ctx, server.LocalAddr(), dht.ProbeOtherPort, func(_ time.Duration, held bool) time.Duration {
		isolated = held
		return time.Second
	}); err != nil || !isolated {
		t.Fatalf("other-port probe: isolated %v, %v", isolated, err)
	}
}

// TestNATProbeWaitLeavesOutALostTry: when the first NAT_PROBE request is lost, the probe's
// wait is timed from the answered try, not from the first send. Timed from the first send it
// held the lost try's timeout (a second), and the adaptive wait (3 RTT + 100 ms, at most 1 s)
// grew to its full second: at 5 % loss every second client took two seconds to start.
func TestNATProbeWaitLeavesOutALostTry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, client := probeSetup(t, ctx)
	server := v.Servers[0]
	var dropped atomic.Int32
	v.AddChunkFilter(func(c vnet.Chunk) bool {
		if c.SourceAddr().String() == probeClientAddr && c.DestinationAddr().String() == server.LocalAddr().String() {
			return dropped.Add(1) > 1 // the first request is lost
		}
		return true
	})
	var rtt time.Duration
	res, err := client.NATProbe(ctx, server.LocalAddr(), dht.ProbeOtherNode, func(r time.Duration, _ bool) time.Duration {
		rtt = r
		return 2 * time.Second
	})
	if err != nil || !res.Arrived {
		t.Fatalf("probe: %+v, %v", res, err)
	}
	if dropped.Load() < 2 {
		t.Fatalf("%d requests reached the filter, want the lost one and its retry", dropped.Load())
	}
	if rtt >= 500*time.Millisecond {
		t.Fatalf("the probe's wait was timed at %v: the lost try's timeout was counted", rtt)
	}
}

// joinDuringProbe starts an adaptive node on vn at listen, makes an isolated other-node probe
// through the first server and, while the probe waits (as natcheck/dhtprobe.Measure does:
// the join runs in its Discover step), bootstraps it. It returns the probe's result and the
// NAT_PROBE requests the node sent from pubIP once its join had begun: the reachability
// check's own probes.
func joinDuringProbe(t *testing.T, ctx context.Context, v *testnet.VNet, vn *vnet.Net, listen, pubIP string) (*dht.Node, dht.ProbeResult, int32) {
	t.Helper()
	var joining atomic.Bool
	var checkProbes atomic.Int32
	lookups := make(chan struct{}, 1)
	v.AddChunkFilter(func(c vnet.Chunk) bool {
		src, ok := c.SourceAddr().(*net.UDPAddr)
		if !ok || src.IP.String() != pubIP {
			return true
		}
		m, err := dht.ParseMessage(c.UserData())
		if err != nil || m.Response {
			return true
		}
		switch {
		case m.Command == dht.CmdFindNode:
			select { // the join's own-id lookup: the join has begun
			case lookups <- struct{}{}:
			default:
			}
		case m.Command == dht.CmdNATProbe && joining.Load():
			checkProbes.Add(1)
		}
		return true
	})
	n := dht.New(dht.Config{Net: vn, ListenAddr: listen, Mode: dht.ModeAdaptive, Bootstrap: v.Bootstrap})
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	joined := make(chan error, 1)
	res, err := n.NATProbe(ctx, v.Bootstrap[0], dht.ProbeOtherNode, func(_ time.Duration, isolated bool) time.Duration {
		if !isolated {
			t.Error("the probe is not isolated: the server named no helper")
		}
		joining.Store(true)
		go func() { joined <- n.Bootstrap(ctx) }()
		select {
		case <-lookups:
		case <-ctx.Done():
		}
		// natcheck's wait at a 70 ms round trip: shorter than the check's floor
		// (minPersistenceWait), which the record keeps.
		return 300 * time.Millisecond
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-joined; err != nil {
		t.Fatal(err)
	}
	if pub, seenBy := dht.PublicAddrSeenBy(n, dht.IPv4); seenBy < 2 || pub.Addr().String() != pubIP {
		t.Fatalf("public address %s seen by %d: the join had no reachability to check", pub, seenBy)
	}
	return n, res, checkProbes.Load()
}

// probeVNet returns a vnet with five DHT servers, not started, and a
// context that ends with the test (at the latest after 20 s, scaled).
func probeVNet(t *testing.T) (context.Context, *testnet.VNet) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Scaled(20*time.Second))
	t.Cleanup(cancel)
	v, err := testnet.NewVNet()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.AddDHTServers(5); err != nil {
		t.Fatal(err)
	}
	return ctx, v
}

// TestAdaptiveJoinUsesAFirewalledProbe: an adaptive node behind a port-restricted NAT whose
// isolated other-node probe, made while it joins, got no packet stays ephemeral without
// probing again. Before, its join's reachability check asked the close nodes for probes of
// its own and waited persistenceWait (at least 0.5 s) for packets that never come: every
// swarm behind a home router was ready half a second after an ephemeral one.
func TestAdaptiveJoinUsesAFirewalledProbe(t *testing.T) {
	ctx, v := probeVNet(t)
	lan, err := v.AddNAT("10.7.0.0/24", "203.0.113.107", &vnet.NATType{
		MappingBehavior: vnet.EndpointIndependent, FilteringBehavior: vnet.EndpointAddrPortDependent})
	if err != nil {
		t.Fatal(err)
	}
	vn, err := v.AddLANHost(lan, "10.7.0.2")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	n, res, probes := joinDuringProbe(t, ctx, v, vn, "10.7.0.2:0", "203.0.113.107")
	if res.Arrived {
		t.Fatalf("the probe's packet passed a port-restricted NAT: %+v", res)
	}
	if probes != 0 {
		t.Errorf("the join's reachability check sent %d probes of its own", probes)
	}
	if n.Persistent() {
		t.Error("a node behind a port-restricted NAT became persistent")
	}
}

// TestAdaptiveJoinUsesAReachableProbe: a public adaptive node whose isolated other-node
// probe, made while it joins, got its packet from a node it never sent to becomes persistent
// at the address the DHT sees, without probing again.
func TestAdaptiveJoinUsesAReachableProbe(t *testing.T) {
	ctx, v := probeVNet(t)
	vn, err := v.AddPublic("203.0.113.60")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	n, res, probes := joinDuringProbe(t, ctx, v, vn, "203.0.113.60:49737", "203.0.113.60")
	if !res.Arrived || !res.Unsolicited {
		t.Fatalf("the probe's packet did not come from a stranger: %+v", res)
	}
	if probes != 0 {
		t.Errorf("the join's reachability check sent %d probes of its own", probes)
	}
	if st := n.Stats(); !st.Persistent || st.ID != dht.NodeID(n.LocalAddr()) {
		t.Errorf("a reachable adaptive node stayed ephemeral: %+v", st)
	}
}
