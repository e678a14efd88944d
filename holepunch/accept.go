package holepunch

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"net/netip"
	"time"

	"github.com/pion/ice/v2"

	"github.com/swarmdb/swarmdb/secure"
)

// This file is the server side of connect-by-key: answering message 1.

// handleSignal answers message 1 of a peer that dials us. It runs on a
// goroutine of the DHT node and must return quickly: everything slow (ICE,
// the session) happens on the endpoint's own goroutine after the answer.
func (e *Endpoint) handleSignal(from netip.AddrPort, msg1 []byte) []byte {
	start := time.Now()
	sum := sha256.Sum256(msg1)
	if msg2, ok := e.admit.answered(sum, start); ok {
		return msg2
	}
	if e.conns.isClosed() || e.cfg.OnConnection == nil {
		return nil
	}
	ip := from.Addr()
	if !e.admit.reserve(ip) {
		return nil // no answer: reading message 1 costs two X25519 operations
	}
	release := func() { e.admit.release(ip) }

	resp, remote, payload, err := secure.ReadMsg1(e.cfg.Key, prologue, msg1)
	if err != nil {
		release()
		e.counters.badHandshakes.Add(1)
		e.log.Debug("bad message 1", "addr", from, "err", err)
		return nil
	}
	peer, err := parseSignal(payload)
	if err != nil || peer.Code != CodeOK {
		release()
		e.counters.badHandshakes.Add(1)
		e.log.Debug("bad signaling payload", "addr", from, "peer", short(remote), "err", err)
		return nil
	}
	if !e.admit.fresh(remote, resp.Timestamp(), start) {
		release()
		return nil
	}
	refuse := func(code Code) []byte {
		defer release()
		msg2, _, err := resp.WriteMsg2(appendSignal(nil, &signal{Code: code}))
		if err != nil {
			return nil
		}
		e.admit.remember(sum, msg2, start)
		return msg2
	}
	if code := e.decide(remote, peer.Hello); code != CodeOK {
		return refuse(code)
	}
	mapping, filtering := e.advertisedNAT()
	switch {
	case peer.Mode == ModeAuto && peer.Mapping == MappingEndpointDependent && mapping == MappingEndpointDependent &&
		peer.Filtering != FilteringEndpointIndependent && filtering != FilteringEndpointIndependent &&
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
	e.admit.remember(sum, msg2, start)
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
	e.counters.accepted.Add(1)
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
	if prev := e.pending.replaceIncoming(key, h); prev != nil {
		prev.end()
	}
	go func() {
		<-h.done
		e.pending.endIncoming(key, h)
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

// decide asks the firewall about remote (application code, so under no
// lock) and then settles glare with our dial to remote, if any: admission's
// verdict.
func (e *Endpoint) decide(remote ed25519.PublicKey, hello []byte) Code {
	var fwErr error
	if fw := e.cfg.Firewall; fw != nil {
		fwErr = fw(remote, hello)
	}
	if fwErr != nil {
		e.counters.refused.Add(1)
		e.log.Debug("firewall refused peer", "peer", short(remote), "err", fwErr)
	}
	return e.pending.settle(e.pub, remote, fwErr)
}
