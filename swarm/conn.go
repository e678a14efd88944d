package swarm

import (
	"crypto/ed25519"
	"net/netip"
	"time"

	"github.com/swarmdb/swarmdb/holepunch"
)

// Role says who dialled a connection.
type Role string

const (
	// RoleClient: this node dialled (it found the peer or was told its key).
	RoleClient Role = "client"
	// RoleServer: the peer dialled this node.
	RoleServer Role = "server"
)

// PeerInfo describes the peer of a connection when it opened.
type PeerInfo struct {
	// PublicKey is the peer's authenticated identity.
	PublicKey ed25519.PublicKey
	// Topics are the joined topics the peer was found on (empty for a peer
	// that dialled us and was never found by us).
	Topics []Topic
	// Role says who dialled.
	Role Role
	// Path says how the packets travel (LAN, direct, relay) when the
	// connection opened. A dialled connection may move once, about a round
	// trip later, to the pair ICE nominates; Conn.Path follows it
	// (holepunch.Conn.Settled).
	Path holepunch.Path
	// Remote is the peer's end of the path: the address (IPv4 or IPv6)
	// its packets come from, or the relayed address on a relay path. It
	// is the open's, as Path; Conn.Remote follows a move.
	Remote netip.AddrPort
	// Attempts counts our dials to this peer so far, this one included.
	Attempts int
	// Explicit: the peer was added with JoinPeer.
	Explicit bool
	// LAN: the peer was found by LAN discovery.
	LAN bool
	// ConnectTime is how long the dial or the incoming setup took.
	ConnectTime time.Duration
}

// Conn is one connection of the swarm: an encrypted, authenticated session
// with streams (see secure.Session, embedded through holepunch.Conn).
// Closing it closes the session; if the peer still belongs to a joined
// topic it is dialled again on the backoff schedule.
type Conn struct {
	*holepunch.Conn

	info     PeerInfo
	openedAt time.Time
	// ctl is the connection's control stream (control.go).
	ctl *control
}

// Info returns the PeerInfo the connection was reported with.
func (c *Conn) Info() PeerInfo { return c.info }

// received returns the authenticated datagrams received so far.
func (c *Conn) received() uint64 { return c.Session.Stats().Datagram.RecvPackets }
