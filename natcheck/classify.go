package natcheck

import (
	"cmp"
	"net/netip"
	"slices"
	"time"
)

// Mapping is a NAT's mapping behaviour in RFC 4787 §4.1 terms: whether the
// public address it gives one local socket depends on the destination.
type Mapping int

const (
	// MappingUnknown: too few servers answered to compare mappings.
	MappingUnknown Mapping = iota
	// MappingNone: no translation; servers saw our local address.
	MappingNone
	// MappingEndpointIndependent: every server saw the same public address
	// (RFC 4787 REQ-1, what hole punching needs).
	MappingEndpointIndependent
	// MappingEndpointDependent: servers saw different public addresses
	// (address- or address-and-port-dependent mapping; servers that each
	// have one port cannot tell the two apart). The classic "symmetric".
	MappingEndpointDependent
)

func (m Mapping) String() string {
	switch m {
	case MappingNone:
		return "none"
	case MappingEndpointIndependent:
		return "endpoint-independent"
	case MappingEndpointDependent:
		return "endpoint-dependent"
	}
	return "unknown"
}

// MarshalText makes Mapping read as its name in JSON.
func (m Mapping) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// Filtering is a NAT's (or firewall's) filtering behaviour in RFC 4787 §5
// terms: which inbound packets reach a mapping.
type Filtering int

const (
	// FilteringUnknown: the probes that decide it did not run or could not
	// decide (a packet arrived from an address we had contacted anyway).
	FilteringUnknown Filtering = iota
	// FilteringEndpointIndependent: anyone may send to the mapping.
	FilteringEndpointIndependent
	// FilteringAddressDependent: only IPs we sent to may send back.
	FilteringAddressDependent
	// FilteringAddressAndPortDependent: only the exact IP:port we sent to.
	FilteringAddressAndPortDependent
)

func (f Filtering) String() string {
	switch f {
	case FilteringEndpointIndependent:
		return "endpoint-independent"
	case FilteringAddressDependent:
		return "address-dependent"
	case FilteringAddressAndPortDependent:
		return "address-and-port-dependent"
	}
	return "unknown"
}

// MarshalText makes Filtering read as its name in JSON.
func (f Filtering) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// Class is the classic (RFC 3489) name of a NAT, which most people know.
type Class string

// The classes. Firewall is RFC 3489's "symmetric UDP firewall": no
// translation, but unsolicited packets are dropped.
const (
	ClassUnknown        Class = "unknown"
	ClassOpen           Class = "open"
	ClassFirewall       Class = "firewall"
	ClassFullCone       Class = "fullcone"
	ClassRestricted     Class = "restricted"
	ClassPortRestricted Class = "portrestricted"
	ClassSymmetric      Class = "symmetric"
)

// Confidence says how much the measurement can be trusted.
type Confidence string

// Confidence levels.
const (
	// ConfidenceNone: no server answered.
	ConfidenceNone Confidence = "none"
	// ConfidenceLow: one server answered, or the class is unknown.
	ConfidenceLow Confidence = "low"
	// ConfidenceMedium: two servers answered and the class is known.
	ConfidenceMedium Confidence = "medium"
	// ConfidenceHigh: three or more servers answered and both mapping and
	// filtering were decided (or the mapping is endpoint-dependent, which
	// alone makes the NAT symmetric).
	ConfidenceHigh Confidence = "high"
)

// ServerObservation is what one server said about our socket.
type ServerObservation struct {
	Server netip.AddrPort
	// Mapped is the reflexive address the server saw; invalid when it did
	// not answer.
	Mapped netip.AddrPort
	RTT    time.Duration
	// Err is why the server did not answer, if it did not.
	Err error
}

// ProbeObservation is the outcome of one filtering probe.
type ProbeObservation struct {
	// Measured is false when the probe did not run or its request failed.
	Measured bool
	// Arrived: the unsolicited packet reached our socket.
	Arrived bool
	// Unsolicited: it came from an IP we had never sent to. An arrival
	// from a contacted IP says nothing about endpoint-independent filtering.
	Unsolicited bool
	// Err is why the probe's request failed, when it did.
	Err error
	// Wait is how long the probe waited for its packet after the server answered.
	Wait time.Duration
}

// String says what the probe saw, for reports and logs: "stranger" (arrived from an IP we
// never sent to), "contacted" (arrived, from one we did), "arrived" (other-port probes, where
// the sender is the server by design), "filtered" (did not arrive), or why it did not run.
func (o ProbeObservation) String() string {
	switch {
	case o.Err != nil:
		return "failed: " + o.Err.Error()
	case !o.Measured:
		return "not run"
	case !o.Arrived:
		return "filtered"
	case o.Unsolicited:
		return "stranger"
	}
	return "arrived"
}

// ProbeAttempt is one server's round of filtering probes. Check moves on to the next server
// when a round decides nothing, so a report can hold several; the last one measured decided.
type ProbeAttempt struct {
	Server               netip.AddrPort
	OtherNode, OtherPort ProbeObservation
}

// ProbeResult is one ProbeAttempt as a report shows it.
type ProbeResult struct {
	Server    netip.AddrPort `json:"server"`
	WaitMilli float64        `json:"wait_ms,omitempty"`
	OtherNode string         `json:"other_node"`
	OtherPort string         `json:"other_port"`
}

func (a ProbeAttempt) result() ProbeResult {
	wait := max(a.OtherNode.Wait, a.OtherPort.Wait)
	r := ProbeResult{Server: a.Server, WaitMilli: float64(wait.Microseconds()) / 1000,
		OtherNode: a.OtherNode.String(), OtherPort: a.OtherPort.String()}
	if a.OtherPort.Arrived {
		r.OtherPort = "arrived" // its sender is the server's IP by design, never a stranger
	}
	return r
}

// Observations is everything Classify needs, gathered by Check (or by a
// test). It is plain data: Classify does no I/O.
type Observations struct {
	// Local is the socket's local address; an unspecified IP (0.0.0.0)
	// means "any of LocalIPs".
	Local netip.AddrPort
	// LocalIPs are the host's interface addresses. Optional.
	LocalIPs []netip.Addr
	// Servers are the Binding results, one per server asked.
	Servers []ServerObservation
	// OtherNode: a server asked another node, on an IP we never sent to,
	// to send us a packet (decides endpoint-independent filtering).
	OtherNode ProbeObservation
	// OtherPort: a server answered from another port on its own IP
	// (decides address- versus address-and-port-dependent filtering).
	OtherPort ProbeObservation
	// Probes are every round of filtering probes, in order; OtherNode and OtherPort are
	// the last complete one. For the report only: Classify decides nothing from them.
	Probes []ProbeAttempt
	// Hairpin is whether a Binding request to our own public address came
	// back (RFC 4787 REQ-9). Nil means not measured.
	Hairpin *bool
}

// ServerResult is one server's line of a Report.
type ServerResult struct {
	Server   netip.AddrPort `json:"server"`
	Answered bool           `json:"answered"`
	Mapped   netip.AddrPort `json:"mapped,omitzero"`
	RTT      time.Duration  `json:"-"`
	RTTMilli float64        `json:"rtt_ms,omitempty"`
	Error    string         `json:"error,omitempty"`
}

// Report is what a node knows about its NAT.
type Report struct {
	// PublicAddr is the reflexive address most servers agreed on.
	PublicAddr netip.AddrPort `json:"public_addr,omitzero"`
	// PublicAddrs are all distinct reflexive addresses, most reported
	// first (more than one means endpoint-dependent mapping).
	PublicAddrs []netip.AddrPort `json:"public_addrs"`
	Mapping     Mapping          `json:"mapping"`
	Filtering   Filtering        `json:"filtering"`
	Hairpin     *bool            `json:"hairpin,omitempty"`
	Class       Class            `json:"class"`
	Confidence  Confidence       `json:"confidence"`
	// Queried, Answered and Agreeing count servers: asked, answered, and
	// reporting PublicAddr.
	Queried  int            `json:"queried"`
	Answered int            `json:"answered"`
	Agreeing int            `json:"agreeing"`
	Servers  []ServerResult `json:"servers"`
	// Probes are the filtering probes as they went, server by server: why a filtering
	// is unknown is read here.
	Probes []ProbeResult `json:"probes,omitempty"`
	// IPv6 is the report of the node's IPv6 socket, when it has one that
	// reached IPv6 DHT nodes; the fields above are then the IPv4 socket's
	// (class unknown and nothing answered for a host without IPv4).
	IPv6 *Report `json:"ipv6,omitempty"`
}

// Classify turns observations into a report. It is pure: the same input
// always gives the same report.
//
// Mapping follows RFC 5780 §4.3 with several servers instead of one server
// with two IPs: equal reflexive addresses from different servers mean
// endpoint-independent mapping. Filtering follows RFC 5780 §4.4: a packet
// from a stranger's IP means endpoint-independent filtering, one from the
// server's IP but another port means address-dependent filtering, none at
// all means address-and-port-dependent filtering.
func Classify(obs Observations) Report {
	r := Report{Queried: len(obs.Servers), Hairpin: obs.Hairpin, PublicAddrs: []netip.AddrPort{}}
	counts := map[netip.AddrPort]int{}
	allLocal := true
	for _, s := range obs.Servers {
		sr := ServerResult{Server: s.Server}
		if s.Err == nil && s.Mapped.IsValid() {
			sr.Answered = true
			sr.Mapped = s.Mapped
			sr.RTT = s.RTT
			sr.RTTMilli = float64(s.RTT.Microseconds()) / 1000
			r.Answered++
			if counts[s.Mapped] == 0 {
				r.PublicAddrs = append(r.PublicAddrs, s.Mapped)
			}
			counts[s.Mapped]++
			if !isLocal(s.Mapped, obs.Local, obs.LocalIPs) {
				allLocal = false
			}
		} else if s.Err != nil {
			sr.Error = s.Err.Error()
		} else {
			sr.Error = "no mapped address"
		}
		r.Servers = append(r.Servers, sr)
	}
	for _, a := range obs.Probes {
		r.Probes = append(r.Probes, a.result())
	}
	// Most reported first; ties keep the order the servers were given in.
	slices.SortStableFunc(r.PublicAddrs, func(a, b netip.AddrPort) int {
		return cmp.Compare(counts[b], counts[a])
	})
	if len(r.PublicAddrs) > 0 {
		r.PublicAddr = r.PublicAddrs[0]
		r.Agreeing = counts[r.PublicAddr]
	}

	switch {
	case r.Answered == 0:
		r.Mapping = MappingUnknown
	case len(r.PublicAddrs) > 1:
		r.Mapping = MappingEndpointDependent
	case allLocal:
		// One server suffices: seeing our own address means no NAT.
		r.Mapping = MappingNone
	case r.Answered >= 2:
		r.Mapping = MappingEndpointIndependent
	default:
		// One translated answer cannot show that the mapping is the same
		// for other destinations.
		r.Mapping = MappingUnknown
	}
	if r.Answered > 0 {
		r.Filtering = classifyFiltering(obs.OtherNode, obs.OtherPort)
	}
	r.Class = classOf(r.Mapping, r.Filtering)
	r.Confidence = confidenceOf(r)
	return r
}

func classifyFiltering(node, port ProbeObservation) Filtering {
	switch {
	case node.Measured && node.Arrived && node.Unsolicited:
		return FilteringEndpointIndependent
	case port.Measured && !port.Arrived:
		return FilteringAddressAndPortDependent
	case port.Measured && port.Arrived && node.Measured && !node.Arrived:
		return FilteringAddressDependent
	}
	// Either probe missing, or the other-node packet came from an IP we
	// had contacted, which any filtering but APDF lets in.
	return FilteringUnknown
}

func classOf(m Mapping, f Filtering) Class {
	switch m {
	case MappingEndpointDependent:
		return ClassSymmetric
	case MappingNone:
		switch f {
		case FilteringEndpointIndependent:
			return ClassOpen
		case FilteringAddressDependent, FilteringAddressAndPortDependent:
			return ClassFirewall
		}
	case MappingEndpointIndependent:
		switch f {
		case FilteringEndpointIndependent:
			return ClassFullCone
		case FilteringAddressDependent:
			return ClassRestricted
		case FilteringAddressAndPortDependent:
			return ClassPortRestricted
		}
	}
	return ClassUnknown
}

func confidenceOf(r Report) Confidence {
	switch {
	case r.Answered == 0:
		return ConfidenceNone
	case r.Class == ClassUnknown:
		return ConfidenceLow
	case r.Answered >= highConfidenceServers && (r.Filtering != FilteringUnknown || r.Mapping == MappingEndpointDependent):
		return ConfidenceHigh
	case r.Answered >= 2:
		return ConfidenceMedium
	}
	return ConfidenceLow
}

// isLocal reports whether the reflexive address a is our own socket.
func isLocal(a, local netip.AddrPort, ips []netip.Addr) bool {
	if a.Port() != local.Port() {
		return false
	}
	if a.Addr() == local.Addr() {
		return true
	}
	if !local.Addr().IsUnspecified() {
		return false
	}
	return slices.Contains(ips, a.Addr())
}
