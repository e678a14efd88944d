package dht

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"
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

// joinRetryPauses are the pauses before each repeat of a join's lookup of
// its own id that found too little (joinFoundTooLittle), before jitter
// (joinRetryPause). When many nodes join through one bootstrap node at
// once, the bootstrap node answers the early ones before it has verified
// anyone (a ping round trip each, at most maxVerifying at a time; the
// others are dropped until they send again), or not at all: measured, up
// to 22 of 160 persistent nodes joining one bootstrap node at once on a
// loaded 2-core machine ended their join knowing the bootstrap node alone,
// and stayed so until a bucket refresh, RefreshInterval (5 min) later. The
// first pause is a give-up wait at its floor (minRequestWait), time for a
// round of the bootstrap node's verifications; each next one doubles, as
// an overload that outlasted the last pause may be longer. The repeats run
// after the join (lookAgain): a node that truly has nobody else to find (a
// network of two, a first node) must not wait for them.
var joinRetryPauses = [...]time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second}

// minJoinContacts is the smallest routing table, in the family joined,
// that ends a join's repeated lookups whatever they find: fewer is the
// bootstrap node alone (or nobody), which is what an overloaded bootstrap
// node leaves a joiner with.
const minJoinContacts = 2

// lookAgain repeats, in the background, the lookups of a join that left
// fewer than K nodes in fam's routing table: after each of
// joinRetryPauses, the lookup of the node's own id, until one finds no
// node it did not know (a network smaller than K: one repeat) or the
// table holds K, or the pauses run out; then the far buckets are filled
// again from what the repeats found. A table of fewer than
// minJoinContacts is repeated for in any case. In a burst of 160 joins
// through one bootstrap node (TestNodePortMapNATLab's), the nodes that
// joined while the bootstrap node had verified only a few others ended
// with tables of 1 or 8 and kept them until a bucket refresh. One runs per
// family at a time.
func (n *Node) lookAgain(fam Family) {
	st := n.stacks[fam]
	if !st.lookingAgain.CompareAndSwap(false, true) {
		return
	}
	n.goTracked(func() {
		defer st.lookingAgain.Store(false)
		grew := false
		for _, d := range joinRetryPauses {
			t := time.NewTimer(joinRetryPause(d, rand.Float64()))
			select {
			case <-t.C:
			case <-n.ctx.Done():
				t.Stop()
				return
			}
			n.ctr.joinRetries.Add(1)
			n.mu.Lock()
			self := st.id
			n.mu.Unlock()
			before := n.tableLen(fam)
			_, err := n.query(n.ctx, fam, self, CmdFindNode)
			after := n.tableLen(fam)
			grew = grew || after > before
			if err == nil && after >= minJoinContacts && (after == before || after >= n.cfg.K) {
				break
			}
			n.log.Debug("dht join lookup found more, or too little; looking again", "family", fam.String(), "table", after, "err", err)
		}
		if grew {
			n.refreshFarBuckets(n.ctx, fam)
		}
	})
}

// joinFoundTooLittle reports whether a join left fewer than K nodes in
// fam's routing table (lookAgain).
func (n *Node) joinFoundTooLittle(fam Family) bool { return n.tableLen(fam) < n.cfg.K }

// tableLen is how many nodes fam's routing table holds.
func (n *Node) tableLen(fam Family) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stacks[fam].table.len()
}

// joinRetryPause is pause d with jitter: d times 0.5 + u, for u drawn
// uniformly from [0, 1). Nodes whose joins failed in one burst would
// otherwise repeat their lookups in lockstep and make the burst again; so
// they spread over a window as wide as the pause, which keeps its mean.
func joinRetryPause(d time.Duration, u float64) time.Duration {
	return time.Duration(float64(d) * (0.5 + u))
}
