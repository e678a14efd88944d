package dht

import (
	"context"
	"crypto/ed25519"
	"net/netip"
	"slices"
	"time"
)

// maintainLoop runs the periodic work: record expiry, liveness pings of the
// oldest contacts, bucket refreshes and relay keepalives.
func (n *Node) maintainLoop() {
	defer n.wg.Done()
	tick := min(n.cfg.RelayKeepalive, n.cfg.PingInterval, n.cfg.RefreshInterval, time.Second) / 2
	ticker := time.NewTicker(max(tick, 10*time.Millisecond))
	defer ticker.Stop()
	var lastGC, lastPing, lastRefresh, lastKeepalive time.Time
	now := time.Now()
	lastGC, lastPing, lastRefresh, lastKeepalive = now, now, now, now
	gcEvery := max(n.cfg.RecordTTL/4, 10*time.Millisecond)
	for {
		select {
		case <-n.closed:
			return
		case now = <-ticker.C:
		}
		if now.Sub(lastGC) >= gcEvery {
			lastGC = now
			n.mu.Lock()
			n.store.gc(now)
			n.mu.Unlock()
		}
		if now.Sub(lastPing) >= n.cfg.PingInterval {
			lastPing = now
			n.pingOldest(now)
		}
		if now.Sub(lastRefresh) >= n.cfg.RefreshInterval/4 {
			lastRefresh = now
			n.refreshBuckets(now)
		}
		if now.Sub(lastKeepalive) >= n.cfg.RelayKeepalive {
			lastKeepalive = now
			n.keepRelays()
		}
	}
}

// pingOldest checks the three least recently seen contacts; Kademlia
// tables otherwise keep dead nodes until a lookup trips over them.
func (n *Node) pingOldest(now time.Time) {
	n.mu.Lock()
	var old []contact
	for _, st := range n.stacks {
		for _, c := range st.table.oldest(3, n.cfg.PingInterval, now) {
			old = append(old, *c) // the table owns c; read it only under mu
		}
	}
	n.mu.Unlock()
	for _, c := range old {
		n.goTracked(func() { n.evictionPing(&c) })
	}
}

// refreshBuckets runs one lookup, in each family, into a bucket that saw
// no traffic for the refresh interval (Kademlia §2.3).
func (n *Node) refreshBuckets(now time.Time) {
	for _, st := range n.stacks {
		if st.conn == nil {
			continue
		}
		var random ID
		fillRandom(random[:])
		n.mu.Lock()
		target, ok := st.table.staleBucket(n.cfg.RefreshInterval, now, random)
		n.mu.Unlock()
		if ok {
			n.goTracked(func() { _, _ = n.query(n.closedCtx(), st.fam, target, CmdFindNode) })
		}
	}
}

// keepRelays pings every relay of every announced key. The ping keeps the
// NAT mapping toward the relay alive, so the relay can forward signaling
// in. A relay that stops answering is dropped and the key re-registers
// with fresh relays.
func (n *Node) keepRelays() {
	type job struct {
		set   *relaySet
		relay netip.AddrPort
	}
	var jobs []job
	n.mu.Lock()
	var self []netip.AddrPort
	for _, st := range n.stacks {
		self = append(self, n.publicAddrLocked(st))
	}
	for _, set := range n.announced {
		for _, r := range set.relays {
			if !slices.Contains(self, r) {
				jobs = append(jobs, job{set, r})
			}
		}
	}
	n.mu.Unlock()
	for _, j := range jobs {
		n.goTracked(func() {
			ctx := n.closedCtx()
			if reply, err := n.request(ctx, j.relay, &Message{Command: CmdPing}); err == nil {
				n.reregisterIfMoved(ctx, j.set, j.relay, unmapAddrPort(reply.Addr))
				return
			}
			n.log.Info("relay stopped answering", "addr", j.relay)
			n.mu.Lock()
			kept := j.set.relays[:0:0]
			for _, r := range j.set.relays {
				if r != j.relay {
					kept = append(kept, r)
				}
			}
			j.set.relays = kept
			j.set.dropped++
			priv := j.set.priv
			n.mu.Unlock()
			if _, err := n.ensureRelays(ctx, priv); err != nil {
				n.log.Warn("relay re-registration failed", "err", err)
			}
		})
	}
}

// reregisterIfMoved registers set's key at relay again when the relay
// sees our packets come from another address than our registration did
// (from). A NAT that lost or changed our mapping (a router reboot, a
// flushed conntrack table, a symmetric NAT's new port) would otherwise
// leave the relay forwarding signaling to a mapping that no longer exists
// until the key is announced again, minutes later; the keepalive's reply
// names the new address within one RelayKeepalive.
func (n *Node) reregisterIfMoved(ctx context.Context, set *relaySet, relay, from netip.AddrPort) {
	n.mu.Lock()
	was := set.seen[relay]
	priv, relays := set.priv, slices.Clone(set.relays)
	n.mu.Unlock()
	if !from.IsValid() || !was.IsValid() || from == was {
		return
	}
	n.log.Info("our address at a relay changed; registering again", "relay", relay, "was", was, "now", from)
	pub := priv.Public().(ed25519.PublicKey)
	seen, err := n.registerAt(ctx, relay, KeyTarget(pub), priv, recordOf(pub, relays))
	if err != nil {
		n.log.Debug("relay re-registration failed", "addr", relay, "err", err)
		return
	}
	n.mu.Lock()
	if set.seen != nil {
		set.seen[relay] = seen
	}
	n.mu.Unlock()
}
