package mainline

import (
	"net"
	"net/netip"

	"github.com/anacrolix/dht/v2/krpc"
)

// peerAddr converts a compact peer address; port 0 and invalid IPs are not
// peers.
func peerAddr(ip net.IP, port int) (netip.AddrPort, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || port <= 0 || port > 65535 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), true
}

// nodeAddrs lists the addresses of nodes.
func nodeAddrs(nodes []krpc.NodeInfo) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(nodes))
	for _, ni := range nodes {
		if a, ok := peerAddr(ni.Addr.IP, ni.Addr.Port); ok {
			out = append(out, a)
		}
	}
	return out
}
