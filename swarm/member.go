package swarm

import (
	"time"
)

// memberTick is how often the membership's timers run (liveness probes,
// shuffles, fill): a fraction of probeAfter, so a silent connection is
// probed and found stale within a tick of its deadline.
const memberTick = 250 * time.Millisecond

// memberLoop runs the overlay's timers.
func (s *Swarm) memberLoop() {
	defer s.wg.Done()
	t := time.NewTicker(memberTick)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		s.overlay.tick(time.Now(), func(k peerKey) (uint64, bool) {
			c := s.conns[k]
			if c == nil {
				return 0, false
			}
			return c.received(), true
		})
		s.applyLocked()
		// The tick may have queued a peer to dial (fill): the dial loop, asleep
		// with nothing due, must look. Without this the peer waited for an
		// unrelated kick, and Flush with it (TestInboundLimitEnforced hung
		// 1 time in 6, a minute each).
		s.kickLocked()
		s.mu.Unlock()
	}
}

// applyLocked carries out what the overlay asked for: control messages,
// demotions (counted as closed at once, so no one sees more than MaxPeers
// open) and redials of silent connections. It never blocks.
func (s *Swarm) applyLocked() {
	acts := s.overlay.take()
	if len(acts) == 0 {
		return
	}
	now := time.Now()
	for _, a := range acts {
		c := s.conns[a.to]
		if c == nil {
			continue
		}
		switch {
		case a.msg != nil:
			if !c.ctl.send(a.msg) {
				s.stats.controlDropped++
			}
		case a.demote:
			s.log.Debug("swarm: demoting a connection to make room", "peer", shortKey(c.RemotePublicKey()))
			c.ctl.send(&memberMsg{Type: msgDisconnect})
			delete(s.conns, a.to)
			s.table.disconnected(c.RemotePublicKey(), now, false)
			s.stats.closed[c.info.Role]++
			s.queueEventLocked(event{conn: c, info: c.info, close: true, err: ErrDemoted})
			c.ctl.demote() // the writer writes the disconnect and closes
			s.notifyLocked()
		case a.redial:
			// The path is gone (a NAT mapping changed under it, the peer
			// crashed): close it and dial the peer again at once, through
			// a new handshake, instead of waiting for the dead timeout.
			s.log.Info("swarm: connection silent; dialling again", "peer", shortKey(c.RemotePublicKey()))
			delete(s.conns, a.to)
			s.table.disconnected(c.RemotePublicKey(), now, false)
			s.table.redial(c.RemotePublicKey(), now)
			s.overlay.disconnected(c.RemotePublicKey(), now)
			s.stats.closed[c.info.Role]++
			s.queueEventLocked(event{conn: c, info: c.info, close: true, err: ErrStale})
			go c.Conn.Close()
			s.notifyLocked()
		}
	}
	s.kickLocked()
}
