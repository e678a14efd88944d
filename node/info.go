package node

import (
	"net/netip"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/natcheck"
)

// LocalAddr is the UDP address of the node's socket (zero before Start).
func (n *Node) LocalAddr() netip.AddrPort {
	if n.ready() != nil {
		return netip.AddrPort{}
	}
	return n.swarm.LocalAddr()
}

// NAT is the last NAT measurement (zero before the first one finished, and
// for a LAN-only node, which has no DHT nodes to measure against).
func (n *Node) NAT() natcheck.Report {
	if n.ready() != nil {
		return natcheck.Report{}
	}
	return n.swarm.NAT()
}

// DHTStats is a snapshot of the DHT node's counters; ok is false when the
// node runs no DHT (LAN only) or is not started.
func (n *Node) DHTStats() (st dht.Stats, ok bool) {
	if n.ready() != nil {
		return dht.Stats{}, false
	}
	dn := n.swarm.Node()
	if dn == nil {
		return dht.Stats{}, false
	}
	return dn.Stats(), true
}
