package main

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/node"
)

// TestNetcheckIPv6NATLab: netcheck reports IPv4 and IPv6 separately. A
// dual-stack host behind a symmetric NAT whose router forwards IPv6 through
// a stateful firewall reads "symmetric" for IPv4 and "firewall" (no
// translation, address-and-port-dependent filtering) for IPv6, its own
// address being its IPv6 public one; a host with IPv6 alone gets no IPv4
// answer and the same IPv6 report; the human report names both. Given
// IPv4 bootstrap nodes only, netcheck finds the IPv6 ones through them.
// Root only.
func TestNetcheckIPv6NATLab(t *testing.T) {
	lab := natlab.New(t)
	lab.EnableIPv6()
	var boot6 []netip.AddrPort
	boot4 := testnet.LabDHT(t, lab, 3, func(_ int, h *natlab.Host, c *dht.Config) {
		a := netip.AddrPortFrom(h.IP6(), testnet.LabPort)
		c.ListenAddr6 = a.String()
		boot6 = append(boot6, a)
	})
	r := lab.AddRouter(natlab.RouterConfig{Type: natlab.Symmetric, IPv6: true})
	dual, only6 := r.AddHost("a"), r.AddHostIPv6Only("b")
	for _, c := range []struct {
		name    string
		host    *natlab.Host
		listen  string
		listen6 string
		boot    []netip.AddrPort
		want4   natcheck.Class
	}{
		{"dual-stack", dual, netip.AddrPortFrom(dual.IP(), 0).String(), netip.AddrPortFrom(dual.IP6(), 0).String(), boot4, natcheck.ClassSymmetric},
		{"ipv6-only", only6, "[::]:0", "", boot6, natcheck.ClassUnknown},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), netcheckTestTimeout)
			defer cancel()
			rep, err := node.Netcheck(ctx, node.NetcheckConfig{Net: c.host.Net(), ListenAddr: c.listen, ListenAddr6: c.listen6, Bootstrap: c.boot})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Class != c.want4 || rep.IPv6 == nil {
				t.Fatalf("IPv4 %s, IPv6 %+v", rep.Class, rep.IPv6)
			}
			r6 := *rep.IPv6
			if r6.Class != natcheck.ClassFirewall || r6.Mapping != natcheck.MappingNone ||
				r6.Filtering != natcheck.FilteringAddressAndPortDependent || r6.PublicAddr.Addr() != c.host.IP6() {
				t.Fatalf("IPv6 report %s (%s, %s) at %s; filtering probes %+v", r6.Class, r6.Mapping, r6.Filtering, r6.PublicAddr, r6.Probes)
			}
			var out bytes.Buffer
			printReport(&out, rep)
			t.Logf("\n%s", out.String())
			if !strings.Contains(out.String(), "IPv4\n") || !strings.Contains(out.String(), "\nIPv6\n") || !strings.Contains(out.String(), "firewall") {
				t.Fatalf("report does not name both families:\n%s", out.String())
			}
		})
	}
}
