package holepunch_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/transport/v2"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/holepunch/dhtlink"
	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/turnserver"
)

// labDHT starts the lab's public DHT nodes.
func labDHT(t testing.TB, lab *natlab.Lab, n int, tweak func(i int, h *natlab.Host, c *dht.Config)) []netip.AddrPort {
	return testnet.LabDHT(t, lab, n, tweak)
}

// labPeer starts a node with an endpoint on a lab host and waits for its
// NAT measurement.
func labPeer(t testing.TB, h *natlab.Host, boot []netip.AddrPort) *peer {
	t.Helper()
	return labPeerWith(t, h, boot, nil)
}

// labPeerWith is labPeer with the node's config adjusted by tweak.
func labPeerWith(t testing.TB, h *natlab.Host, boot []netip.AddrPort, tweak func(*dht.Config)) *peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	link := dhtlink.New()
	var tn transport.Net = h.Net()
	cfg := dht.Config{
		Net: tn, ListenAddr: netip.AddrPortFrom(h.IP(), 0).String(), Bootstrap: boot, Mode: dht.ModeEphemeral,
		OnSignal: link.HandleSignal,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	node := dht.New(cfg)
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	// The endpoint measures the NAT before the node joins the DHT (the
	// measurement's Discover step bootstraps it), so the filtering probe
	// comes from a node that never heard from us.
	p := newPeer(t, node, link, boot, tn, nil)
	if r := p.ep.WaitNAT(ctx); r.Class == "" {
		t.Fatalf("%s: no nat measurement", h.Name())
	}
	return p
}

// gridCell is one client/server pair of the grid and the path it must take.
type gridCell struct {
	name           string
	client, server *peer
	want           holepunch.Path
}

// TestConnectNATLab is issue 4's grid: for every ordered pair of NAT types
// a client dials a server by key and echoes 1 MiB, and the path must be
// direct wherever one side has endpoint-independent mapping, relay when
// both are symmetric, and lan for two hosts behind one NAT. Root only.
func TestConnectNATLab(t *testing.T) {
	lab := natlab.New(t)
	boot := labDHT(t, lab, 3, withTURN(t))

	types := natlab.Types()
	servers := map[natlab.NATType]*peer{}
	clients := map[natlab.NATType]*peer{}
	for _, typ := range types {
		servers[typ] = labPeer(t, lab.AddRouter(natlab.RouterConfig{Type: typ}).AddHost("s"), boot)
		clients[typ] = labPeer(t, lab.AddRouter(natlab.RouterConfig{Type: typ}).AddHost("c"), boot)
	}
	for typ, p := range servers {
		if r := p.ep.NAT(); string(r.Class) != string(typ) {
			t.Fatalf("server behind %s measured its NAT as %s (mapping %s, filtering %s; %d of %d nodes answered, %d agree; servers %+v; filtering probes %+v)",
				typ, r.Class, r.Mapping, r.Filtering, r.Answered, r.Queried, r.Agreeing, r.Servers, r.Probes)
		}
	}
	var cells []gridCell
	for _, ct := range types {
		for _, st := range types {
			want := holepunch.PathDirect
			if ct == natlab.Symmetric && st == natlab.Symmetric {
				want = holepunch.PathRelay
			}
			cells = append(cells, gridCell{fmt.Sprintf("%s-to-%s", ct, st), clients[ct], servers[st], want})
		}
	}
	home := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted})
	cells = append(cells, gridCell{"same-nat", labPeer(t, home.AddHost("c"), boot), labPeer(t, home.AddHost("s"), boot), holepunch.PathLAN})
	double := lab.AddDoubleNAT(natlab.RouterConfig{Type: natlab.PortRestricted})
	cells = append(cells, gridCell{"double-nat-to-portrestricted", labPeer(t, double.AddHost("c"), boot), servers[natlab.PortRestricted], holepunch.PathDirect})

	for _, c := range cells {
		c.server.listen(t)
	}
	results := map[string]string{}
	for _, c := range cells {
		t.Run(c.name, func(t *testing.T) {
			conn, s := connectEcho(t, c.client, c.server, 40*time.Second, bytes.Repeat([]byte{0x5d}, 1<<20), results, c.name)
			results[c.name] = fmt.Sprintf("%s %dms", conn.Path, conn.ConnectTime.Milliseconds())
			if conn.Path != c.want || s.Path != c.want {
				t.Fatalf("path client %s server %s, want %s", conn.Path, s.Path, c.want)
			}
		})
	}
	t.Log("\n" + formatGrid(types, results))
}

// formatGrid prints the grid: rows are clients, columns servers.
func formatGrid(types []natlab.NATType, results map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-16s", "client\\server")
	for _, st := range types {
		fmt.Fprintf(&b, "%-16s", st)
	}
	b.WriteString("\n")
	for _, ct := range types {
		fmt.Fprintf(&b, "%-16s", ct)
		for _, st := range types {
			fmt.Fprintf(&b, "%-16s", results[fmt.Sprintf("%s-to-%s", ct, st)])
		}
		b.WriteString("\n")
	}
	for _, k := range []string{"same-nat", "double-nat-to-portrestricted"} {
		fmt.Fprintf(&b, "%-30s %s\n", k, results[k])
	}
	return b.String()
}

// withTURN makes the first public DHT node serve a TURN relay and offer it
// over the DHT.
func withTURN(t testing.TB) func(int, *natlab.Host, *dht.Config) {
	return func(i int, h *natlab.Host, c *dht.Config) {
		if i != 0 {
			return
		}
		srv := turnserver.New(turnserver.Config{Net: h.Net(), ListenAddr: h.IP().String() + ":3478"})
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		c.OnTURN = dhtlink.TURNHandler(srv)
	}
}
