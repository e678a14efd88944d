package mainline

import (
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/swarmdb/swarmdb/internal/udpopt"
)

// Defaults for Config fields whose zero value means "default".
const (
	// DefaultPeerTTL is how long an announced peer is kept without a new
	// announce. discovery-channel re-announces every 10-15 min, libtorrent
	// keeps peers 30 min; so do we.
	DefaultPeerTTL = 30 * time.Minute
	// DefaultMaxInfohashes bounds the infohashes the peer store keeps.
	DefaultMaxInfohashes = 4096
	// DefaultMaxPeersPerInfohash bounds the peers kept per infohash.
	DefaultMaxPeersPerInfohash = 256
	// DefaultMaxValues bounds the peers one get_peers reply carries: 50
	// compact addresses are 400 bytes of bencoding, well inside one
	// datagram with the token and id.
	DefaultMaxValues = 50
	// DefaultSendRate and DefaultSendBurst bound the datagrams a node sends
	// per second: the library's global default, but per node.
	DefaultSendRate  = 250
	DefaultSendBurst = 25
	// DefaultQueryTimeout is how long a query waits before it is resent
	// (and, after the last try, given up): the library's default, the
	// highest UDP round trip an end user may reasonably have.
	DefaultQueryTimeout = 2 * time.Second
)

// Config configures a Node. Write and LocalAddr, or Conn, are required.
type Config struct {
	// Conn, when set, is a socket the node owns and reads itself (a node of
	// its own: routers in tests, the benchmark). Nil means the node shares
	// its owner's socket: the owner hands every KRPC datagram to
	// HandlePacket, and Write sends.
	Conn net.PacketConn
	// Write sends a datagram on the shared socket. Required without Conn.
	Write func(b []byte, to netip.AddrPort) error
	// LocalAddr is the shared socket's address. Required without Conn.
	LocalAddr netip.AddrPort

	// Routers are the nodes a traversal starts from while the routing
	// table is empty: the mainline routers the user chose, and nodes cached
	// by an earlier run. Empty means the node can only answer others.
	Routers []netip.AddrPort
	// ReadOnly starts the node read-only (BEP 43): it answers no queries and
	// its queries ask not to be added to routing tables. For nodes behind
	// NAT, until SetReachable.
	ReadOnly bool
	// PublicIP, when known, gives the node a BEP 42 id for that address.
	PublicIP netip.Addr

	// PeerTTL is how long an announced peer is kept. Zero means
	// DefaultPeerTTL.
	PeerTTL time.Duration
	// MaxInfohashes and MaxPeersPerInfohash bound the peer store. Zero
	// means the defaults.
	MaxInfohashes, MaxPeersPerInfohash int
	// MaxValues bounds the peers in one get_peers reply. Zero means
	// DefaultMaxValues.
	MaxValues int
	// SendRate is the most datagrams per second the node sends, SendBurst
	// its bucket. Zero means the defaults.
	SendRate  float64
	SendBurst int
	// QueryTimeout is the wait before a query is resent. Zero means
	// DefaultQueryTimeout.
	QueryTimeout time.Duration

	// Logger receives the node's logs; the library's own go to it at debug
	// level. Zero means discard.
	Logger *slog.Logger

	// now is the clock of the peer store (tests).
	now func() time.Time
}

func (c Config) withDefaults() (Config, error) {
	if c.Conn == nil && (c.Write == nil || !c.LocalAddr.IsValid()) {
		return c, ErrConfig
	}
	if c.Conn != nil {
		c.LocalAddr = udpopt.AddrPortOf(c.Conn.LocalAddr())
	}
	if c.PeerTTL <= 0 {
		c.PeerTTL = DefaultPeerTTL
	}
	if c.MaxInfohashes <= 0 {
		c.MaxInfohashes = DefaultMaxInfohashes
	}
	if c.MaxPeersPerInfohash <= 0 {
		c.MaxPeersPerInfohash = DefaultMaxPeersPerInfohash
	}
	if c.MaxValues <= 0 {
		c.MaxValues = DefaultMaxValues
	}
	if c.SendRate <= 0 {
		c.SendRate = DefaultSendRate
	}
	if c.SendBurst <= 0 {
		c.SendBurst = DefaultSendBurst
	}
	if c.QueryTimeout <= 0 {
		c.QueryTimeout = DefaultQueryTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}
