package natlab

import (
	"fmt"
	"slices"
)

// MoveTo moves the host to another network, as a laptop moves from one
// Wi-Fi to another: its eth0 (with every address on it) goes away, and a
// new eth0 comes up on router r's LAN (nil or an Open router: the internet
// segment) with a fresh address and a default route through r. The
// namespace stays, so processes keep running and sockets bound to 0.0.0.0
// stay open; their packets now leave through r (and its NAT).
//
// Host's address fields are immutable, so MoveTo returns the host's new
// handle. The old one still runs things in the same namespace, but its IP
// and Router describe where it was. Carrier-grade NAT LANs are not
// supported. Call it from the lab test's goroutine (setup failures end the
// test with t.Fatalf).
func (h *Host) MoveTo(r *Router) *Host {
	l := h.lab
	l.t.Helper()
	if r != nil && r.carrier {
		l.t.Fatalf("natlab: MoveTo %s: carrier-grade NAT LANs are not supported", r.name)
	}
	l.must(l.ip(h.ns, "link del "+hostIf))

	nh := &Host{node: h.node}
	var route string
	if r == nil || r.typ == Open {
		nh.ip, nh.bits = l.allocPublic(), internetPrefix.Bits()
		l.must(l.connect(h.ns, hostIf, l.inet, l.inetPort(), inetIf))
	} else {
		nh.router = r
		nh.ip, nh.bits = r.allocLAN(), r.lan.Bits()
		l.must(l.connect(h.ns, hostIf, r.ns, r.lanPort(), lanIf))
		route = "route add default via " + r.gateway().String()
	}
	cmds := []string{fmt.Sprintf("addr add %s/%d dev %s", nh.ip, nh.bits, hostIf), "link set " + hostIf + " up"}
	if route != "" {
		cmds = append(cmds, route)
	}
	l.must(l.ip(h.ns, cmds...))

	if old := h.router; old != nil {
		old.mu.Lock()
		old.hosts = slices.DeleteFunc(old.hosts, func(x *Host) bool { return x.ns == h.ns })
		old.mu.Unlock()
	}
	if nh.router != nil {
		nh.router.mu.Lock()
		nh.router.hosts = append(nh.router.hosts, nh)
		nh.router.mu.Unlock()
	}
	return nh
}
