package natcheck

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var (
	local   = netip.MustParseAddrPort("10.0.0.2:40000")
	pubA    = netip.MustParseAddrPort("203.0.113.50:40000")
	pubB    = netip.MustParseAddrPort("203.0.113.50:51234")
	pubC    = netip.MustParseAddrPort("203.0.113.50:61000")
	servers = []netip.AddrPort{
		netip.MustParseAddrPort("203.0.113.1:49737"),
		netip.MustParseAddrPort("203.0.113.2:49737"),
		netip.MustParseAddrPort("203.0.113.3:49737"),
	}
)

func answers(mapped ...netip.AddrPort) []ServerObservation {
	var out []ServerObservation
	for i, m := range mapped {
		o := ServerObservation{Server: servers[i], Mapped: m, RTT: time.Duration(i+1) * time.Millisecond}
		if !m.IsValid() {
			o.Err = errors.New("timeout")
		}
		out = append(out, o)
	}
	return out
}

var (
	strangerArrived = ProbeObservation{Measured: true, Arrived: true, Unsolicited: true}
	contactArrived  = ProbeObservation{Measured: true, Arrived: true}
	arrived         = ProbeObservation{Measured: true, Arrived: true}
	lost            = ProbeObservation{Measured: true}
	notRun          = ProbeObservation{}
)

func TestClassify(t *testing.T) {
	yes := true
	none := netip.AddrPort{}
	tests := []struct {
		name       string
		obs        Observations
		mapping    Mapping
		filtering  Filtering
		class      Class
		confidence Confidence
		agreeing   int
	}{
		{"open", Observations{Local: pubA, Servers: answers(pubA, pubA, pubA), OtherNode: strangerArrived, OtherPort: arrived},
			MappingNone, FilteringEndpointIndependent, ClassOpen, ConfidenceHigh, 3},
		{"open-any-interface", Observations{Local: netip.MustParseAddrPort("0.0.0.0:40000"), LocalIPs: []netip.Addr{pubA.Addr()},
			Servers: answers(pubA, pubA), OtherNode: strangerArrived, OtherPort: arrived},
			MappingNone, FilteringEndpointIndependent, ClassOpen, ConfidenceMedium, 2},
		{"firewall", Observations{Local: pubA, Servers: answers(pubA, pubA, pubA), OtherNode: lost, OtherPort: lost},
			MappingNone, FilteringAddressAndPortDependent, ClassFirewall, ConfidenceHigh, 3},
		{"fullcone", Observations{Local: local, Servers: answers(pubB, pubB, pubB), OtherNode: strangerArrived, OtherPort: arrived},
			MappingEndpointIndependent, FilteringEndpointIndependent, ClassFullCone, ConfidenceHigh, 3},
		{"restricted", Observations{Local: local, Servers: answers(pubB, pubB, pubB), OtherNode: lost, OtherPort: arrived},
			MappingEndpointIndependent, FilteringAddressDependent, ClassRestricted, ConfidenceHigh, 3},
		{"portrestricted", Observations{Local: local, Servers: answers(pubB, pubB, pubB), OtherNode: lost, OtherPort: lost},
			MappingEndpointIndependent, FilteringAddressAndPortDependent, ClassPortRestricted, ConfidenceHigh, 3},
		{"portrestricted-hairpin", Observations{Local: local, Servers: answers(pubB, pubB, pubB), OtherNode: lost, OtherPort: lost, Hairpin: &yes},
			MappingEndpointIndependent, FilteringAddressAndPortDependent, ClassPortRestricted, ConfidenceHigh, 3},
		{"symmetric", Observations{Local: local, Servers: answers(pubA, pubB, pubC), OtherNode: lost, OtherPort: lost},
			MappingEndpointDependent, FilteringAddressAndPortDependent, ClassSymmetric, ConfidenceHigh, 1},
		{"symmetric-two-of-three", Observations{Local: local, Servers: answers(pubB, pubC, pubB), OtherNode: notRun, OtherPort: notRun},
			MappingEndpointDependent, FilteringUnknown, ClassSymmetric, ConfidenceHigh, 2},
		{"fullcone-one-server-lost", Observations{Local: local, Servers: answers(pubB, none, pubB), OtherNode: strangerArrived, OtherPort: arrived},
			MappingEndpointIndependent, FilteringEndpointIndependent, ClassFullCone, ConfidenceMedium, 2},
		{"one-server-is-not-enough", Observations{Local: local, Servers: answers(pubB), OtherNode: lost, OtherPort: lost},
			MappingUnknown, FilteringAddressAndPortDependent, ClassUnknown, ConfidenceLow, 1},
		{"contacted-helper-decides-nothing", Observations{Local: local, Servers: answers(pubB, pubB, pubB), OtherNode: contactArrived, OtherPort: arrived},
			MappingEndpointIndependent, FilteringUnknown, ClassUnknown, ConfidenceLow, 3},
		{"no-answer", Observations{Local: local, Servers: answers(none, none), OtherNode: strangerArrived},
			MappingUnknown, FilteringUnknown, ClassUnknown, ConfidenceNone, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Classify(tc.obs)
			if r.Mapping != tc.mapping || r.Filtering != tc.filtering || r.Class != tc.class || r.Confidence != tc.confidence || r.Agreeing != tc.agreeing {
				t.Fatalf("got mapping=%s filtering=%s class=%s confidence=%s agreeing=%d; want %s %s %s %s %d",
					r.Mapping, r.Filtering, r.Class, r.Confidence, r.Agreeing, tc.mapping, tc.filtering, tc.class, tc.confidence, tc.agreeing)
			}
			if r.Queried != len(tc.obs.Servers) || len(r.Servers) != len(tc.obs.Servers) {
				t.Fatalf("queried %d servers %d", r.Queried, len(r.Servers))
			}
			if r.Hairpin != tc.obs.Hairpin {
				t.Fatalf("hairpin %v", r.Hairpin)
			}
		})
	}
}

func TestClassifyPublicAddrsMajorityFirst(t *testing.T) {
	r := Classify(Observations{Local: local, Servers: answers(pubC, pubB, pubB)})
	if r.PublicAddr != pubB || len(r.PublicAddrs) != 2 || r.PublicAddrs[1] != pubC {
		t.Fatalf("public %s %v", r.PublicAddr, r.PublicAddrs)
	}
}

func TestNATReportJSON(t *testing.T) {
	r := Classify(Observations{Local: local, Servers: answers(pubB, pubB, netip.AddrPort{}), OtherNode: lost, OtherPort: lost})
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"class":"portrestricted"`, `"mapping":"endpoint-independent"`,
		`"filtering":"address-and-port-dependent"`, `"public_addr":"203.0.113.50:51234"`, `"error":"timeout"`, `"rtt_ms":1`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s: %s", want, b)
		}
	}
}
