package natcheck_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/demux"
	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/natcheck/dhtprobe"
)

// monitorLabTimeout bounds each wait for a report in the lab. A Check
// there takes about a second (two probe waits of 300 ms plus Bindings).
const monitorLabTimeout = 30 * time.Second

// TestMonitorNATLab moves a host, with a running DHT node and Monitor,
// from a full-cone router's LAN to a port-restricted router's LAN (issue 3
// remainder, issue 9 "local address change"). The monitor must notice the
// local address change through transport.Net and re-measure, and the new
// report must show the new router's public IP and type. The node keeps its
// socket (bound to 0.0.0.0) across the move, as a laptop's would.
//
// Root only: natlab skips without root, ip and nft, and fails with CI=true.
func TestMonitorNATLab(t *testing.T) {
	// Registered first, so it runs after every other cleanup (LIFO).
	testutil.CheckLeaks(t)
	lab := natlab.New(t)
	var servers []netip.AddrPort
	var nodes []*dht.Node
	for i := range 3 {
		h := lab.AddPublicHost(fmt.Sprintf("dht%d", i))
		n := dht.New(dht.Config{Net: h.Net(), ListenAddr: h.IP().String() + ":49737", Mode: dht.ModePersistent, Bootstrap: servers[:min(len(servers), 1)]})
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		servers = append(servers, n.LocalAddr())
		nodes = append(nodes, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), monitorLabTimeout)
	defer cancel()
	for _, n := range nodes {
		// The servers know each other, so the other-node probe has a helper.
		if err := n.Bootstrap(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rA := lab.AddRouter(natlab.RouterConfig{Name: "home", Type: natlab.FullCone})
	rB := lab.AddRouter(natlab.RouterConfig{Name: "cafe", Type: natlab.PortRestricted})
	host := rA.AddHost("laptop")

	p := dhtprobe.New()
	node := dht.New(dht.Config{Net: host.Net(), ListenAddr: "0.0.0.0:0", Mode: dht.ModeEphemeral, Bootstrap: servers[:1],
		RequestTimeout: 500 * time.Millisecond})
	node.Handle(demux.STUN, p.HandlePacket)
	p.Attach(node)
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	defer node.Close()

	reports := make(chan natcheck.Report, 8)
	mon := natcheck.NewMonitor(natcheck.MonitorConfig{
		Net:        host.Net(),
		Interval:   200 * time.Millisecond,
		MinRecheck: time.Second,
		Reflexive: func() []natcheck.ReflexiveReport {
			var out []natcheck.ReflexiveReport
			for _, o := range node.Observed() {
				out = append(out, natcheck.ReflexiveReport{By: o.By, Addr: o.Addr})
			}
			return out
		},
		CheckConfig: natcheck.CheckConfig{
			Prober:    p,
			Servers:   servers[:1],
			Local:     node.LocalAddr(),
			ProbeWait: 300 * time.Millisecond,
			Discover: func(ctx context.Context) ([]netip.AddrPort, error) {
				return servers, node.Bootstrap(ctx)
			},
		},
		OnChange: func(_, n natcheck.Report) { reports <- n },
	})
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	defer mon.Close()

	next := func(stage string) natcheck.Report {
		t.Helper()
		select {
		case r := <-reports:
			t.Logf("%s: %s public %s mapping %s filtering %s confidence %s (%d/%d agree)",
				stage, r.Class, r.PublicAddr, r.Mapping, r.Filtering, r.Confidence, r.Agreeing, r.Answered)
			return r
		case <-time.After(monitorLabTimeout):
			t.Fatalf("%s: no report within %v (stats %+v)", stage, monitorLabTimeout, mon.Stats())
		}
		return natcheck.Report{}
	}
	first := next("before the move")
	if first.Class != natcheck.ClassFullCone || first.PublicAddr.Addr() != rA.PublicIP() {
		t.Fatalf("first report %s at %s, want fullcone at %s", first.Class, first.PublicAddr, rA.PublicIP())
	}

	moved := time.Now()
	host = host.MoveTo(rB)
	second := next("after the move")
	t.Logf("noticed and re-measured %v after the move (poll 200 ms, confirm 2 polls); stats %+v",
		time.Since(moved).Round(time.Millisecond), mon.Stats())
	if second.PublicAddr.Addr() != rB.PublicIP() {
		t.Fatalf("after the move: public %s, want IP %s", second.PublicAddr, rB.PublicIP())
	}
	if second.Class != natcheck.ClassPortRestricted {
		t.Fatalf("after the move: class %s, want portrestricted", second.Class)
	}
	if s := mon.Stats(); s.ByReason["local-address"] < 1 {
		t.Fatalf("re-measurement not triggered by the local address change: %+v", s)
	}
	if rep, _ := mon.Report(); rep.PublicAddr != second.PublicAddr {
		t.Fatalf("Report %s, OnChange said %s", rep.PublicAddr, second.PublicAddr)
	}
	if !rB.LAN().Contains(host.IP()) || host.Router() != rB || len(rA.Hosts()) != 0 || len(rB.Hosts()) != 1 {
		t.Fatalf("moved host: IP %s (want one in %s), %d hosts left on %s, %d on %s",
			host.IP(), rB.LAN(), len(rA.Hosts()), rA.Name(), len(rB.Hosts()), rB.Name())
	}
}
