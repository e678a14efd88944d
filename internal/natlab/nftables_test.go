package natlab

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestRuleset checks the lines that make each NAT type what it is (see the
// table in ruleset's comment); the kernel side is the self-test's job.
func TestRuleset(t *testing.T) {
	base := natRules{Public: netip.MustParseAddr("203.0.113.20"), LAN: netip.MustParsePrefix("10.3.0.0/24")}
	const (
		dropWAN  = `iifname "wan0" counter drop`
		snat     = `oifname "wan0" ip saddr 10.3.0.0/24 snat ip to 203.0.113.20` + "\n"
		snatRand = `snat ip to 203.0.113.20 fully-random`
		eif      = `iifname "wan0" dnat ip to udp dport map @binding`
		adf      = `iifname "wan0" ip saddr . udp dport @sentto dnat ip to udp dport map @binding`
		hairpin  = `iifname "brlan" ip daddr 203.0.113.20 dnat ip to udp dport map @binding`
	)
	tests := []struct {
		typ     NATType
		hairpin bool
		want    []string
		notWant []string
	}{
		{FullCone, false, []string{dropWAN, snat, eif}, []string{adf, snatRand, hairpin}},
		{Restricted, false, []string{dropWAN, snat, adf}, []string{eif, snatRand, hairpin}},
		{PortRestricted, false, []string{dropWAN, snat}, []string{eif, adf, snatRand, hairpin}},
		{PortRestricted, true, []string{dropWAN, snat, hairpin, "ct status dnat snat ip to 203.0.113.20"}, []string{eif, adf}},
		{Symmetric, false, []string{dropWAN, snatRand}, []string{snat, eif, adf, hairpin}},
	}
	for _, tt := range tests {
		c := base
		c.Type, c.Hairpin = tt.typ, tt.hairpin
		got := c.ruleset()
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s hairpin=%t: missing %q in\n%s", tt.typ, tt.hairpin, w, got)
			}
		}
		for _, w := range tt.notWant {
			if strings.Contains(got, w) {
				t.Errorf("%s hairpin=%t: unexpected %q in\n%s", tt.typ, tt.hairpin, w, got)
			}
		}
	}
}

func TestRulesetTimeout(t *testing.T) {
	c := natRules{Type: FullCone, Public: netip.MustParseAddr("203.0.113.20"), LAN: netip.MustParsePrefix("10.3.0.0/24")}
	if got := c.ruleset(); !strings.Contains(got, "timeout 120s;") {
		t.Errorf("default binding timeout not 120s:\n%s", got)
	}
	c.Timeout = 1500 * time.Millisecond
	if got := c.ruleset(); !strings.Contains(got, "timeout 2s;") || strings.Contains(got, "120s") {
		t.Errorf("1.5s timeout not rounded up to 2s:\n%s", got)
	}
}

func TestLossRuleset(t *testing.T) {
	if got := lossRuleset(true, 0); strings.Contains(got, "numgen") {
		t.Errorf("rate 0 must only delete the table:\n%s", got)
	}
	got := lossRuleset(true, 0.02)
	drop := `counter name "seen" numgen random mod 10000 < 200 counter name "dropped" drop`
	for _, w := range []string{`iifname "wan0" ` + drop, `oifname "wan0" ` + drop, "hook forward", "counter seen {}", "counter dropped {}"} {
		if !strings.Contains(got, w) {
			t.Errorf("router loss: missing %q in\n%s", w, got)
		}
	}
	got = lossRuleset(false, 0.5)
	for _, w := range []string{"table netdev natlab_loss", `hook ingress device "eth0"`, `hook egress device "eth0"`, "numgen random mod 10000 < 5000 counter", "counter dropped {}"} {
		if !strings.Contains(got, w) {
			t.Errorf("host loss: missing %q in\n%s", w, got)
		}
	}
}

// TestRulesetAllowWAN: a router running miniupnpd accepts its STUN
// server's unsolicited answers, before the WAN drop, and nothing else.
func TestRulesetAllowWAN(t *testing.T) {
	c := natRules{Type: Symmetric, Public: netip.MustParseAddr("203.0.113.20"), LAN: netip.MustParsePrefix("10.3.0.0/24")}
	if got := c.ruleset(); strings.Contains(got, "ip saddr {") {
		t.Errorf("no allowed sources, yet:\n%s", got)
	}
	c.AllowWANFrom = []netip.Addr{netip.MustParseAddr("203.0.113.11"), netip.MustParseAddr("203.0.113.12")}
	got := c.ruleset()
	allow := `iifname "wan0" ip saddr { 203.0.113.11, 203.0.113.12 } accept`
	if i, j := strings.Index(got, allow), strings.Index(got, `iifname "wan0" counter drop`); i < 0 || j < 0 || i > j {
		t.Errorf("want %q before the WAN drop in\n%s", allow, got)
	}
	if !strings.Contains(upnpRuleset(), "priority dstnat - 5") {
		t.Errorf("miniupnpd's DNAT chain must run before the NAT table's:\n%s", upnpRuleset())
	}
}
