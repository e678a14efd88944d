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

	// ConnectTime runs from the start of Connect (or from the arrival of the
	// peer's first handshake message, for incoming connections) to the open
	// session.
	ConnectTime time.Duration
	// Initiator is true when this side dialled.
	Initiator bool

	opened      time.Time // when the session opened (our clock)
	release     func()    // closes what lies under the session; nil for none
	releaseOnce sync.Once

	mu      sync.Mutex
	path    Path           // see Path
	remote  netip.AddrPort // see Remote
	settled chan struct{}  // closed once path and remote are final
}

// Path is the way the connection's packets travel. A dialled connection
// starts on the first pair its ICE checks found and may move once, to the
// pair ICE nominates (Settled); most never move.
func (c *Conn) Path() Path {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.path
}

// Remote is the peer's end of the path: its address the punched path
// reaches (IPv4 or IPv6), or the relayed address of a relay path; zero when
// unknown. It moves with Path.
func (c *Conn) Remote() netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.remote
}

// Settled is closed once Path and Remote are final. For a dialled
// connection that started on its first answered ICE check it closes when
// ICE has nominated a pair, about a round trip after Connect returned (at
// most settleWait); for every other connection it is closed from the start.
// Both ends report the same path once both are settled.
func (c *Conn) Settled() <-chan struct{} { return c.settled }

// settle sets the connection's final path and closes Settled. It reports
// the path it had before.
func (c *Conn) settle(path Path, remote netip.AddrPort) (was Path) {
	c.mu.Lock()
	defer c.mu.Unlock()
	was = c.path
	c.path, c.remote = path, remote
	close(c.settled)
	return was
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
