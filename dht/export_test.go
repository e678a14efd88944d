package dht

import "net/netip"

// SetLegacyRecords makes a node behave as one from before record extensions
// (see Config.legacyRecords), for the compatibility tests.
func SetLegacyRecords(c *Config) { c.legacyRecords = true }

// ReceiveOffload reports whether the node's socket of fam coalesces
// received runs (udpopt.SetGRO).
func ReceiveOffload(n *Node, fam Family) bool { return n.stacks[fam].gro }

// PublicAddrSeenBy returns the node's majority public address in fam and
// how many nodes reported it: at two or more an adaptive node's join must
// decide whether it is reachable (checkPersistence).
func PublicAddrSeenBy(n *Node, fam Family) (netip.AddrPort, int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return majority(n.stacks[fam].samples)
}
