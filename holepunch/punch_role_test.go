package holepunch

import (
	"net/netip"
	"testing"

	"github.com/swarmdb/swarmdb/natcheck"
)

// TestPunchRoles: which pairs punch with the birthday paradox, and when a
// side with a router port mapping leaves the peer's reflexive addresses
// alone and waits for the peer's checks.
func TestPunchRoles(t *testing.T) {
	srflx := []candidate{{Kind: candHost, Addr: netip.MustParseAddrPort("10.1.0.10:4000")},
		{Kind: candSrflx, Addr: netip.MustParseAddrPort("203.0.113.20:4000")}}
	sig := func(m natcheck.Mapping, f natcheck.Filtering) *signal {
		return &signal{Mode: ModeAuto, Mapping: m, Filtering: f, Cands: srflx}
	}
	const (
		eim, edm   = natcheck.MappingEndpointIndependent, natcheck.MappingEndpointDependent
		eif, apdf  = natcheck.FilteringEndpointIndependent, natcheck.FilteringAddressAndPortDependent
		adf, unkno = natcheck.FilteringAddressDependent, natcheck.FilteringUnknown
	)
	var (
		symmetric       = sig(edm, apdf)
		symmetricMapped = sig(edm, eif) // a port mapping states endpoint-independent filtering
		portRestricted  = sig(eim, apdf)
		prMapped        = sig(eim, eif)
		restricted      = sig(eim, adf)
		unknownFilter   = sig(eim, unkno)
	)
	for _, tc := range []struct {
		name        string
		local, peer *signal
		role        punchRole
		awaits      bool
	}{
		{"symmetric to port-restricted", symmetric, portRestricted, roleHard, false},
		{"port-restricted to symmetric", portRestricted, symmetric, roleEasy, false},
		{"symmetric to unknown filtering", symmetric, unknownFilter, roleHard, false},
		{"symmetric to restricted: ICE's prflx does it", symmetric, restricted, roleNone, false},
		{"mapped symmetric to port-restricted", symmetricMapped, portRestricted, roleNone, true},
		{"port-restricted to mapped symmetric", portRestricted, symmetricMapped, roleNone, false},
		{"mapped symmetric to symmetric", symmetricMapped, symmetric, roleNone, true},
		{"mapped symmetric to mapped symmetric", symmetricMapped, symmetricMapped, roleNone, false},
		{"mapped symmetric to a mapped port-restricted", symmetricMapped, prMapped, roleNone, false},
		{"symmetric to a mapped port-restricted", symmetric, prMapped, roleNone, false},
	} {
		if got := birthdayRole(tc.local, tc.peer); got != tc.role {
			t.Errorf("%s: birthdayRole = %d, want %d", tc.name, got, tc.role)
		}
		if got := awaitsPeer(tc.local, tc.peer); got != tc.awaits {
			t.Errorf("%s: awaitsPeer = %v, want %v", tc.name, got, tc.awaits)
		}
	}
	relay := sig(edm, eif)
	relay.Mode = ModeRelay
	if awaitsPeer(relay, symmetric) || birthdayRole(relay, portRestricted) != roleNone {
		t.Error("a relay dial neither waits nor punches")
	}
	if got := withoutReflexive(srflx); len(got) != 1 || got[0].Kind != candHost {
		t.Errorf("withoutReflexive = %v", got)
	}
}
