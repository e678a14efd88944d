package holepunch

import (
	"errors"
	"io"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v2"

	"github.com/swarmdb/swarmdb/internal/memrelease"
)

// Sessions over ICE skip pion's data path. ICE finds the pair (its checks
// and nomination stay pion's, on STUN; the agent is closed a second
// after the session settles, see retireAgent), but a session's datagrams
// on a pair whose local end is the node's own socket — every pair except a
// TURN relay's — go straight between the node's read loop and the session,
// as on a birthday path: pion's path costs a copy and a goroutine hand-off
// in the mux socket, the mux's worker, the candidate's read loop and the
// agent conn's buffer, for every datagram. Measured on loopback, that was a
// fifth of the receiving node's CPU in a bulk transfer.
//
// The pair's remote address is routed to a routedConn from the moment ICE
// connects. What pion had received before that (the peer may send its first
// session packet as soon as its own side connects), or receives later from
// another of the agent's pairs while it lives, is read from the ice.Conn and
// merged in.
//
// Two sessions on one remote address (a reconnecting peer, before the old
// session is gone) cannot both get its datagrams; the newest takes the route,
// as pion's mux gives the address to the newest agent. The older one is left
// with what pion delivers it, which is what it had before routes existed.

// routeICE returns the conn a session uses on an ICE pair to remote, or nil
// when the pair must stay on pion's path (a relay pair). closeAgent closes
// the agent; the returned conn calls it when it closes.
func (e *Endpoint) routeICE(conn *ice.Conn, path Path, remote netip.AddrPort, closeAgent func() error) *routedConn {
	if path == PathRelay || !remote.IsValid() {
		return nil
	}
	rc := e.route(remote, func() { _ = closeAgent() })
	go mergeICE(conn, rc)
	return rc
}

// agentLinger is how long an agent lives on once a session over its routed
// pair has settled: the peer's own agent may still be nominating, or
// retrying a check whose answer was lost, and needs ours to answer. It
// retries every iceCheckInterval (10 ms), so a second outlasts any loss
// short of a dead path; and a dialler whose nomination goes unanswered
// keeps its early path after settleWait (ice_early.go) rather than wait.
// An agent alive is a few goroutines and about 20 KB of heap; one second
// instead of five keeps a fifth as many alive through a burst of
// connections (a swarm server taking 60: 39 at the peak with five).
const agentLinger = time.Second

// retireAgent returns the settled hook of a routed ICE path: agentLinger
// later it closes the agent (closeAgent is idempotent; the routed conn's
// close calls it too). Past that point the agent has nothing left to do:
// the session's datagrams go past it, the session's keepalives hold the
// NAT mappings open and its dead-peer detection notices a dead path, and
// pion/ice v2 never moves a connected agent to another pair. What it
// would keep is five goroutines (checks, keepalives, a read loop per
// candidate) and about 20 KB of heap per connection (a swarm server with
// 16 idle connections: 104 -> 85 KB and 20 -> 14 goroutines each).
//
// The peer's agent, when it outlives ours, sees its checks unanswered and
// turns failed after pion's timeouts; nothing uses an agent's state once
// the session is up, on either side.
func (e *Endpoint) retireAgent(closeAgent func() error) func() {
	return func() {
		time.AfterFunc(agentLinger, func() {
			_ = closeAgent()
			e.counters.agentsRetired.Add(1)
			e.noteGarbage() // the agent's state is garbage now
		})
	}
}

// noteGarbage tells memrelease that a burst of work ended, unless the
// program keeps its freed memory (EndpointConfig.KeepFreedMemory).
func (e *Endpoint) noteGarbage() {
	if !e.cfg.KeepFreedMemory {
		(*releaseMemory.Load())()
	}
}

// releaseMemory holds memrelease.Note; a test counts its calls. Atomic: an
// agent's retirement timer may fire while a test swaps it.
var releaseMemory atomic.Pointer[func()]

func init() {
	note := memrelease.Note
	releaseMemory.Store(&note)
}

// mergeICE hands rc what pion's agent received, until the agent closes.
func mergeICE(conn *ice.Conn, rc *routedConn) {
	buf := make([]byte, mergeBuffer)
	for {
		n, err := conn.Read(buf)
		switch {
		case errors.Is(err, io.ErrShortBuffer):
			continue // larger than any sealed datagram: not ours
		case err != nil:
			return // the agent closed
		}
		rc.deliver(buf[:n])
	}
}

// mergeBuffer holds the largest sealed datagram (secure.MaxMTU sealed) with room to spare.
const mergeBuffer = 2048
