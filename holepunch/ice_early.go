package holepunch

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/stun/v2"
)

// The dialler's session starts on the first pair that answers.
//
// pion/ice v2 nominates regularly (it has no aggressive nomination): the
// dialler's first check that is answered finds a working pair, and only a
// second check, carrying USE-CANDIDATE, nominates it; Dial returns when that
// one is answered. The session's setup then took a third round trip (a QUIC
// handshake while the streams ran on quic-go; none since). But the
// first answer already proves the pair works both ways: the peer got our
// request, and its response came back signed with the peer's ICE password. So
// the dialler starts its session on the answering address at once and lets ICE
// nominate beside it. Its first session packet travels with the nominating
// check; the answerer's ICE connects on that check and finds the packet waiting
// in its agent, which routeICE's merge hands on. One round trip less for the
// dialler.
//
// ICE goes on as before and nominates a pair, usually the answering one. If
// it nominates another (a dual-stack peer answers on IPv6 first but the
// IPv4 pair wins), the session moves to ICE's pair once the handshake is
// done (transportPath.settle): both ends then send on the pair ICE keeps
// alive, and report the same path. Until then nothing is lost: what pion
// receives from other addresses is merged in. Relay candidates are left to
// ICE.

// checkWatches are the dials waiting for their first answered check. The
// endpoint's STUN handler shows them every Binding success response before
// the ICE mux gets it.
type checkWatches struct {
	active atomic.Int32 // len(watches), read without the lock on every STUN packet
	mu     sync.Mutex
	all    map[*checkWatch]struct{}
}

// checkWatch is one dial's: responses that the peer's password authenticates.
type checkWatch struct {
	key      stun.MessageIntegrity
	answered chan netip.AddrPort // 1-buffered: the first answering address
}

// watch starts watching for responses signed with pwd; stop ends it.
func (w *checkWatches) watch(pwd string) (cw *checkWatch, stop func()) {
	cw = &checkWatch{key: stun.NewShortTermIntegrity(pwd), answered: make(chan netip.AddrPort, 1)}
	w.mu.Lock()
	if w.all == nil {
		w.all = map[*checkWatch]struct{}{}
	}
	w.all[cw] = struct{}{}
	w.active.Store(int32(len(w.all)))
	w.mu.Unlock()
	return cw, func() {
		w.mu.Lock()
		delete(w.all, cw)
		w.active.Store(int32(len(w.all)))
		w.mu.Unlock()
	}
}

// observe tells each watch whose key authenticates b, a Binding success
// response from `from`. It runs on the node's read loop, on STUN messages
// only, and only while a dial watches.
func (w *checkWatches) observe(b []byte, from netip.AddrPort) {
	if w.active.Load() == 0 {
		return
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil || m.Type != stun.BindingSuccess {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for cw := range w.all {
		if cw.key.Check(m) == nil {
			select {
			case cw.answered <- from:
			default:
			}
		}
	}
}

// dialICE runs the controlling agent's Dial. It returns Dial's conn, or, when
// a check is answered first, a routed path on the answering address (conn
// nil) while Dial goes on beside the session. closeAgent closes the agent;
// the routed path calls it when it closes.
func (e *Endpoint) dialICE(ctx context.Context, agent *ice.Agent, local, peer *signal, closeAgent func() error) (*ice.Conn, transportPath, error) {
	cw, stop := e.checks.watch(peer.Pwd)
	defer stop()
	// Dial outlives this call when the early path wins: the agent's close
	// (with the session's) ends it then.
	dctx, dcancel := context.WithCancel(context.WithoutCancel(ctx))
	type result struct {
		conn *ice.Conn
		err  error
	}
	dialed := make(chan result, 1)
	go func() {
		c, err := agent.Dial(dctx, peer.Ufrag, peer.Pwd)
		dialed <- result{c, err}
	}()
	for {
		select {
		case r := <-dialed:
			dcancel()
			return r.conn, transportPath{}, r.err
		case <-ctx.Done():
			dcancel()
			r := <-dialed
			return r.conn, transportPath{}, r.err
		case remote := <-cw.answered:
			remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
			path := answeredPath(remote, local, peer)
			if path == PathRelay {
				continue // the peer's TURN relay: ICE decides
			}
			e.counters.earlyPaths.Add(1)
			e.log.Debug("check answered, session starts", "path", path, "addr", remote)
			rc := e.route(remote, func() {
				dcancel()
				_ = closeAgent()
			})
			final := make(chan pathChoice, 1)
			go func() {
				r := <-dialed
				if r.err != nil {
					e.log.Debug("ice did not connect beside the session", "err", r.err)
					final <- pathChoice{path, remote}
					return
				}
				choice := pathChoice{path, remote}
				if p, at := selectedPath(agent); at.IsValid() && at != remote && p != PathRelay {
					e.log.Debug("ice nominated another pair, the session follows", "from", remote, "to", at)
					e.reroute(rc, at)
					choice = pathChoice{p, at}
				}
				final <- choice
				mergeICE(r.conn, rc)
			}()
			settle := func(ctx context.Context) (Path, netip.AddrPort) {
				c := settleOn(ctx, final, pathChoice{path, remote}, e.log)
				return c.path, c.remote
			}
			return nil, transportPath{conn: rc, path: path, remote: remote, settle: settle, release: func() { _ = rc.Close() }, settled: e.retireAgent(closeAgent)}, nil
		}
	}
}

// settleWait bounds how long a session that started on an early path waits,
// once its handshake is done, for ICE's nomination (transportPath.settle).
// The nominating check went out with the session's first packet, so its
// answer is usually in before the handshake ends; one that is still missing
// after this long was lost with every retry (the peer's agent answers for
// agentLinger), and the early path, which the handshake just crossed, is kept.
const settleWait = 2 * agentLinger

// settleOn returns ICE's choice of path once final gives it, or early, the
// path the session started on, when settleWait passes first or ctx ends.
func settleOn(ctx context.Context, final <-chan pathChoice, early pathChoice, log *slog.Logger) pathChoice {
	t := time.NewTimer(settleWait)
	defer t.Stop()
	select {
	case c := <-final:
		return c
	case <-t.C:
		log.Debug("ice still nominating, the session keeps its early path", "addr", early.remote)
	case <-ctx.Done():
	}
	return early
}

// pathChoice is a path's kind and the peer's end of it.
type pathChoice struct {
	path   Path
	remote netip.AddrPort
}

// answeredPath classifies a path to remote as selectedPath does a pair:
// relay when remote is one of the peer's relay candidates, LAN when it is
// private or on one of our IPv6 /64s, direct otherwise.
func answeredPath(remote netip.AddrPort, local, peer *signal) Path {
	for _, c := range peer.Cands {
		if c.Kind == candRelay && c.Addr == remote {
			return PathRelay
		}
	}
	if isPrivate(remote.Addr()) {
		return PathLAN
	}
	for _, c := range local.Cands {
		if c.Kind == candHost && sameSubnet6(c.Addr.Addr().String(), remote.Addr()) {
			return PathLAN
		}
	}
	return PathDirect
}
