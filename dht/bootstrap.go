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
// an overload that outlasted the last pause may be longer. Three repeats
// bound what a node that truly has nobody else to find (a network of two)
// pays: 1.75 s of pauses on average, against the join's one lookup that
// finds nodes and never waits.
var joinRetryPauses = [...]time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second}

// minJoinContacts is the smallest routing table, in the family joined,
// that a join's own-id lookup may leave without being repeated: fewer is
// the bootstrap node alone (or nobody), which is what an overloaded
// bootstrap node leaves a joiner with. A higher bound would repeat the
// lookup in every small network (a lab network joins 3-10 nodes one after
// another, each knowing only the earlier ones), and a second contact
// already has its own neighbours to lead the far-bucket refresh to.
const minJoinContacts = 2

// joinLookup looks up the node's own id, self, in fam's overlay, and
// repeats the lookup after each of joinRetryPauses while it found too
// little, within ctx. It reports whether any of the lookups had an answer.
func (n *Node) joinLookup(ctx context.Context, fam Family, self ID) bool {
	answered := false
	for retry := 0; ; retry++ {
		_, err := n.query(ctx, fam, self, CmdFindNode)
		if err != nil {
			n.log.Debug("dht join lookup failed", "family", fam.String(), "err", err)
		}
		answered = answered || err == nil
		if !n.joinFoundTooLittle(fam, err) || retry == len(joinRetryPauses) {
			return answered
		}
		pause := joinRetryPause(joinRetryPauses[retry], rand.Float64())
		n.log.Debug("dht join lookup found too little; looking again", "family", fam.String(), "pause", pause)
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return answered
		}
		n.ctr.joinRetries.Add(1)
	}
}

// joinFoundTooLittle reports whether a join's own-id lookup, which ended
// with err, should be repeated: it failed (no node answered), or fam's
// routing table holds fewer than minJoinContacts nodes after it.
func (n *Node) joinFoundTooLittle(fam Family, err error) bool {
	if err != nil {
		return true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stacks[fam].table.len() < minJoinContacts
}

// joinRetryPause is pause d with jitter: d times 0.5 + u, for u drawn
// uniformly from [0, 1). Nodes whose joins failed in one burst would
// otherwise repeat their lookups in lockstep and make the burst again; so
// they spread over a window as wide as the pause, which keeps its mean.
func joinRetryPause(d time.Duration, u float64) time.Duration {
	return time.Duration(float64(d) * (0.5 + u))
}
