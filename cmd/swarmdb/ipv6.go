package main

import (
	"fmt"
	"net/netip"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/node"
)

// IPv6 on the command line. Every command that opens a DHT socket takes
// --listen6 beside --listen: the IPv6 socket's address, or "off". Left out,
// a node bound to every interface (--listen 0.0.0.0:PORT) also listens on
// [::]:PORT when the host has IPv6, and a node bound to one IPv4 address
// has no IPv6 socket (dht.Config.ListenAddr6). An IPv6 --listen makes an
// IPv6-only node.

// listen6Flag adds --listen6 to f.
func listen6Flag(f *flags) *string {
	return f.String("listen6", "", `UDP address of the IPv6 socket ([ip]:port), or "off"; default: [::] on --listen's port when --listen binds every interface`)
}

// checkListen6 checks a --listen6 value.
func checkListen6(v string) error {
	if v == "" || v == dht.ListenOff {
		return nil
	}
	return checkHostPort("listen6", v)
}

// ipv6Fields are the IPv6 fields of the ready event: the IPv6 socket's
// address ("" without one).
func ipv6Fields(nd *node.Node, f map[string]any) {
	f["udp6"] = ""
	if a := nd.LocalAddr6(); a.IsValid() {
		f["udp6"] = a.String()
	}
}

// ipv6Human is the ready line of the IPv6 socket, "" without one.
func ipv6Human(nd *node.Node) string {
	if a := nd.LocalAddr6(); a.IsValid() {
		return fmt.Sprintf("  udp6        %s\n", a)
	}
	return ""
}

// familyOf names the address family of a connection's remote end:
// "ipv4", "ipv6", or "" when unknown.
func familyOf(a netip.AddrPort) string {
	switch {
	case !a.IsValid():
		return ""
	case a.Addr().Unmap().Is4():
		return "ipv4"
	}
	return "ipv6"
}

// natIPv6 adds the IPv6 side of a NAT report to the nat event: an "ipv6"
// object (nat, public_addr, mapping, filtering) and a second human line.
func natIPv6(human string, fields map[string]any, r natcheck.Report) (string, map[string]any) {
	if r.IPv6 == nil {
		return human, fields
	}
	v6 := *r.IPv6
	fields["ipv6"] = map[string]any{"nat": string(v6.Class), "public_addr": v6.PublicAddr.String(), "mapping": v6.Mapping.String(), "filtering": v6.Filtering.String()}
	return human + fmt.Sprintf("\nIPv6: %s (public %s, mapping %s, filtering %s)", v6.Class, v6.PublicAddr, v6.Mapping, v6.Filtering), fields
}

// bootstrapIPv6 adds the IPv6 socket of a bootstrap node to its ready
// event ("addr6", "public_addr6", "id6") and returns its human line, ""
// without one.
func bootstrapIPv6(st dht.Stats, ready map[string]any) string {
	ready["addr6"], ready["public_addr6"], ready["id6"] = "", "", ""
	for _, f := range st.Families {
		if f.Family != dht.IPv6 || f.LocalAddr == st.LocalAddr {
			continue
		}
		ready["addr6"] = f.LocalAddr.String()
		if f.PublicAddr.IsValid() {
			ready["public_addr6"] = f.PublicAddr.String()
		}
		if f.Persistent {
			ready["id6"] = f.ID.String()
		}
		return fmt.Sprintf("  listening   %s (IPv6)\n", f.LocalAddr)
	}
	return ""
}
