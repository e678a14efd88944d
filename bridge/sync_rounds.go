package bridge

import (
	"context"
	"math/rand/v2"
	"time"
)

// When comparisons from the root start (the protocol is in sync.go): on connect, every
// SyncInterval, and soon after a link to another swarmdb peer ends.
const (
	// defaultSyncInterval: Config.SyncInterval's default.
	defaultSyncInterval = time.Minute
	// syncBusyRetry: a comparison due while the last one is still sending repairs waits this
	// long and looks again.
	syncBusyRetry = time.Second
	// lostLinkWait: after a link to a swarmdb peer ends, the other peers are compared within
	// this long (see compareSoon).
	lostLinkWait = 2 * time.Second
)

// startSync begins anti-entropy with a swarmdb peer, once per connection.
func (p *Peer) startSync() {
	if p.b.cfg.DisableSync {
		return
	}
	p.mu.Lock()
	started := p.syncStarted
	p.syncStarted = true
	p.mu.Unlock()
	if started {
		return
	}
	p.syncRound()
}

// syncRound starts a comparison from the root and arms the next periodic one.
func (p *Peer) syncRound() {
	p.b.stats.syncRounds.Add(1)
	p.sendTree("")
	p.scheduleSync(p.b.syncWait())
}

// syncWait is the wait before the next periodic comparison: SyncInterval shortened at random
// by up to a quarter, so the peers of a node do not all compare at once.
func (b *Bridge) syncWait() time.Duration {
	d := b.cfg.SyncInterval
	return d - time.Duration(rand.Int64N(int64(d/4)+1))
}

// scheduleSync arranges a comparison from the root with p within d (sooner if one is already
// due sooner). Only swarmdb peers take part.
func (p *Peer) scheduleSync(d time.Duration) {
	if p.b.cfg.DisableSync || !p.swarmdb.Load() || p.ctx.Err() != nil {
		return
	}
	due := time.Now().Add(d)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.syncTimer == nil:
		p.syncTimer = time.AfterFunc(d, p.syncTick)
		context.AfterFunc(p.ctx, func() {
			p.mu.Lock()
			p.syncTimer.Stop()
			p.mu.Unlock()
		})
	case !p.syncDue.IsZero() && !p.syncDue.After(due):
		return // already due sooner
	default:
		p.syncTimer.Reset(d)
	}
	p.syncDue = due
}

// compareSoon arranges a comparison with every swarmdb peer within lostLinkWait; it runs when
// a link to a swarmdb peer ends. The link may have been carrying puts (its queue, the "have"
// entries noted for it), and the other neighbours did not relay those to that peer, which was
// listed in their "to"; the next periodic round could be SyncInterval away. Both ends of the
// link compare with their other peers, so both get what was lost on it.
func (b *Bridge) compareSoon() {
	b.mu.Lock()
	peers := b.swarmdbPeersLocked()
	b.mu.Unlock()
	for _, q := range peers {
		q.scheduleSync(lostLinkWait)
	}
}

// swarmdbPeersLocked returns the peers that speak the swarmdb extensions. b.mu must be held.
func (b *Bridge) swarmdbPeersLocked() []*Peer {
	peers := make([]*Peer, 0, len(b.peers))
	for p := range b.peers {
		if p.swarmdb.Load() {
			peers = append(peers, p)
		}
	}
	return peers
}

// syncTick starts a sync round, unless the last one is still sending its repairs.
func (p *Peer) syncTick() {
	p.mu.Lock()
	p.syncDue = time.Time{}
	busy := len(p.catchup) > 0
	p.mu.Unlock()
	if p.ctx.Err() != nil {
		return
	}
	if busy {
		p.scheduleSync(syncBusyRetry)
		return
	}
	p.syncRound()
}
