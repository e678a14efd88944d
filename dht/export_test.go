package dht

// SetLegacyRecords makes a node behave as one from before record extensions
// (see Config.legacyRecords), for the compatibility tests.
func SetLegacyRecords(c *Config) { c.legacyRecords = true }

// ReceiveOffload reports whether the node's socket of fam coalesces
// received runs (udpopt.SetGRO).
func ReceiveOffload(n *Node, fam Family) bool { return n.stacks[fam].gro }
