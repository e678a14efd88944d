package swarm

import (
	"context"
	"time"
)

// Discovery is one joined topic: in server mode it keeps this node
// announced under the topic, in client mode it looks the topic up and
// queues the peers found. Swarm.Join returns it.
type Discovery struct {
	// immutable after Join
	s      *Swarm
	topic  Topic
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns
	wake   chan struct{} // buffered 1: refresh now

	// guarded by s.mu
	server, client bool
	flushed        bool  // first round finished
	lastErr        error // of the last round
	rounds         int
}

// Topic returns the topic key.
func (d *Discovery) Topic() Topic { return d.topic }

// Refresh announces and looks up again now.
func (d *Discovery) Refresh() {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	d.refresh()
}

// refresh wakes the loop; safe with or without s.mu.
func (d *Discovery) refresh() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Flushed waits until the first announce and lookup finished and returns
// the error of the last round, if any.
func (d *Discovery) Flushed(ctx context.Context) error {
	for {
		d.s.mu.Lock()
		flushed, err, ch := d.flushed, d.lastErr, d.s.changed
		d.s.mu.Unlock()
		if flushed {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.done:
			return ErrClosed
		case <-ch:
		}
	}
}

// Leave is Swarm.Leave for this topic.
func (d *Discovery) Leave(ctx context.Context) error { return d.s.Leave(ctx, d.topic) }

// retryAfterError is the first wait after a failed round; it doubles up to
// the refresh interval. A DHT that is briefly unreachable (bootstrap node
// restarting, laptop waking up) is tried again soon.
const retryAfterError = 2 * time.Second

// run is the topic's discovery loop.
func (d *Discovery) run(ctx context.Context) {
	s := d.s
	defer s.wg.Done()
	defer close(d.done)
	errWait := retryAfterError
	for {
		s.mu.Lock()
		server, client := d.server, d.client
		s.mu.Unlock()
		err := d.round(ctx, server, client)
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		d.flushed, d.lastErr = true, err
		d.rounds++
		wait := s.cfg.RefreshInterval + time.Duration(s.rng.Float64()*float64(s.cfg.RefreshInterval/5))
		s.notifyLocked()
		s.mu.Unlock()
		if err != nil {
			wait = min(wait, errWait)
			errWait *= 2
		} else {
			errWait = retryAfterError
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-d.wake:
			t.Stop()
		}
	}
}

// round announces (server) and looks up (client) once. The announce goes
// first: two peers that join at the same instant then always find each
// other, since the one whose lookup runs later sees the other's record.
func (d *Discovery) round(ctx context.Context, server, client bool) error {
	s := d.s
	if err := s.disc.ready(ctx); err != nil {
		s.log.Debug("swarm: dht not ready", "topic", d.topic.Short(), "err", err)
	}
	var firstErr error
	if server {
		if err := s.disc.announce(ctx, d.topic, s.key); err != nil {
			s.log.Debug("swarm: announce failed", "topic", d.topic.Short(), "err", err)
			firstErr = err
		} else {
			s.log.Debug("swarm: announced", "topic", d.topic.Short())
			s.mu.Lock()
			s.stats.announces++
			s.mu.Unlock()
		}
	}
	if client {
		recs, err := s.disc.lookup(ctx, d.topic)
		if err != nil {
			s.log.Debug("swarm: lookup failed", "topic", d.topic.Short(), "err", err)
			if firstErr == nil {
				firstErr = err
			}
		} else {
			s.log.Debug("swarm: lookup done", "topic", d.topic.Short(), "peers", len(recs))
			s.mu.Lock()
			s.stats.lookups++
			s.mu.Unlock()
			s.found(d.topic, recs, nil)
		}
	}
	return firstErr
}
