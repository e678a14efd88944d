package holepunch

import (
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

// handleSignal answers message 1 of a peer that dials us: with the
// message 2 that starts a handshake, with one that refuses it (a Code), or
// with nil (no answer). It runs on a goroutine of the DHT node and must
// return quickly: everything slow (ICE, the session) happens on the
// endpoint's own goroutine after the answer.
func (e *Endpoint) handleSignal(from netip.AddrPort, msg1 []byte) (msg2 []byte) {
	now := time.Now()
	sum := sha256.Sum256(msg1)
	for {
		earlier, ok, wait := e.admit.claim(sum, now)
		if ok {
			return earlier
		}
		if wait == nil {
			break // ours to answer
		}
		select {
		case <-wait:
		case <-e.ctx.Done():
			return nil
		}
		now = time.Now()
	}
	defer func() { e.admit.settle(sum, msg2, now) }()
	if e.conns.isClosed() || e.cfg.OnConnection == nil {
		return nil
	}
	if !e.admit.reserve(from.Addr()) {
		return nil // no answer: reading message 1 costs two X25519 operations
	}
	in := &inbound{ip: from.Addr(), start: now, done: make(chan struct{})}
	msg2, started := e.answer(in, from, msg1)
	if started && e.spawn(func() {
		defer e.finish(in)
		e.accept(in)
	}) {
		return msg2
	}
	e.finish(in)
	return msg2
}

// answer reads message 1 and asks admission about it. It returns message
// 2, nil for no answer, and started when the handshake in now runs (begin
// did its part); otherwise the caller ends it.
func (e *Endpoint) answer(in *inbound, from netip.AddrPort, msg1 []byte) (msg2 []byte, started bool) {
	resp, remote, payload, err := secure.ReadMsg1(e.cfg.Key, prologue, msg1)
	if err != nil {
		e.counters.badHandshakes.Add(1)
		e.log.Debug("bad message 1", "addr", from, "err", err)
		return nil, false
	}
	peer, err := parseSignal(payload)
	if err != nil || peer.Code != CodeOK {
		e.counters.badHandshakes.Add(1)
		e.log.Debug("bad signaling payload", "addr", from, "peer", short(remote), "err", err)
		return nil, false
	}
	if !e.admit.fresh(remote, resp.Timestamp(), in.start) {
		return nil, false
	}
	var code Code
	if e.conns.dialledSince(string(remote), resp.Timestamp()) {
		// The peer wrote this message 1 before the connection we dialled
		// to it opened: it is the peer's own dial, which gave way to ours
		// (glare) and which a relay delivered late, on its second forward
		// after our NAT mapping or our restart moved us. Answering it would
		// drop a connection the peer holds and uses (begin), and its dial
		// is gone, so the new handshake would fail too: the pair would be
		// left with nothing until the peer found the connection silent.
		// The peer's clock stamps the message and ours the connection; a
		// peer whose clock lags ours and that truly lost the connection is
		// refused too, and reconnects when our side finds it silent.
		e.log.Debug("message 1 older than our connection", "peer", short(remote))
		code = CodeSimultaneous
	} else {
		code = e.decide(remote, peer.Hello)
	}
	if code == CodeOK {
		code = e.pathCode(peer)
	}
	if code != CodeOK {
		refusal, _, err := resp.WriteMsg2(appendSignal(nil, &signal{Code: code}))
		if err != nil {
			return nil, false
		}
		return refusal, false
	}
	msg2, err = e.begin(in, resp, remote, peer)
	if err != nil && e.pending.dialingTo(string(remote)) && dialWins(e.pub, remote) {
		// Our own dial to remote started meanwhile, won the tie-break and
		// cancelled this handshake (Connect). Say so, as settle would have:
		// with no answer the peer's dial failed as "relay failed" instead of
		// giving way (and re-registering, if our dial cannot reach it).
		refusal, _, werr := resp.WriteMsg2(appendSignal(nil, &signal{Code: CodeSimultaneous}))
		if werr == nil {
			return refusal, false
		}
	}
	return msg2, err == nil
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

// pathCode refuses a dial that asks for a path the two NATs rule out.
func (e *Endpoint) pathCode(peer *signal) Code {
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
		return CodeUseRelay
	case peer.Mode == ModeRelay && !hasKind(peer.Cands, candRelay):
		return CodeNoRelay
	}
	return CodeOK
}

// inbound is an incoming handshake, from the admission slot handleSignal
// reserved to the end of accept. finish ends it, once, whatever became of
// it.
type inbound struct {
	ip    netip.Addr    // the source its admission slot counts against
	start time.Time     // arrival of message 1 (Conn.ConnectTime counts from it)
	done  chan struct{} // closed by finish, after its ICE agent is closed

	// Set by begin, before the handshake is registered in pending.
	remote ed25519.PublicKey
	peer   *signal
	ctx    context.Context // bounds the handshake (ConnectTimeout)
	cancel context.CancelFunc
	agent  *ice.Agent // closed by finish unless a path took it
	local  *signal
	keys   secure.Keys
}

// begin starts the admitted handshake in and returns message 2, which
// carries our half of the signaling.
func (e *Endpoint) begin(in *inbound, resp *secure.Responder, remote ed25519.PublicKey, peer *signal) ([]byte, error) {
	in.remote, in.peer = remote, peer
	in.ctx, in.cancel = context.WithTimeout(e.ctx, e.cfg.ConnectTimeout)
	// A fresh, authenticated message 1 from a key supersedes that key's
	// handshake still in progress, and its connection: the peer gave up on
	// them. Their ICE agents must be gone before ours starts, since two
	// agents toward one remote address steal each other's packets
	// (go-deps.md pitfall P1).
	if prev := e.pending.replaceIncoming(string(remote), in); prev != nil {
		prev.cancelAndWait()
	}
	e.dropConn(remote)
	agent, err := newAgent(e.agentConfig(nil))
	if err != nil {
		e.log.Warn("ice agent", "err", err)
		return nil, err
	}
	in.agent = agent
	local, err := e.localSignal(in.ctx, agent, CodeOK, peer.Mode)
	if err != nil {
		return nil, err
	}
	local.Secret = peer.Secret
	msg2, keys, err := resp.WriteMsg2(appendSignal(nil, local))
	if err != nil {
		return nil, err
	}
	in.local, in.keys = local, keys
	return msg2, nil
}

// accept finishes an incoming connection after message 2 went out.
func (e *Endpoint) accept(in *inbound) {
	tr, err := e.punch(in.ctx, in.agent, false, in.local, in.peer)
	if err != nil {
		e.log.Debug("incoming punch failed", "peer", short(in.remote), "err", err)
		return
	}
	in.agent = nil // the path owns it now (or punch closed it for a birthday path)
	c, err := e.openSession(in.ctx, tr, in.keys, in.start, false)
	if err != nil {
		e.log.Debug("incoming session failed", "peer", short(in.remote), "err", err)
		return
	}
	e.counters.accepted.Add(1)
	e.cfg.OnConnection(c)
}

// finish ends the incoming handshake in: it cancels the handshake's
// context, closes its ICE agent unless a path took it, wakes whoever waits
// for it (cancelAndWait), and gives back its admission slot.
func (e *Endpoint) finish(in *inbound) {
	if in.cancel != nil {
		in.cancel()
	}
	if in.agent != nil {
		_ = in.agent.Close()
	}
	close(in.done)
	if in.remote != nil {
		e.pending.endIncoming(string(in.remote), in)
	}
	e.admit.release(in.ip)
}

// supersedeWait bounds the wait for a superseded handshake to close its
// ICE agent; closing takes microseconds, the bound is for safety.
const supersedeWait = time.Second

// cancelAndWait cancels the handshake and waits, at most supersedeWait,
// until its ICE agent is closed, so a new agent toward the same address
// can start (pitfall P1).
func (h *inbound) cancelAndWait() {
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(supersedeWait):
	}
}
