package dht

import "net/netip"

// Observation is one reflexive-address report: node By (an IP) answered a
// request of ours and said our packet came from Addr.
type Observation struct {
	By   netip.Addr
	Addr netip.AddrPort
}

// Observed returns the latest reflexive-address reports the node received
// in replies, oldest first (at most 16, a sliding window). A NAT monitor
// polls it to notice that peers see us at another address (holepunch.Monitor
// via its Reflexive hook); PublicAddr is the majority of the same window.
func (n *Node) Observed() []Observation {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Observation, len(n.samples))
	for i, s := range n.samples {
		out[i] = Observation{By: s.by, Addr: s.addr}
	}
	return out
}
