package natlab

import (
	"fmt"
	"net/netip"
	"strings"
)

// IPv6 in the lab. EnableIPv6 turns the internet segment into an IPv6
// network too: the internet namespace becomes its router (2001:db8::1),
// public hosts added afterwards get an IPv6 address beside their IPv4
// one, and a router made with RouterConfig.IPv6 routes a /64 to its LAN
// and forwards IPv6 with no translation, only a stateful firewall, as home
// routers do (RFC 6092): packets of flows a LAN host started come back
// (ct state established,related), everything else from the WAN is
// dropped. Its IPv4 side keeps its NAT type. Hosts on its LAN get both
// families (Router.AddHost), or IPv6 alone (Router.AddHostIPv6Only).
//
// Address plan (RFC 3849 documentation prefix, only inside the lab):
//
//	internet segment   2001:db8::/64, router 2001:db8::1, a public host or
//	                   router WAN 2001:db8::<its IPv4 last octet, in hex>
//	router N's LAN     2001:db8:N::/64 (N in hex), gateway ::1, hosts from ::a
var internet6Prefix = netip.MustParsePrefix("2001:db8::/64")

// v6Table is the IPv6 firewall table of a router, apart from the IPv4 NAT
// table so that reloading either leaves the other alone.
const v6Table = "natlab6"

// bridgeMAC is the fixed MAC address of a bridge that routes (the internet
// segment's, n = 0, and router n's LAN bridge). Without one, a Linux bridge
// takes the lowest MAC of its ports and changes it when a port with a lower
// one is added; neighbours that resolved the bridge's address before keep
// sending to the old MAC, and the bridge hands such frames up as addressed
// to another host, which IP drops (PACKET_OTHERHOST) until the neighbour
// entry is probed again, up to half a minute later. Found when lab hosts
// lost their IPv6 replies at random: the internet namespace is their IPv6
// router.
func bridgeMAC(n int) string {
	return fmt.Sprintf("02:5d:b0:00:%02x:%02x", byte(n>>8), byte(n))
}

// noDAD turns IPv6 duplicate address detection off in a new namespace,
// before it has interfaces. Lab addresses are unique by construction, and
// DAD keeps an interface's link-local address tentative for a second or
// two, during which the kernel sends no neighbour solicitation for a
// packet it forwards (ndisc_send_ns needs a usable link-local source): a
// router would drop its LAN's first packets. Errors are ignored: a host
// without IPv6 has no such setting.
func noDAD(l *Lab, ns string) {
	_ = l.sysctl(ns, "net.ipv6.conf.all.accept_dad", "0")
	_ = l.sysctl(ns, "net.ipv6.conf.default.accept_dad", "0")
}

// EnableIPv6 makes the internet segment dual-stack (see above). Call it
// before adding the hosts and routers that should have IPv6, from the test
// goroutine; calling it again does nothing.
func (l *Lab) EnableIPv6() {
	l.t.Helper()
	l.mu.Lock()
	done := l.ipv6
	l.ipv6 = true
	l.mu.Unlock()
	if done {
		return
	}
	_ = l.sysctl(l.inet, "net.bridge.bridge-nf-call-ip6tables", "0")
	l.must(l.sysctl(l.inet, "net.ipv6.conf.all.forwarding", "1"))
	l.must(l.ip(l.inet, fmt.Sprintf("addr add %s/64 dev %s nodad", internet6Gateway(), inetIf)))
}

// IPv6Enabled reports whether EnableIPv6 was called.
func (l *Lab) IPv6Enabled() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ipv6
}

// Internet6Prefix returns the internet segment's IPv6 subnet.
func (l *Lab) Internet6Prefix() netip.Prefix { return internet6Prefix }

func internet6Gateway() netip.Addr { return internet6Prefix.Addr().Next() }

// public6 is the internet-segment IPv6 address that goes with the IPv4 one.
func public6(v4 netip.Addr) netip.Addr {
	a := internet6Prefix.Addr().As16()
	a[15] = v4.As4()[3]
	return netip.AddrFrom16(a)
}

// lan6Prefix is router n's IPv6 LAN.
func lan6Prefix(n int) netip.Prefix {
	a := internet6Prefix.Addr().As16()
	a[4], a[5] = byte(n>>8), byte(n)
	return netip.PrefixFrom(netip.AddrFrom16(a), 64)
}

// setupRouterIPv6 gives a top-level router its IPv6 WAN address, LAN
// prefix, routes and firewall.
func (l *Lab) setupRouterIPv6(r *Router, n int) {
	l.t.Helper()
	if !l.IPv6Enabled() {
		l.t.Fatalf("natlab: router %s wants IPv6: call Lab.EnableIPv6 first", r.name)
	}
	if r.parent != nil {
		l.t.Fatalf("natlab: router %s: IPv6 only on routers on the internet segment", r.name)
	}
	r.public6, r.lan6 = public6(r.public), lan6Prefix(n)
	l.must(l.ip(r.ns,
		fmt.Sprintf("addr add %s/64 dev %s nodad", r.public6, wanIf),
		fmt.Sprintf("addr add %s/64 dev %s nodad", r.lan6.Addr().Next(), lanIf),
		"route add default via "+internet6Gateway().String(),
	))
	l.must(l.sysctl(r.ns, "net.ipv6.conf.all.forwarding", "1"))
	_ = l.sysctl(r.ns, "net.bridge.bridge-nf-call-ip6tables", "0")
	l.must(l.ip(l.inet, fmt.Sprintf("route add %s via %s", r.lan6, r.public6)))
	l.must(l.nft(r.ns, firewall6Rules()))
}

// firewall6Rules is the IPv6 side of a home router (RFC 6092, REC-10 and
// REC-11 for UDP): forward what LAN hosts send and the replies to it,
// drop the rest from the WAN; accept neighbour discovery, without which
// nothing reaches the router at all; drop unsolicited WAN input to the
// router itself, as the IPv4 side does.
func firewall6Rules() string {
	var b strings.Builder
	fmt.Fprintf(&b, "add table ip6 %s\ndelete table ip6 %s\n", v6Table, v6Table)
	fmt.Fprintf(&b, "table ip6 %s {\n", v6Table)
	fmt.Fprintf(&b, "  chain input {\n    type filter hook input priority filter; policy accept;\n")
	fmt.Fprintf(&b, "    iifname %q ct state established,related accept\n", wanIf)
	fmt.Fprintf(&b, "    iifname %q icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n", wanIf)
	fmt.Fprintf(&b, "    iifname %q counter drop\n  }\n", wanIf)
	fmt.Fprintf(&b, "  chain forward {\n    type filter hook forward priority filter; policy drop;\n")
	fmt.Fprintf(&b, "    ct state established,related accept\n")
	fmt.Fprintf(&b, "    iifname %q accept\n", lanIf)
	// The counter lets tests see that unsolicited packets were dropped.
	fmt.Fprintf(&b, "    counter drop\n  }\n}\n")
	return b.String()
}

// PublicIP6 returns the router's IPv6 WAN address; zero without IPv6.
func (r *Router) PublicIP6() netip.Addr { return r.public6 }

// LAN6 returns the router's IPv6 LAN prefix; invalid without IPv6.
func (r *Router) LAN6() netip.Prefix { return r.lan6 }

// AddHostIPv6Only adds a host on the router's LAN with an IPv6 address and
// no IPv4 one at all. The router must have IPv6.
func (r *Router) AddHostIPv6Only(name string) *Host {
	r.lab.t.Helper()
	if !r.lan6.IsValid() {
		r.lab.t.Fatalf("natlab: router %s has no IPv6 for host %s", r.name, name)
	}
	return r.lab.addHostOf(r.name+"-"+name, r, false)
}

// allocLAN6 hands out the IPv6 address that goes with a host's IPv4 LAN
// octet (or the next one for an IPv6-only host).
func (r *Router) lan6Addr(octet byte) netip.Addr {
	a := r.lan6.Addr().As16()
	a[15] = octet
	return netip.AddrFrom16(a)
}

// IP6 returns the host's IPv6 address; zero without one.
func (h *Host) IP6() netip.Addr { return h.ip6 }

// setupHostIPv6 gives a host its IPv6 address and route: on the internet
// segment when the lab has IPv6, on its router's LAN when the router has.
// octet is the last byte of its IPv4 address (or its slot without one).
func (l *Lab) setupHostIPv6(h *Host, r *Router, octet byte) {
	l.t.Helper()
	var gw netip.Addr
	switch {
	case r == nil || r.typ == Open:
		if !l.IPv6Enabled() {
			return
		}
		h.ip6, gw = public6(netip.AddrFrom4([4]byte{0, 0, 0, octet})), internet6Gateway()
	case r.lan6.IsValid():
		h.ip6, gw = r.lan6Addr(octet), r.lan6.Addr().Next()
	default:
		return
	}
	l.must(l.ip(h.ns, fmt.Sprintf("addr add %s/64 dev %s nodad", h.ip6, hostIf), "route add default via "+gw.String()))
}
