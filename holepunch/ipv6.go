package holepunch

import (
	"net"
	"net/netip"

	"github.com/pion/ice/v2"
	"github.com/pion/logging"
	"github.com/pion/transport/v2"
)

// IPv6 beside IPv4. A node may have a second UDP socket, for IPv6 (the DHT
// keeps one socket per family, see dht.Family). The endpoint then runs one
// ICE UDP mux per socket, offers IPv6 host candidates (and the IPv6
// address the DHT sees, when it differs) beside the IPv4 ones, and lets ICE
// check both families at once: an IPv6 host behind a stateful firewall has
// no translation, so two such hosts punch directly whatever NAT their IPv4
// side is behind. That is why a peer pair that both reach IPv6 skips the
// things only IPv4 needs: the early relay for two symmetric NATs and
// birthday punching. TURN stays IPv4: pion/ice v2 opens its TURN client
// socket as udp4 (gatherCandidatesRelay listens on "0.0.0.0:0"), and a
// firewalled IPv6 host needs no relay anyway.

// IPv6State is the node's IPv6 side as the endpoint needs it (Link.IPv6).
type IPv6State struct {
	// Local is the bound address of the IPv6 socket; zero without one.
	Local netip.AddrPort
	// Public is the address IPv6 DHT nodes see our packets come from;
	// zero when unknown.
	Public netip.AddrPort
	// Joined: the node takes part in the IPv6 overlay (an IPv6 node
	// answered it). Only then does the endpoint offer IPv6 candidates:
	// before, nothing shows that its IPv6 reaches anyone.
	Joined bool
}

// usable reports whether the endpoint offers IPv6 candidates now.
func (s IPv6State) usable() bool { return s.Local.IsValid() && s.Joined }

// globalIPv6 reports a public IPv6 address: one a peer on another site can
// reach (not link-local, loopback or unique-local).
func globalIPv6(ip netip.Addr) bool {
	return ip.Is6() && !ip.Is4In6() && ip.IsGlobalUnicast() && !isPrivate(ip)
}

// hasGlobalIPv6 reports whether a payload offers a public IPv6 candidate.
func hasGlobalIPv6(s *signal) bool {
	for _, c := range s.Cands {
		if c.Kind != candRelay && globalIPv6(c.Addr.Addr()) {
			return true
		}
	}
	return false
}

// bothIPv6 reports whether both payloads offer public IPv6 candidates, so
// ICE will try a direct IPv6 path: no NAT of either side's IPv4 stands in
// its way, and neither the early relay nor birthday punching is needed.
func bothIPv6(a, b *signal) bool { return hasGlobalIPv6(a) && hasGlobalIPv6(b) }

// familyNet is a transport.Net whose interfaces list only the addresses of
// one family. The ICE mux of an IPv6 socket bound to [::] asks for both
// families' interface addresses (pion's UDPMuxDefault does so for any
// unspecified IPv6 address); given this, its host candidates are the IPv6
// ones only, and the IPv4 ones stay with the IPv4 socket's mux.
type familyNet struct {
	transport.Net
	v6 bool
}

func (n familyNet) Interfaces() ([]*transport.Interface, error) {
	ifs, err := n.Net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]*transport.Interface, 0, len(ifs))
	for _, ifc := range ifs {
		out = append(out, n.filter(ifc))
	}
	return out, nil
}

func (n familyNet) InterfaceByIndex(i int) (*transport.Interface, error) {
	ifc, err := n.Net.InterfaceByIndex(i)
	if err != nil {
		return nil, err
	}
	return n.filter(ifc), nil
}

func (n familyNet) InterfaceByName(name string) (*transport.Interface, error) {
	ifc, err := n.Net.InterfaceByName(name)
	if err != nil {
		return nil, err
	}
	return n.filter(ifc), nil
}

// filter returns a copy of ifc with the addresses of the family only.
func (n familyNet) filter(ifc *transport.Interface) *transport.Interface {
	out := transport.NewInterface(ifc.Interface)
	addrs, _ := ifc.Addrs()
	for _, a := range addrs {
		var ip net.IP
		switch v := a.(type) {
		case *net.IPNet:
			ip = v.IP
		case *net.IPAddr:
			ip = v.IP
		}
		if ip != nil && (ip.To4() == nil) == n.v6 {
			out.AddAddress(a)
		}
	}
	return out
}

// muxes is the endpoint's ICE UDP muxes: one per socket of the node, by
// family. all is what agents use: the one mux, or both behind pion's
// MultiUDPMuxDefault (which picks a mux by the candidate's local address).
type muxes struct {
	socks [2]*muxSocket // [0] IPv4, [1] IPv6; nil without that socket
	all   ice.UDPMux
}

// newMuxes makes a mux for each of the link's sockets.
func newMuxes(link Link, tn transport.Net, log logging.LeveledLogger) *muxes {
	m := &muxes{}
	var all []ice.UDPMux
	add := func(local netip.AddrPort) {
		v6 := local.Addr().Is6() && !local.Addr().Is4In6()
		i := 0
		if v6 {
			i = 1
		}
		if m.socks[i] != nil {
			return
		}
		s := newMuxSocket(link, local)
		m.socks[i] = s
		all = append(all, ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: s, Net: familyNet{Net: tn, v6: v6}, Logger: log}))
	}
	add(link.LocalAddr())
	if v6 := link.IPv6().Local; v6.IsValid() {
		add(v6)
	}
	m.all = all[0]
	if len(all) > 1 {
		m.all = ice.NewMultiUDPMuxDefault(all...)
	}
	return m
}

// sockFor returns the mux socket for datagrams from addr, nil when the node
// has no socket of its family.
func (m *muxes) sockFor(from netip.AddrPort) *muxSocket {
	if from.Addr().Is6() && !from.Addr().Is4In6() {
		return m.socks[1]
	}
	return m.socks[0]
}

// dropped sums the datagrams every mux socket lost to a full queue.
func (m *muxes) dropped() uint64 {
	var n uint64
	for _, s := range m.socks {
		if s != nil {
			n += s.dropped.Load()
		}
	}
	return n
}

// networkTypes is the ICE network types of the agents: those of the
// sockets the node has.
func (m *muxes) networkTypes() []ice.NetworkType {
	var out []ice.NetworkType
	if m.socks[0] != nil {
		out = append(out, ice.NetworkTypeUDP4)
	}
	if m.socks[1] != nil {
		out = append(out, ice.NetworkTypeUDP6)
	}
	return out
}

// offersIPv6 reports whether this endpoint offers a public IPv6
// candidate: the node joined the IPv6 overlay and either DHT nodes see it
// at a public IPv6 address or its socket is bound to one.
func (e *Endpoint) offersIPv6() bool {
	v6 := e.cfg.Link.IPv6()
	if !v6.usable() {
		return false
	}
	if globalIPv6(v6.Public.Addr()) || globalIPv6(v6.Local.Addr()) {
		return true
	}
	if !v6.Local.Addr().IsUnspecified() {
		return false
	}
	// Bound to [::]: any public address of the host's interfaces.
	ifs, err := familyNet{Net: e.cfg.Net, v6: true}.Interfaces()
	if err != nil {
		return false
	}
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && globalIPv6(ip) {
					return true
				}
			}
		}
	}
	return false
}

// sameSubnet6 reports whether an IPv6 path stays on one link: the local
// candidate's address and the remote one share their /64 (the subnet size
// of every IPv6 LAN, RFC 4291 §2.5.1). Such a path is a LAN path although
// both addresses are public.
func sameSubnet6(local string, remote netip.Addr) bool {
	l, err := netip.ParseAddr(local)
	if err != nil || !l.Is6() || l.Is4In6() || !remote.Is6() || remote.Is4In6() {
		return false
	}
	p, _ := l.Prefix(64)
	return p.Contains(remote)
}
