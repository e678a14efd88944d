package swarm

import "errors"

// Errors returned by this package. Callers test them with errors.Is.
var (
	// ErrClosed: the swarm was closed.
	ErrClosed = errors.New("swarm: closed")
	// ErrNotStarted: a method that needs the network ran before Start.
	ErrNotStarted = errors.New("swarm: not started")
	// ErrBadKey: a key or seed has the wrong length.
	ErrBadKey = errors.New("swarm: bad key")
	// ErrSelf: the swarm was asked to connect to its own key.
	ErrSelf = errors.New("swarm: own key")
	// ErrBanned: the peer is banned.
	ErrBanned = errors.New("swarm: peer banned")
	// ErrFirewalled: the firewall callback refused the peer.
	ErrFirewalled = errors.New("swarm: refused by firewall")
	// ErrInboundLimit: an incoming connection was refused because the
	// inbound limit or MaxPeers was reached.
	ErrInboundLimit = errors.New("swarm: inbound connection limit reached")
	// ErrDuplicate: a connection was closed because a newer connection to
	// the same key replaced it.
	ErrDuplicate = errors.New("swarm: duplicate connection")
	// ErrDead: a connection was closed by the check after NetworkChanged
	// because nothing arrived on it in time.
	ErrDead = errors.New("swarm: connection dead after network change")
	// ErrDemoted: a connection was closed to make room for a peer with no
	// other connection, or for the end of a join's walk (HyParView's
	// DISCONNECT); the peer stays in the passive view.
	ErrDemoted = errors.New("swarm: connection demoted to make room")
	// ErrStale: a connection was closed because it stayed silent despite
	// a ping on its control stream (Config.StaleAfter); the peer is dialled
	// again at once.
	ErrStale = errors.New("swarm: connection silent; dialling again")
	// ErrNotJoined: Leave named a topic that was not joined.
	ErrNotJoined = errors.New("swarm: topic not joined")
)
