package holepunch_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/natcheck"
)

// familyCell is one pair of the IPv6 grid: the path it must take and
// whether that path must run over IPv6 (a cell where either family may
// win says so with anyFamily).
type familyCell struct {
	name           string
	client, server *peer
	want           holepunch.Path
	v6, anyFamily  bool
	// oneLink6: both hosts sit on one IPv6 link (two public hosts on the
	// internet segment's /64), so a path over IPv6 is a lan path.
	oneLink6 bool
}

// TestConnectIPv6NATLab is issue 20's IPv6 grid. Every host sits behind a
// router of one NAT type on IPv4 that also routes IPv6 through a stateful
// firewall (no translation, unsolicited packets dropped). For every ordered
// pair of NAT types a client dials a server by key and echoes 64 KiB: the
// path must be direct in every cell, and over IPv6 where IPv4 alone would
// need the relay (symmetric to symmetric). Hosts with IPv6 only connect to
// each other and to dual-stack hosts; hosts behind IPv4-only routers in the
// same lab connect exactly as before (the relay between two symmetric
// NATs, IPv4 paths). Root only.
func TestConnectIPv6NATLab(t *testing.T) {
	lab := natlab.New(t)
	lab.EnableIPv6()
	var boot6 []netip.AddrPort
	turn := withTURN(t)
	boot := labDHT(t, lab, 3, func(i int, h *natlab.Host, c *dht.Config) {
		turn(i, h, c)
		a := netip.AddrPortFrom(h.IP6(), testnet.LabPort)
		c.ListenAddr6 = a.String()
		boot6 = append(boot6, a)
	})
	boot = append(boot, boot6...)
	dual := func(h *natlab.Host) *peer {
		return labPeerWith(t, h, boot, func(c *dht.Config) { c.ListenAddr6 = netip.AddrPortFrom(h.IP6(), 0).String() })
	}

	types := natlab.Types()
	servers := map[natlab.NATType]*peer{}
	clients := map[natlab.NATType]*peer{}
	for _, typ := range types {
		servers[typ] = dual(lab.AddRouter(natlab.RouterConfig{Type: typ, IPv6: true}).AddHost("s"))
		clients[typ] = dual(lab.AddRouter(natlab.RouterConfig{Type: typ, IPv6: true}).AddHost("c"))
	}
	for typ, p := range servers {
		r := p.ep.NAT()
		if string(r.Class) != string(typ) || r.IPv6 == nil {
			t.Fatalf("server behind %s measured IPv4 %s (filtering probes %+v), IPv6 %+v", typ, r.Class, r.Probes, r.IPv6)
		}
		want6 := natcheck.ClassFirewall // a router's stateful firewall
		if typ == natlab.Open {
			want6 = natcheck.ClassOpen // a public host
		}
		if r.IPv6.Mapping != natcheck.MappingNone || r.IPv6.Class != want6 {
			t.Fatalf("server behind %s measured IPv6 as %s (%s)", typ, r.IPv6.Class, r.IPv6.Mapping)
		}
	}
	var cells []familyCell
	for _, ct := range types {
		for _, st := range types {
			both := ct == natlab.Symmetric && st == natlab.Symmetric
			cells = append(cells, familyCell{fmt.Sprintf("%s-to-%s", ct, st), clients[ct], servers[st], holepunch.PathDirect, both, !both,
				ct == natlab.Open && st == natlab.Open})
		}
	}
	only6 := func(name string) *peer {
		return labPeer(t, lab.AddRouter(natlab.RouterConfig{Type: natlab.Symmetric, IPv6: true}).AddHostIPv6Only(name), boot6)
	}
	v6c, v6s := only6("c"), only6("s")
	old4 := func(typ natlab.NATType, name string) *peer {
		return labPeer(t, lab.AddRouter(natlab.RouterConfig{Type: typ}).AddHost(name), boot)
	}
	symC, symS, prcC, prcS := old4(natlab.Symmetric, "c"), old4(natlab.Symmetric, "s"), old4(natlab.PortRestricted, "c"), old4(natlab.PortRestricted, "s")
	cells = append(cells,
		familyCell{"ipv6only-to-ipv6only", v6c, v6s, holepunch.PathDirect, true, false, false},
		familyCell{"ipv6only-to-symmetric", v6c, servers[natlab.Symmetric], holepunch.PathDirect, true, false, false},
		familyCell{"symmetric-to-ipv6only", clients[natlab.Symmetric], v6s, holepunch.PathDirect, true, false, false},
		familyCell{"ipv4only-symmetric-to-symmetric", symC, symS, holepunch.PathRelay, false, false, false},
		familyCell{"ipv4only-portrestricted-to-portrestricted", prcC, prcS, holepunch.PathDirect, false, false, false},
		familyCell{"symmetric-to-ipv4only-symmetric", clients[natlab.Symmetric], symS, holepunch.PathRelay, false, false, false},
		familyCell{"portrestricted-to-ipv4only-portrestricted", clients[natlab.PortRestricted], prcS, holepunch.PathDirect, false, false, false},
	)
	for _, p := range []*peer{v6s, symS, prcS} {
		p.listen(t)
	}
	for _, p := range servers {
		p.listen(t)
	}
	results := map[string]string{}
	for _, c := range cells {
		t.Run(c.name, func(t *testing.T) {
			conn, s := connectEcho(t, c.client, c.server, 40*time.Second, bytes.Repeat([]byte{0x66}, 64<<10), results, c.name)
			fam := "v4"
			if conn.Remote().Addr().Is6() {
				fam = "v6"
			}
			results[c.name] = fmt.Sprintf("%s/%s %dms", conn.Path(), fam, conn.ConnectTime.Milliseconds())
			want := c.want
			if c.oneLink6 && conn.Remote().Addr().Is6() {
				want = holepunch.PathLAN
			}
			if conn.Path() != want || s.Path() != want {
				t.Fatalf("path client %s server %s, want %s", conn.Path(), s.Path(), want)
			}
			if !c.anyFamily && conn.Remote().Addr().Is6() != c.v6 {
				t.Fatalf("path to %s, want IPv6 %v", conn.Remote(), c.v6)
			}
		})
	}
	t.Log("\n" + formatFamilyGrid(types, cells, results))
}

// formatFamilyGrid prints the grid (rows clients, columns servers) and the
// extra cells, each as path/family and connect time.
func formatFamilyGrid(types []natlab.NATType, cells []familyCell, results map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-16s", "client\\server")
	for _, st := range types {
		fmt.Fprintf(&b, "%-18s", st)
	}
	b.WriteString("\n")
	for _, ct := range types {
		fmt.Fprintf(&b, "%-16s", ct)
		for _, st := range types {
			fmt.Fprintf(&b, "%-18s", results[fmt.Sprintf("%s-to-%s", ct, st)])
		}
		b.WriteString("\n")
	}
	for _, c := range cells[len(types)*len(types):] {
		fmt.Fprintf(&b, "%-44s %s\n", c.name, results[c.name])
	}
	return b.String()
}
