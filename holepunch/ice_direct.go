package holepunch

import (
	"errors"
	"io"
	"net/netip"

	"github.com/pion/ice/v2"
)

// Sessions over ICE skip pion's data path. ICE finds the pair and keeps it
// alive (its checks, keepalives and consent stay pion's, on STUN), but a
// session's datagrams on a pair whose local end is the node's own socket —
// every pair except a TURN relay's — go straight between the node's read
// loop and the session, as on a birthday path: pion's path costs a copy and
// a goroutine hand-off in the mux socket, the mux's worker, the candidate's
// read loop and the agent conn's buffer, for every datagram. Measured on
// loopback, that was a fifth of the receiving node's CPU in a bulk transfer.
//
// The pair's remote address is routed to a routedConn from the moment ICE
// connects. What pion had received before that (the peer may send its first
// QUIC packet as soon as its own side connects), or receives later from
// another of the agent's pairs, is read from the ice.Conn and merged in.
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
