package node

import (
	"net/netip"

	"github.com/swarmdb/swarmdb/dht"
)

// ListenOff as ListenAddr6 (Config, BootstrapConfig, NetcheckConfig)
// means no IPv6 socket.
const ListenOff = dht.ListenOff

// LocalAddr6 is the UDP address of the node's IPv6 socket, zero without
// one (Config.ListenAddr6) or before Start. For an IPv6-only node it is
// LocalAddr.
func (n *Node) LocalAddr6() netip.AddrPort {
	if n.ready() != nil {
		return netip.AddrPort{}
	}
	if dn := n.swarm.Node(); dn != nil {
		return dn.LocalAddrIn(dht.IPv6)
	}
	return netip.AddrPort{}
}
