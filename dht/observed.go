package dht

import "net/netip"

// Observation is one reflexive-address report: node By (an IP) answered a
// request of ours and said our packet came from Addr.
type Observation struct {
	By   netip.Addr
	Addr netip.AddrPort
}

// Observed returns the latest reflexive-address reports the node received
// in replies, oldest first (at most 16 per family, a sliding window each;
// IPv4 reports before IPv6 ones). A NAT monitor polls it to notice that
// peers see us at another address (natcheck.Monitor via its Reflexive
// hook); PublicAddr and PublicAddrIn are the majority of each family's
// window.
func (n *Node) Observed() []Observation {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Observation
	for _, st := range n.stacks {
		for _, s := range st.samples {
			out = append(out, Observation{By: s.by, Addr: s.addr})
		}
	}
	return out
}
