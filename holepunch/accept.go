package holepunch

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"net/netip"
	"time"

	"github.com/pion/ice/v2"

	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/secure"
)

// This file is the server side of connect-by-key: answering message 1.

// handleSignal answers message 1 of a peer that dials us. It runs on a
// goroutine of the DHT node and must return quickly: everything slow (ICE,
// the session) happens on the endpoint's own goroutine after the answer.
func (e *Endpoint) handleSignal(from netip.AddrPort, msg1 []byte) []byte {
	start := time.Now()
	sum := sha256.Sum256(msg1)
	e.mu.Lock()
	if a, ok := e.answers[sum]; ok && start.Before(a.expires) {
		e.stats.RetransmittedAnswered++
		e.mu.Unlock()
		return a.msg2
	}
	if e.closed || e.cfg.OnConnection == nil {
		e.mu.Unlock()
		return nil
	}
	ip := from.Addr()
	if e.inflightN >= e.cfg.MaxHandshakes || e.inflight[ip] >= e.cfg.MaxHandshakesPerIP {
		e.stats.Busy++
		e.mu.Unlock()
		return nil // no answer: reading message 1 costs two X25519 operations
	}
	e.inflightN++
	e.inflight[ip]++
	e.mu.Unlock()
	release := func() {
		e.mu.Lock()
		e.inflightN--
		if e.inflight[ip]--; e.inflight[ip] <= 0 {
			delete(e.inflight, ip)
		}
		e.mu.Unlock()
	}

	resp, remote, payload, err := secure.ReadMsg1(e.cfg.Key, prologue, msg1)
	if err != nil {
		release()
		e.count(func(s *EndpointStats) { s.BadHandshakes++ })
		e.log.Debug("bad message 1", "addr", from, "err", err)
		return nil
	}
	peer, err := parseSignal(payload)
	if err != nil || peer.Code != CodeOK {
		release()
		e.count(func(s *EndpointStats) { s.BadHandshakes++ })
		e.log.Debug("bad signaling payload", "addr", from, "peer", short(remote), "err", err)
		return nil
	}
	if !e.freshStamp(remote, resp.Timestamp(), start) {
		release()
		e.count(func(s *EndpointStats) { s.Replays++ })
		return nil
	}
	refuse := func(code Code) []byte {
		defer release()
		msg2, _, err := resp.WriteMsg2(appendSignal(nil, &signal{Code: code}))
		if err != nil {
			return nil
		}
		e.remember(sum, msg2, start)
		return msg2
	}
	if fw := e.cfg.Firewall; fw != nil {
		if err := fw(remote, peer.Hello); err != nil {
			e.count(func(s *EndpointStats) { s.Refused++ })
			e.log.Debug("firewall refused peer", "peer", short(remote), "err", err)
			return refuse(CodeRefused)
		}
	}
	if code := e.glare(remote); code != CodeOK {
		return refuse(code)
	}
	mapping, filtering := e.advertisedNAT()
	switch {
	case peer.Mode == ModeAuto && peer.Mapping == natcheck.MappingEndpointDependent && mapping == natcheck.MappingEndpointDependent &&
		peer.Filtering != natcheck.FilteringEndpointIndependent && filtering != natcheck.FilteringEndpointIndependent &&
		!(hasGlobalIPv6(peer) && e.offersIPv6()):
		// Both NATs pick a new port per destination and filter: no
		// direct path over IPv4. A side whose router forwards a mapped
		// port to it (endpoint-independent filtering) is reachable there,
		// and when both have IPv6 ICE connects them directly; then ICE
		// runs.
		return refuse(CodeUseRelay)
	case peer.Mode == ModeRelay && !hasKind(peer.Cands, candRelay):
		return refuse(CodeNoRelay)
	}

	// A fresh, authenticated message 1 from a key supersedes that key's
	// handshake still in progress: the peer gave up on it. Its ICE agent
	// must be gone before ours starts, since two agents toward one remote
	// address steal each other's packets (go-deps.md pitfall P1).
	ctx, cancel := context.WithTimeout(e.ctx, e.cfg.ConnectTimeout)
	finished := e.supersede(remote, cancel)
	e.dropConn(remote)

	agent, err := newAgent(e.agentConfig(nil))
	if err != nil {
		cancel()
		close(finished)
		release()
		e.log.Warn("ice agent", "err", err)
		return nil
	}
	local, err := e.localSignal(ctx, agent, CodeOK, peer.Mode)
	if err != nil {
		cancel()
		_ = agent.Close()
		close(finished)
		release()
		return nil
	}
	local.Secret = peer.Secret
	msg2, keys, err := resp.WriteMsg2(appendSignal(nil, local))
	if err != nil {
		cancel()
		_ = agent.Close()
		close(finished)
		release()
		return nil
	}
	e.remember(sum, msg2, start)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer release()
		defer close(finished)
		defer cancel()
		e.accept(ctx, agent, local, peer, keys, start)
	}()
	return msg2
}

// accept finishes an incoming connection after message 2 went out.
func (e *Endpoint) accept(ctx context.Context, agent *ice.Agent, local, peer *signal, keys secure.Keys, start time.Time) {
	tr, err := e.punch(ctx, agent, false, local, peer)
	if err != nil {
		_ = agent.Close()
		e.log.Debug("incoming punch failed", "peer", short(keys.Remote), "err", err)
		return
	}
	c, err := e.openSession(ctx, tr, keys, start, false)
	if err != nil {
		e.log.Debug("incoming session failed", "peer", short(keys.Remote), "err", err)
		return
	}
	e.count(func(s *EndpointStats) { s.Accepted++ })
	e.cfg.OnConnection(c)
}

// supersedeWait bounds the wait for a superseded handshake to close its
// ICE agent; closing takes microseconds, the bound is for safety.
const supersedeWait = time.Second

// supersede cancels the handshake in progress from remote, if any, waits
// until it has released its ICE agent, and records the new one. The
// returned channel must be closed when the new handshake has released its
// agent.
func (e *Endpoint) supersede(remote ed25519.PublicKey, cancel context.CancelFunc) chan struct{} {
	key := string(remote)
	h := &inbound{cancel: cancel, done: make(chan struct{})}
	e.mu.Lock()
	prev := e.incoming[key]
	e.incoming[key] = h
	e.mu.Unlock()
	if prev != nil {
		prev.end()
	}
	go func() {
		<-h.done
		e.mu.Lock()
		if e.incoming[key] == h {
			delete(e.incoming, key)
		}
		e.mu.Unlock()
	}()
	return h.done
}

// inbound is an incoming handshake in progress.
type inbound struct {
	cancel context.CancelFunc
	done   chan struct{} // closed once its ICE agent is closed
}

// end cancels the handshake and waits, at most supersedeWait, until its
// ICE agent is closed, so a new agent toward the same address can start
// (pitfall P1).
func (h *inbound) end() {
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(supersedeWait):
	}
}

// glare settles a dial from remote that meets our own dial to it: the
// larger key's outgoing dial wins (Hyperswarm's rule), so both sides agree
// without another message.
func (e *Endpoint) glare(remote ed25519.PublicKey) Code {
	e.mu.Lock()
	defer e.mu.Unlock()
	ds := e.dialing[string(remote)]
	if ds == nil {
		return CodeOK
	}
	if bytes.Compare(e.pub, remote) > 0 {
		return CodeSimultaneous
	}
	ds.cancel(ErrSimultaneous)
	delete(e.dialing, string(remote))
	return CodeOK
}

// freshStamp enforces strictly increasing message 1 timestamps per key.
func (e *Endpoint) freshStamp(remote ed25519.PublicKey, ts, now time.Time) bool {
	if now.Sub(ts) > replayHorizon {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	key := string(remote)
	if last, ok := e.lastStamp[key]; ok && !ts.After(last.ts) {
		return false
	}
	if len(e.lastStamp) > 4096 {
		for k, s := range e.lastStamp {
			if now.Sub(s.seen) > replayHorizon {
				delete(e.lastStamp, k)
			}
		}
	}
	e.lastStamp[key] = stamp{ts: ts, seen: now}
	return true
}

// remember keeps message 2 for retransmissions of the same message 1.
func (e *Endpoint) remember(sum [32]byte, msg2 []byte, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, a := range e.answers {
		if now.After(a.expires) {
			delete(e.answers, k)
		}
	}
	e.answers[sum] = answer{msg2: msg2, expires: now.Add(answerTTL)}
}

func (e *Endpoint) count(f func(*EndpointStats)) {
	e.mu.Lock()
	f(&e.stats)
	e.mu.Unlock()
}
