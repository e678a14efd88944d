package dht

import (
	"net/netip"
	"time"
)

// deadTTL is how long a node that missed every retry of a query request is
// skipped by later queries. Other nodes keep naming a dead node in their
// replies until their own ping rounds drop it (up to PingInterval); without
// this memory every lookup in that time would wait out its timeouts again.
// 15 s is short enough that a node back from a blip is used again soon.
const deadTTL = 15 * time.Second

// maxDead bounds the memory of dead nodes.
const maxDead = 1024

// markDead records that addr missed every retry and drops it from the
// routing table at once.
func (n *Node) markDead(addr netip.AddrPort, now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.table.failed(NodeID(addr))
	if len(n.dead) >= maxDead {
		for a, until := range n.dead {
			if now.After(until) {
				delete(n.dead, a)
			}
		}
		if len(n.dead) >= maxDead {
			clear(n.dead)
		}
	}
	n.dead[addr] = now.Add(deadTTL)
}

// recentlyDead reports whether addr missed a query within deadTTL.
func (n *Node) recentlyDead(addr netip.AddrPort, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	until, ok := n.dead[addr]
	if ok && now.After(until) {
		delete(n.dead, addr)
		return false
	}
	return ok
}
