package dht

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
)

// maxBootstrap bounds the bootstrap list. Nodes found at run time (a cache
// file, mainline) are added after the configured ones; beyond the bound the
// oldest added ones are dropped, the configured ones never.
const maxBootstrap = 64

// AddBootstrap adds nodes to join through, for Bootstrap and for lookups
// that find the routing table short. Nodes found after the start go here:
// the ones cached by an earlier run, or found under the bootstrap name on
// the mainline DHT. Duplicates, invalid addresses and the node's own
// address are ignored.
func (n *Node) AddBootstrap(addrs ...netip.AddrPort) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.addBootstrapLocked(addrs)
}

func (n *Node) addBootstrapLocked(addrs []netip.AddrPort) {
	configured := len(n.cfg.Bootstrap)
	for _, a := range addrs {
		a = unmapAddrPort(a)
		if !a.IsValid() || a.Port() == 0 || a == n.stackFor(a).local || slices.Contains(n.bootstrap, a) {
			continue
		}
		n.bootstrap = append(n.bootstrap, a)
		if len(n.bootstrap) > maxBootstrap && configured < maxBootstrap {
			n.bootstrap = slices.Delete(n.bootstrap, configured, configured+1)
		}
	}
}

// BootstrapNodes returns the nodes Bootstrap joins through.
func (n *Node) BootstrapNodes() []netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.bootstrap)
}

// Contacts returns the addresses of every node in the routing tables (of
// both families, IPv4 first): the persistent nodes this node knows to be
// alive, worth remembering for the next start.
func (n *Node) Contacts() []netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []netip.AddrPort
	for _, st := range n.stacks {
		out = append(out, st.table.all()...)
	}
	return out
}

// VerifyNode checks that addr runs a persistent swarmdb DHT node: it must
// answer a PING, from that address, with the node id that address implies
// (NodeID). Anyone can claim an address is a swarmdb node (the mainline
// bootstrap name is open to every announcer), so candidates pass this
// before they are used.
func (n *Node) VerifyNode(ctx context.Context, addr netip.AddrPort) error {
	addr = unmapAddrPort(addr)
	reply, err := n.requestTries(ctx, addr, &Message{Command: CmdPing, Pad: 64}, 2)
	if err != nil {
		return fmt.Errorf("dht: verify %s: %w", addr, err)
	}
	if reply.ID == nil || *reply.ID != NodeID(addr) {
		return fmt.Errorf("dht: verify %s: %w", addr, ErrNotPersistent)
	}
	return nil
}
