package holepunch

import (
	"net/netip"
	"sync"
	"time"

	"github.com/swarmdb/swarmdb/secure"
)

// Path says how an established connection's packets travel.
type Path string

const (
	// PathLAN: both peers sit behind the same public address and talk over
	// their private (LAN) addresses; no NAT hairpinning is involved.
	PathLAN Path = "lan"
	// PathDirect: packets go straight between the peers' public (reflexive)
	// or host addresses through punched NAT mappings.
	PathDirect Path = "direct"
	// PathRelay: packets go through a TURN relay, which only sees ciphertext.
	PathRelay Path = "relay"
)

// Conn is an established, encrypted and authenticated connection to one
// peer, whose identity is Session.RemotePublicKey(). Closing it closes the
// session and releases the path (ICE agent, punched socket or relay
// allocation) under it.
type Conn struct {
	*secure.Session

	// Path is the way the connection's packets travel.
	Path Path
	// Remote is the peer's end of the path: its address the punched path
	// reaches (IPv4 or IPv6), or the relayed address of a relay path; zero
	// when unknown.
	Remote netip.AddrPort
	// ConnectTime runs from the start of Connect (or from the arrival of the
	// peer's first handshake message, for incoming connections) to the open
	// session.
	ConnectTime time.Duration
	// Initiator is true when this side dialled.
	Initiator bool

	opened      time.Time // when the session opened (our clock)
	release     func()    // closes what lies under the session; nil for none
	releaseOnce sync.Once
}

// Close closes the session and then the path under it. It is safe to call
// more than once.
func (c *Conn) Close() error {
	err := c.Session.Close()
	c.releasePath()
	return err
}

// releasePath closes what lies under the session, once.
func (c *Conn) releasePath() {
	c.releaseOnce.Do(func() {
		if c.release != nil {
			c.release()
		}
	})
}
