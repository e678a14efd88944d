package natlab

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// NATType names a router's behaviour. Its string is the classic name, which
// reads well as a subtest name.
type NATType string

// The router types. Mapping and Filtering give each one's RFC 4787
// behaviour.
const (
	Open           NATType = "open"           // no NAT, no firewall
	FullCone       NATType = "fullcone"       // EIM + EIF
	Restricted     NATType = "restricted"     // EIM + ADF
	PortRestricted NATType = "portrestricted" // EIM + APDF, the typical home router
	Symmetric      NATType = "symmetric"      // APDM (random ports) + APDF
)

// Types lists every NATType, easiest first: the rows of a grid test.
func Types() []NATType {
	return []NATType{Open, FullCone, Restricted, PortRestricted, Symmetric}
}

// Mapping returns the mapping behaviour a NAT of this type has.
func (t NATType) Mapping() Behavior {
	if t == Symmetric {
		return AddressAndPortDependent
	}
	return EndpointIndependent
}

// Filtering returns the filtering behaviour a NAT of this type has.
func (t NATType) Filtering() Behavior {
	switch t {
	case Open, FullCone:
		return EndpointIndependent
	case Restricted:
		return AddressDependent
	default:
		return AddressAndPortDependent
	}
}

func (t NATType) valid() bool {
	switch t {
	case Open, FullCone, Restricted, PortRestricted, Symmetric:
		return true
	}
	return false
}

// RouterConfig configures a router. The zero value is a port-restricted
// home router without hairpinning and with Linux's default timeouts.
type RouterConfig struct {
	// Name is the router's lab-unique name (lowercase letters and digits,
	// up to 12). Zero means "r<N>" (or "cgn<N>" for a carrier NAT).
	Name string
	// Type is the NAT behaviour. Zero means PortRestricted.
	Type NATType
	// Hairpin lets LAN hosts reach each other through their public mappings
	// (RFC 4787 REQ-9). False is the Linux default (and common on CPEs).
	Hairpin bool
	// UDPTimeout is how long an idle UDP mapping lives, in whole seconds
	// (rounded up). It sets the namespace's conntrack UDP timeouts (both the
	// unreplied and the stream one) and the cone binding timeout. Zero
	// means Linux's defaults: 30 s unreplied, 120 s once seen both ways.
	UDPTimeout time.Duration
	// AcceptWANInput makes the router accept unsolicited WAN packets
	// addressed to itself instead of dropping them. Only for reproducing
	// the conntrack pitfall of shared/reference/nat.md (B5.3): an early
	// inbound packet then takes the port a LAN host is about to be mapped
	// to. Real home routers, and the default here, drop such input.
	AcceptWANInput bool
	// IPv6 gives the router an IPv6 WAN address and LAN prefix, routed
	// with a stateful firewall and no translation (ipv6.go). It needs
	// Lab.EnableIPv6 and a router on the internet segment.
	IPv6 bool
	// Link, when set, puts a shaped link (delay line and optional
	// bottleneck, see LinkConfig) between the router's WAN side and the
	// segment upstream. SetLink changes it later. Nil: a plain veth, no
	// delay. Not for Open routers, which have no WAN side.
	Link *LinkConfig
}

// Linux's conntrack UDP timeouts in a fresh namespace, restored when a
// shortened UDPTimeout is set back to zero.
const (
	linuxUDPTimeout       = "30"
	linuxUDPTimeoutStream = "120"
)

// Router is a NAT router in its own namespace (WAN "wan0", LAN bridge
// "brlan" with address .1), or, for type Open, a group of public hosts.
type Router struct {
	node

	// Immutable after creation.
	typ     NATType
	parent  *Router      // nil when the WAN side is on the internet segment
	accept  bool         // AcceptWANInput
	public  netip.Addr   // WAN address (what LAN hosts are translated to)
	lan     netip.Prefix // LAN subnet; invalid for Open
	carrier bool
	link    *link        // shaped uplink; nil without RouterConfig.Link
	public6 netip.Addr   // IPv6 WAN address; zero without RouterConfig.IPv6
	lan6    netip.Prefix // IPv6 LAN; invalid without RouterConfig.IPv6

	// Guarded by mu.
	mu       sync.Mutex
	allowWAN []netip.Addr // see natRules.AllowWANFrom
	hairpin  bool
	timeout  time.Duration
	hosts    []*Host
	nextLAN  int // last octet of the next LAN address
	lanPorts int // bridge ports on the LAN
}

// Type returns the router's NAT type.
func (r *Router) Type() NATType { return r.typ }

// PublicIP returns the router's WAN address: an internet address for a
// top-level router, a LAN address of its Upstream for a nested one, and the
// zero Addr for an Open router.
func (r *Router) PublicIP() netip.Addr { return r.public }

// LAN returns the router's LAN subnet (invalid for Open).
func (r *Router) LAN() netip.Prefix { return r.lan }

// Upstream returns the router this one sits behind, or nil.
func (r *Router) Upstream() *Router { return r.parent }

// Hosts returns the hosts added to this router so far.
func (r *Router) Hosts() []*Host {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Host(nil), r.hosts...)
}

// gateway is the router's own LAN address.
func (r *Router) gateway() netip.Addr { return r.lan.Addr().Next() }

// AddHost adds a host named "<router>-<name>" on the router's LAN
// (10.N.0.10, .11, ...) with its default route through the router. For an
// Open router it adds a public host instead.
func (r *Router) AddHost(name string) *Host {
	r.lab.t.Helper()
	return r.lab.addHost(r.name+"-"+name, r)
}

// AddRouter adds a router whose WAN side is on this router's LAN, for
// double NAT. On an Open router it is the same as Lab.AddRouter.
func (r *Router) AddRouter(cfg RouterConfig) *Router {
	r.lab.t.Helper()
	if r.typ == Open {
		return r.lab.AddRouter(cfg)
	}
	return r.lab.addRouter(cfg, r, false)
}

// SetHairpin turns hairpinning on or off. The NAT table is reloaded, which
// forgets the cone bindings (not conntrack's mappings). No-op for Open.
func (r *Router) SetHairpin(on bool) error {
	if r.typ == Open {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hairpin = on
	return r.applyLocked()
}

// SetUDPTimeout changes the idle UDP mapping lifetime (see
// RouterConfig.UDPTimeout); zero restores Linux's defaults. The NAT table is
// reloaded. No-op for Open.
func (r *Router) SetUDPTimeout(d time.Duration) error {
	if r.typ == Open {
		return nil
	}
	if d < 0 {
		return fmt.Errorf("%w: UDP timeout %v", ErrBadConfig, d)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timeout = d
	unreplied, stream := linuxUDPTimeout, linuxUDPTimeoutStream
	if d > 0 {
		s := strconv.Itoa(int((d + time.Second - 1) / time.Second))
		unreplied, stream = s, s
	}
	if err := r.lab.sysctl(r.ns, "net.netfilter.nf_conntrack_udp_timeout", unreplied); err != nil {
		return err
	}
	if err := r.lab.sysctl(r.ns, "net.netfilter.nf_conntrack_udp_timeout_stream", stream); err != nil {
		return err
	}
	return r.applyLocked()
}

// SetLoss drops each packet forwarded through the router's WAN side, in
// either direction, with probability rate (0 to 1, in steps of 0.0001).
// Zero removes the rule. For an Open router it sets the loss of each of its
// hosts.
func (r *Router) SetLoss(rate float64) error {
	if rate < 0 || rate > 1 {
		return fmt.Errorf("%w: loss rate %v", ErrBadConfig, rate)
	}
	if r.typ == Open {
		for _, h := range r.Hosts() {
			if err := h.SetLoss(rate); err != nil {
				return err
			}
		}
		return nil
	}
	return r.lab.nft(r.ns, lossRuleset(true, rate))
}

// LossCounts reports what the router's loss rule has seen and dropped since
// SetLoss last set a rate; for an Open router, the sum over its hosts.
func (r *Router) LossCounts(ctx context.Context) (LossCounts, error) {
	if r.typ != Open {
		return r.lossCounts(ctx)
	}
	var sum LossCounts
	for _, h := range r.Hosts() {
		c, err := h.LossCounts(ctx)
		if err != nil {
			return LossCounts{}, err
		}
		sum.Seen += c.Seen
		sum.Dropped += c.Dropped
	}
	return sum, nil
}

// applyLocked (re)loads the router's NAT table from its current settings.
func (r *Router) applyLocked() error {
	rules := natRules{Type: r.typ, Public: r.public, LAN: r.lan, Hairpin: r.hairpin, Timeout: r.timeout, AcceptWANInput: r.accept, AllowWANFrom: r.allowWAN}
	return r.lab.nft(r.ns, rules.ruleset())
}

// addRouter builds a router namespace behind parent (nil: the internet).
func (l *Lab) addRouter(cfg RouterConfig, parent *Router, carrier bool) *Router {
	l.t.Helper()
	if cfg.Type == "" {
		cfg.Type = PortRestricted
	}
	if !cfg.Type.valid() {
		l.t.Fatalf("natlab: unknown NAT type %q", cfg.Type)
	}
	if cfg.UDPTimeout < 0 {
		l.t.Fatalf("natlab: negative UDP timeout %v", cfg.UDPTimeout)
	}
	l.mu.Lock()
	n := l.nextRouter
	l.nextRouter++
	l.mu.Unlock()
	if n > 254 {
		l.t.Fatalf("natlab: too many routers")
	}
	if cfg.Name == "" {
		cfg.Name = "r" + strconv.Itoa(n)
		if carrier {
			cfg.Name = "cgn" + strconv.Itoa(n)
		}
	}
	if !validName.MatchString(cfg.Name) {
		l.t.Fatalf("natlab: bad router name %q (want lowercase letters and digits, up to 12)", cfg.Name)
	}
	l.claim(cfg.Name)
	r := &Router{
		node:    node{lab: l, name: cfg.Name},
		typ:     cfg.Type,
		parent:  parent,
		carrier: carrier,
		accept:  cfg.AcceptWANInput,
		hairpin: cfg.Hairpin,
		nextLAN: 10,
	}
	if cfg.Type == Open {
		if cfg.Link != nil {
			l.t.Fatalf("natlab: open router %s has no WAN side to shape", cfg.Name)
		}
		return r
	}
	r.lan = lanPrefix(n, carrier)
	r.ns = l.addNamespace(cfg.Name)

	// WAN side.
	var route string
	upNS, upPort, upBridge := l.inet, "", inetIf
	if parent == nil {
		r.public = l.allocPublic()
		upPort = l.inetPort()
	} else {
		r.public = parent.allocLAN()
		upNS, upPort, upBridge = parent.ns, parent.lanPort(), lanIf
		route = "route add default via " + parent.gateway().String()
	}
	if cfg.Link != nil {
		r.link = l.addLink(cfg.Name, r.ns, upNS, upPort, upBridge, *cfg.Link)
	} else {
		l.must(l.connect(r.ns, wanIf, upNS, upPort, upBridge))
	}
	cmds := []string{
		fmt.Sprintf("addr add %s/%d dev %s", r.public, wanPrefixLen(parent), wanIf),
		"link set " + wanIf + " up",
		"link add " + lanIf + " type bridge",
		"link set " + lanIf + " address " + bridgeMAC(n), // see bridgeMAC
		fmt.Sprintf("addr add %s/%d dev %s", r.gateway(), r.lan.Bits(), lanIf),
		"link set " + lanIf + " up",
	}
	if route != "" {
		cmds = append(cmds, route)
	}
	l.must(l.ip(r.ns, cmds...))
	l.must(l.sysctl(r.ns, "net.ipv4.ip_forward", "1"))
	// LAN hosts talking to each other are plain L2 on the bridge and must
	// not pass the router's netfilter hooks (br_netfilter is on by default).
	_ = l.sysctl(r.ns, "net.bridge.bridge-nf-call-iptables", "0")
	if cfg.UDPTimeout > 0 {
		l.must(r.SetUDPTimeout(cfg.UDPTimeout)) // also loads the NAT table
	} else {
		r.mu.Lock()
		err := r.applyLocked()
		r.mu.Unlock()
		l.must(err)
	}
	if cfg.IPv6 {
		l.setupRouterIPv6(r, n)
	}
	return r
}

// wanPrefixLen is the prefix length of a router's WAN address.
func wanPrefixLen(parent *Router) int {
	if parent == nil {
		return internetPrefix.Bits()
	}
	return parent.lan.Bits()
}

// inetPort names the next bridge port on the internet segment.
func (l *Lab) inetPort() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inetPorts++
	return "p" + strconv.Itoa(l.inetPorts)
}

// allocLAN hands out the next address on the router's LAN.
func (r *Router) allocLAN() netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nextLAN > 254 {
		r.lab.t.Fatalf("natlab: LAN of %s is full", r.name)
	}
	a := r.lan.Addr().As4()
	a[3] = byte(r.nextLAN)
	r.nextLAN++
	return netip.AddrFrom4(a)
}

// lanPort names the next bridge port on the router's LAN.
func (r *Router) lanPort() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lanPorts++
	return "p" + strconv.Itoa(r.lanPorts)
}
