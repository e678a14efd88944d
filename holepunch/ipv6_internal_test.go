package holepunch

import (
	"net/netip"
	"testing"

	"github.com/swarmdb/swarmdb/natcheck"
)

// Two peers that both offer public IPv6 candidates punch over IPv6: no
// birthday punching between their IPv4 NATs, and the birthday plan, when
// there is one, aims at the IPv4 reflexive address even when an IPv6 one
// is listed first. Unique-local and link-local IPv6 addresses do not count.
func TestIPv6PunchPlan(t *testing.T) {
	sig := func(m natcheck.Mapping, f natcheck.Filtering, addrs ...string) *signal {
		s := &signal{Mode: ModeAuto, Mapping: m, Filtering: f}
		for _, a := range addrs {
			s.Cands = append(s.Cands, candidate{Kind: candSrflx, Addr: netip.MustParseAddrPort(a)})
		}
		return s
	}
	const (
		hard4 = "198.51.100.1:4000"
		easy4 = "203.0.113.2:5000"
		hard6 = "[2001:db8:1::10]:4000"
		easy6 = "[2001:db8:2::10]:5000"
		ula6  = "[fd00::10]:5000"
	)
	for _, c := range []struct {
		name       string
		hard, easy *signal
		want       punchRole // of the hard side
	}{
		{"ipv4 only", sig(natcheck.MappingEndpointDependent, natcheck.FilteringAddressAndPortDependent, hard4),
			sig(natcheck.MappingEndpointIndependent, natcheck.FilteringAddressAndPortDependent, easy4), roleHard},
		{"both ipv6", sig(natcheck.MappingEndpointDependent, natcheck.FilteringAddressAndPortDependent, hard6, hard4),
			sig(natcheck.MappingEndpointIndependent, natcheck.FilteringAddressAndPortDependent, easy6, easy4), roleNone},
		{"one side ipv6", sig(natcheck.MappingEndpointDependent, natcheck.FilteringAddressAndPortDependent, hard6, hard4),
			sig(natcheck.MappingEndpointIndependent, natcheck.FilteringAddressAndPortDependent, easy4), roleHard},
		{"unique-local is no ipv6 path", sig(natcheck.MappingEndpointDependent, natcheck.FilteringAddressAndPortDependent, ula6, hard4),
			sig(natcheck.MappingEndpointIndependent, natcheck.FilteringAddressAndPortDependent, ula6, easy4), roleHard},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := birthdayRole(c.hard, c.easy); got != c.want {
				t.Fatalf("hard side's role %v, want %v", got, c.want)
			}
			if c.want == roleHard {
				if r := reflexive(c.easy); r != netip.MustParseAddrPort(easy4) {
					t.Fatalf("birthday aims at %s", r)
				}
				if got := birthdayRole(c.easy, c.hard); got != roleEasy {
					t.Fatalf("easy side's role %v", got)
				}
			}
		})
	}
}
