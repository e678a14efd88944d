package natlab

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Table and interface names used inside lab namespaces.
const (
	natTable  = "natlab"      // the router's NAT table, reloaded as a whole
	lossTable = "natlab_loss" // packet loss, separate so it survives NAT reloads
	wanIf     = "wan0"        // a router's WAN side
	lanIf     = "brlan"       // a router's LAN bridge
	hostIf    = "eth0"        // a host's only interface
	inetIf    = "br0"         // the internet segment's bridge
)

// defaultBindingTimeout is how long the nft binding and sent-to sets remember
// an idle mapping when no UDPTimeout is configured. It matches Linux's
// conntrack nf_conntrack_udp_timeout_stream (120 s), so the cone rules never
// outlive or undercut the kernel's own mapping by much.
const defaultBindingTimeout = 2 * time.Minute

// natRules is the router's configuration as the rule generator needs it.
type natRules struct {
	Type    NATType
	Public  netip.Addr   // WAN address: what LAN hosts are translated to
	LAN     netip.Prefix // LAN subnet
	Hairpin bool
	Timeout time.Duration // binding lifetime; zero means defaultBindingTimeout
	// AcceptWANInput reproduces the pitfall instead of avoiding it.
	AcceptWANInput bool
	// AllowWANFrom lists sources whose unsolicited packets the router
	// itself accepts: the STUN server miniupnpd tests the WAN with, whose
	// answers from other addresses are unsolicited by design.
	AllowWANFrom []netip.Addr
}

// nftSeconds renders d as an nft time value, rounded up to whole seconds.
func nftSeconds(d time.Duration) string {
	s := (d + time.Second - 1) / time.Second
	if s < 1 {
		s = 1
	}
	return fmt.Sprintf("%ds", s)
}

// ruleset returns an nft script that atomically replaces the router's NAT
// table. The skeleton follows the verified recipe in
// shared/natlab/natlab-reference.sh (nat.md, B3):
//
//   - input drops unsolicited WAN packets, like a home router. Accepting them
//     lets an early inbound punch packet confirm a conntrack entry, and the
//     later outbound SNAT must then pick a different port (nat.md, B5.3).
//   - mapping: plain "snat to PUB" keeps the source port while the 5-tuple is
//     free, which is endpoint-independent mapping (RFC 4787 REQ-1);
//     "fully-random" gives a new random port per 5-tuple (symmetric NAT).
//   - filtering: conntrack alone lets in only replies from the exact ip:port
//     we sent to (APDF). The cone types add a DNAT through a binding map
//     learned after SNAT: for anyone (EIF), or only for remote IPs already
//     sent to from that external port (ADF).
//   - hairpin: LAN packets to our own public address are DNATed through the
//     binding map and SNATed to the public address, so the receiver sees the
//     sender's public mapping (RFC 4787 REQ-9a).
func (c natRules) ruleset() string {
	timeout := nftSeconds(defaultBindingTimeout)
	if c.Timeout > 0 {
		timeout = nftSeconds(c.Timeout)
	}
	pub, lan := c.Public.String(), c.LAN.Masked().String()

	var pre, post []string
	switch c.Type {
	case FullCone:
		pre = append(pre, fmt.Sprintf(`iifname %q dnat ip to udp dport map @binding`, wanIf))
	case Restricted:
		pre = append(pre, fmt.Sprintf(`iifname %q ip saddr . udp dport @sentto dnat ip to udp dport map @binding`, wanIf))
	}
	if c.Type == Symmetric {
		post = append(post, fmt.Sprintf(`oifname %q ip saddr %s snat ip to %s fully-random`, wanIf, lan, pub))
	} else {
		post = append(post, fmt.Sprintf(`oifname %q ip saddr %s snat ip to %s`, wanIf, lan, pub))
	}
	if c.Hairpin {
		pre = append(pre, fmt.Sprintf(`iifname %q ip daddr %s dnat ip to udp dport map @binding`, lanIf, pub))
		post = append(post, fmt.Sprintf(`oifname %q ip saddr %s ct status dnat snat ip to %s`, lanIf, lan, pub))
	}

	var b strings.Builder
	// "add" then "delete" makes the delete safe when the table is new; the
	// whole file is one transaction, so there is no moment without rules.
	fmt.Fprintf(&b, "add table ip %s\ndelete table ip %s\n", natTable, natTable)
	fmt.Fprintf(&b, "table ip %s {\n", natTable)
	fmt.Fprintf(&b, "  map binding { type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout %s; }\n", timeout)
	fmt.Fprintf(&b, "  set sentto { type ipv4_addr . inet_service; flags dynamic,timeout; timeout %s; }\n", timeout)
	fmt.Fprintf(&b, "  chain input {\n    type filter hook input priority filter; policy accept;\n")
	fmt.Fprintf(&b, "    iifname %q ct state established,related accept\n", wanIf)
	if len(c.AllowWANFrom) > 0 {
		srcs := make([]string, len(c.AllowWANFrom))
		for i, a := range c.AllowWANFrom {
			srcs[i] = a.String()
		}
		fmt.Fprintf(&b, "    iifname %q ip saddr { %s } accept\n", wanIf, strings.Join(srcs, ", "))
	}
	wanPolicy := "drop"
	if c.AcceptWANInput {
		wanPolicy = "accept"
	}
	// The counter lets tests see that unsolicited packets arrived.
	fmt.Fprintf(&b, "    iifname %q counter %s\n  }\n", wanIf, wanPolicy)
	fmt.Fprintf(&b, "  chain forward {\n    type filter hook forward priority filter; policy drop;\n")
	fmt.Fprintf(&b, "    ct state established,related accept\n")
	fmt.Fprintf(&b, "    iifname %q accept\n", lanIf)
	fmt.Fprintf(&b, "    ct status dnat accept\n  }\n")
	fmt.Fprintf(&b, "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n")
	for _, r := range pre {
		fmt.Fprintf(&b, "    %s\n", r)
	}
	fmt.Fprintf(&b, "  }\n")
	fmt.Fprintf(&b, "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n")
	for _, r := range post {
		fmt.Fprintf(&b, "    %s\n", r)
	}
	fmt.Fprintf(&b, "  }\n")
	// After SNAT (srcnat+10) the packet carries the external port: remember
	// which internal endpoint owns it. "ct direction original" keeps replies
	// of inbound flows from overwriting a binding.
	fmt.Fprintf(&b, "  chain learn {\n    type filter hook postrouting priority srcnat + 10; policy accept;\n")
	fmt.Fprintf(&b, "    oifname %q ct direction original meta l4proto udp update @binding { udp sport timeout %s : ct original ip saddr . ct original proto-src }\n", wanIf, timeout)
	fmt.Fprintf(&b, "    oifname %q ct direction original meta l4proto udp update @sentto { ip daddr . udp sport timeout %s }\n", wanIf, timeout)
	fmt.Fprintf(&b, "  }\n}\n")
	return b.String()
}

// Names of the loss table's counters: packets that met the drop rule, and
// those it dropped.
const (
	lossSeen    = "seen"
	lossDropped = "dropped"
)

// lossScale is the resolution of the numgen-based drop rule: rates are
// applied in steps of 1/lossScale (0.01 %).
const lossScale = 10000

// lossRuleset returns an nft script that replaces the loss table of a router
// (forRouter: traffic forwarded in or out of its WAN side) or of a host (its
// interface, both directions). Each packet is dropped independently with
// probability rate, in each direction; a round trip therefore survives with
// probability (1-rate)^2. A rate of 0 only deletes the table.
func lossRuleset(forRouter bool, rate float64) string {
	// A router drops in its forward hook, before the NAT table's filter
	// chains (priority -10), so a dropped packet never confirms or refreshes
	// a mapping. A host drops on the device (netdev ingress and egress):
	// a drop in the output path of the IP stack would fail the sender's
	// sendto with EPERM, while a drop at egress is silent, like real loss.
	family, table := "ip", lossTable
	if !forRouter {
		family = "netdev"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "add table %s %s\ndelete table %s %s\n", family, table, family, table)
	threshold := int(rate*lossScale + 0.5)
	if threshold <= 0 {
		return b.String()
	}
	// The named counters let a test tell injected drops from packets lost
	// elsewhere (a full socket buffer on a loaded machine): see LossCounts.
	drop := fmt.Sprintf("counter name %q numgen random mod %d < %d counter name %q drop",
		lossSeen, lossScale, threshold, lossDropped)
	fmt.Fprintf(&b, "table %s %s {\n  counter %s {}\n  counter %s {}\n", family, table, lossSeen, lossDropped)
	if forRouter {
		fmt.Fprintf(&b, "  chain loss {\n    type filter hook forward priority -10; policy accept;\n")
		fmt.Fprintf(&b, "    iifname %q %s\n    oifname %q %s\n  }\n}\n", wanIf, drop, wanIf, drop)
		return b.String()
	}
	for _, hook := range []string{"ingress", "egress"} {
		fmt.Fprintf(&b, "  chain %s {\n    type filter hook %s device %q priority -10; policy accept;\n", hook, hook, hostIf)
		fmt.Fprintf(&b, "    %s\n  }\n", drop)
	}
	fmt.Fprintf(&b, "}\n")
	return b.String()
}
