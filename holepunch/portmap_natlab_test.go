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
	"github.com/swarmdb/swarmdb/portmap"
)

// labMappedPeer is labPeer behind a router that runs miniupnpd: before the
// endpoint measures its NAT, a portmap client maps the node's UDP port, and
// the endpoint advertises the mapped address.
func labMappedPeer(t testing.TB, h *natlab.Host, boot []netip.AddrPort) *peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	link := dhtlink.New()
	var tn transport.Net = h.Net()
	node := dht.New(dht.Config{
		Net: tn, ListenAddr: h.IP().String() + ":0", Bootstrap: boot, Mode: dht.ModeEphemeral,
		OnSignal: link.HandleSignal,
	})
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	pm, err := portmap.New(portmap.Config{Net: tn, Gateway: func() (netip.Addr, error) { return h.Gateway(), nil },
		LocalIP: h.IP(), UDPPort: node.LocalAddr().Port()})
	if err != nil {
		t.Fatal(err)
	}
	if err := pm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pm.Close() })
	select {
	case <-pm.Ready():
	case <-ctx.Done():
		t.Fatal("no port mapping outcome")
	}
	m, ok := pm.Mapping(portmap.UDP)
	if !ok {
		t.Fatalf("%s: no port mapping: %v", h.Name(), pm.Status().Err)
	}
	p := newPeer(t, node, link, boot, tn, func(c *holepunch.EndpointConfig) {
		c.Mapped = func() netip.AddrPort { return m.External }
	})
	if r := p.ep.WaitNAT(ctx); r.Class == "" {
		t.Fatalf("%s: no nat measurement", h.Name())
	}
	return p
}

// TestConnectPortMapNATLab is the part of the connect grid that a router
// port mapping changes (issue 20): symmetric NATs with and without
// miniupnpd, against each other and against a port-restricted NAT. Both
// symmetric: relay without a mapping, direct once either side has one.
// Symmetric against port-restricted: direct either way, by birthday
// punching (seconds) without a mapping, by plain ICE to the mapped address
// (tens of milliseconds) with one on either side. The connect times are
// logged as a grid. Root and miniupnpd only.
func TestConnectPortMapNATLab(t *testing.T) {
	natlab.RequireMiniUPnPd(t)
	lab := natlab.New(t)
	boot := labDHT(t, lab, 3, withTURN(t))

	peers := map[string]*peer{}
	for _, kind := range []string{"symmetric", "portrestricted"} {
		typ := natlab.NATType(kind)
		for _, role := range []string{"c", "s"} {
			peers[kind+"-"+role] = labPeer(t, lab.AddRouter(natlab.RouterConfig{Type: typ}).AddHost(role), boot)
			r := lab.AddRouter(natlab.RouterConfig{Type: typ})
			r.StartMiniUPnPd(natlab.MiniUPnPdConfig{})
			peers[kind+"+upnp-"+role] = labMappedPeer(t, r.AddHost(role), boot)
		}
	}
	for name, p := range peers {
		nat := p.ep.NAT()
		t.Logf("%-22s measured %s (mapping %s, filtering %s)", name, nat.Class, nat.Mapping, nat.Filtering)
	}
	cells := []struct {
		client, server string
		want           holepunch.Path
	}{
		{"symmetric", "symmetric", holepunch.PathRelay},
		{"symmetric+upnp", "symmetric", holepunch.PathDirect},
		{"symmetric", "symmetric+upnp", holepunch.PathDirect},
		{"symmetric+upnp", "symmetric+upnp", holepunch.PathDirect},
		{"symmetric", "portrestricted", holepunch.PathDirect},
		{"symmetric", "portrestricted+upnp", holepunch.PathDirect},
		{"portrestricted", "symmetric", holepunch.PathDirect},
		{"portrestricted+upnp", "symmetric", holepunch.PathDirect},
		{"symmetric+upnp", "portrestricted", holepunch.PathDirect},
		{"portrestricted", "symmetric+upnp", holepunch.PathDirect},
	}
	for _, name := range []string{"symmetric-s", "symmetric+upnp-s", "portrestricted-s", "portrestricted+upnp-s"} {
		peers[name].listen(t)
	}
	results := map[string]string{}
	for _, c := range cells {
		name := c.client + "-to-" + c.server
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			client, server := peers[c.client+"-c"], peers[c.server+"-s"]
			conn, err := client.ep.Connect(ctx, server.pub, nil)
			if err != nil {
				results[name] = "FAIL"
				t.Fatal(err)
			}
			defer conn.Close()
			s := server.accept(t)
			defer s.Close()
			echo(t, conn, s, bytes.Repeat([]byte{0x5d}, 64<<10))
			waitSettled(t, conn)
			results[name] = fmt.Sprintf("%s %dms", conn.Path(), conn.ConnectTime.Milliseconds())
			if conn.Path() != c.want || s.Path() != c.want {
				t.Fatalf("path client %s server %s, want %s", conn.Path(), s.Path(), c.want)
			}
		})
	}
	var b strings.Builder
	for _, c := range cells {
		fmt.Fprintf(&b, "%-22s -> %-22s %s\n", c.client, c.server, results[c.client+"-to-"+c.server])
	}
	t.Log("\n" + b.String())
}
