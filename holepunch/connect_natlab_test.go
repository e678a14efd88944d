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
	"github.com/swarmdb/swarmdb/natcheck"
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
	return labPeerMeasured(t, h, boot, tweak, false)
}

// labPeerMappingOnly starts a peer whose endpoint knows only its NAT's
// mapping until the test ends, as when a dial goes out before the
// filtering probes have ended (holepunch's waitNAT lets it): its signaling
// states the filtering unknown.
func labPeerMappingOnly(t testing.TB, h *natlab.Host, boot []netip.AddrPort) *peer {
	t.Helper()
	return labPeerMeasured(t, h, boot, nil, true)
}

func labPeerMeasured(t testing.TB, h *natlab.Host, boot []netip.AddrPort, tweak func(*dht.Config), mappingOnly bool) *peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	node, link, tn := labNode(t, h, boot, tweak)
	// The endpoint measures the NAT before the node joins the DHT (the
	// measurement's Discover step bootstraps it), so the filtering probe
	// comes from a node that never heard from us.
	var epTweak func(*holepunch.EndpointConfig)
	if mappingOnly {
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		epTweak = func(c *holepunch.EndpointConfig) { c.MeasureNAT = mappingFirst(c.MeasureNAT, release) }
	}
	p := newPeer(t, node, link, boot, tn, epTweak)
	if mappingOnly {
		if r := p.ep.WaitMapping(ctx); r.Mapping == natcheck.MappingUnknown || r.Filtering != natcheck.FilteringUnknown {
			t.Fatalf("%s: early report %+v, want a mapping and no filtering", h.Name(), r)
		}
		return p
	}
	if r := p.ep.WaitNAT(ctx); r.Class == "" {
		t.Fatalf("%s: no nat measurement", h.Name())
	}
	return p
}

// labNode starts an ephemeral DHT node on lab host h, its config adjusted
// by tweak, with a link for an endpoint.
func labNode(t testing.TB, h *natlab.Host, boot []netip.AddrPort, tweak func(*dht.Config)) (*dht.Node, *dhtlink.Link, transport.Net) {
	t.Helper()
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
	return node, link, tn
}

// mappingFirst hands the endpoint the measurement's mapping with the
// filtering unknown and holds the whole report back until release closes.
// The endpoint bounds its first measurement (10 s); when that ends first,
// the measurement fails, so the endpoint keeps the early report: the grid's
// later cells run long after 10 s, and must still be dialled knowing only
// the mapping.
func mappingFirst(measure holepunch.MeasureNATFunc, release <-chan struct{}) holepunch.MeasureNATFunc {
	return func(ctx context.Context, early func(natcheck.Report)) (natcheck.Report, error) {
		r, err := measure(ctx, nil)
		if err != nil {
			return r, err
		}
		partial := r
		partial.Filtering, partial.Class, partial.Probes = natcheck.FilteringUnknown, natcheck.ClassUnknown, nil
		if r.Mapping == natcheck.MappingEndpointDependent {
			partial.Class = natcheck.ClassSymmetric
		}
		early(partial)
		select {
		case <-release:
			return r, nil
		case <-ctx.Done():
			return partial, ctx.Err()
		}
	}
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
//
// The grid runs twice: with clients that have measured their NAT, and with
// clients that know only its mapping (a dial before the filtering probes
// end states the filtering unknown, which birthdayRole takes for
// port-restricted); the paths must be the same.
func TestConnectNATLab(t *testing.T) {
	lab := natlab.New(t)
	boot := labDHT(t, lab, 3, withTURN(t))

	types := natlab.Types()
	servers := map[natlab.NATType]*peer{}
	clients := map[natlab.NATType]*peer{}
	early := map[natlab.NATType]*peer{}
	for _, typ := range types {
		servers[typ] = labPeer(t, lab.AddRouter(natlab.RouterConfig{Type: typ}).AddHost("s"), boot)
		clients[typ] = labPeer(t, lab.AddRouter(natlab.RouterConfig{Type: typ}).AddHost("c"), boot)
		early[typ] = labPeerMappingOnly(t, lab.AddRouter(natlab.RouterConfig{Type: typ}).AddHost("e"), boot)
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
			cells = append(cells, gridCell{fmt.Sprintf("%s-to-%s%s", ct, st, mappingOnlySuffix), early[ct], servers[st], want})
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
			if r := c.client.ep.NAT(); strings.HasSuffix(c.name, mappingOnlySuffix) && r.Filtering != natcheck.FilteringUnknown {
				t.Fatalf("the client knows its filtering (%s) in a mapping-only cell", r.Filtering)
			}
			conn, s := connectEcho(t, c.client, c.server, 40*time.Second, bytes.Repeat([]byte{0x5d}, 1<<20), results, c.name)
			results[c.name] = fmt.Sprintf("%s %dms", conn.Path(), conn.ConnectTime.Milliseconds())
			if conn.Path() != c.want || s.Path() != c.want {
				t.Fatalf("path client %s server %s, want %s", conn.Path(), s.Path(), c.want)
			}
		})
	}
	t.Log("\n" + formatGrid(types, results, ""))
	t.Log("clients that know only their mapping:\n" + formatGrid(types, results, mappingOnlySuffix))
}

// mappingOnlySuffix names the grid cells whose client knows only its
// NAT's mapping.
const mappingOnlySuffix = "-mapping-only"

// formatGrid prints the grid of the cells named with suffix: rows are
// clients, columns servers.
func formatGrid(types []natlab.NATType, results map[string]string, suffix string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-16s", "client\\server")
	for _, st := range types {
		fmt.Fprintf(&b, "%-16s", st)
	}
	b.WriteString("\n")
	for _, ct := range types {
		fmt.Fprintf(&b, "%-16s", ct)
		for _, st := range types {
			fmt.Fprintf(&b, "%-16s", results[fmt.Sprintf("%s-to-%s%s", ct, st, suffix)])
		}
		b.WriteString("\n")
	}
	if suffix != "" {
		return b.String()
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
