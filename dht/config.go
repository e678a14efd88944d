package dht

import (
	"crypto/ed25519"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"
)

// Mode says whether a node stores records and enters routing tables.
type Mode int

const (
	// ModeAdaptive starts ephemeral and becomes persistent once the node has
	// seen the same public address from several nodes and has received an
	// unsolicited packet from a node it never sent to (so it is reachable
	// behind no NAT or an endpoint-independent-filtering one).
	ModeAdaptive Mode = iota
	// ModePersistent forces a persistent node: bootstrap nodes, public
	// servers and test networks.
	ModePersistent
	// ModeEphemeral forces an ephemeral node: it queries and announces but
	// never enters routing tables and stores nothing.
	ModeEphemeral
)

func (m Mode) String() string {
	switch m {
	case ModePersistent:
		return "persistent"
	case ModeEphemeral:
		return "ephemeral"
	}
	return "adaptive"
}

// SignalHandler answers a signaling payload relayed to this node from the
// client at from (its reflexive address as the relay saw it), on behalf of
// the announced key to. It returns the answer, or nil to send none. It runs
// on its own goroutine and must return promptly: the relay waits for it.
type SignalHandler func(to ed25519.PublicKey, from netip.AddrPort, payload []byte) []byte

// Config configures a Node. The zero value is a working ephemeral-capable
// node on a random port of all interfaces with no bootstrap nodes.
type Config struct {
	// Net opens the node's UDP sockets. Zero means the real network
	// (pion stdnet); tests pass a vnet.
	Net transport.Net
	// ListenAddr is the local address to bind. Zero means "0.0.0.0:0". An
	// IPv6 address makes an IPv6-only node (its one socket is IPv6).
	ListenAddr string
	// ListenAddr6 is the local address of the IPv6 socket ("[ip]:port"),
	// or ListenOff for none. Zero means: when ListenAddr binds every
	// interface, "[::]" on the IPv4 socket's port (another random port for
	// both when that one is taken on IPv6 and the port was random; no
	// IPv6 socket when IPv6 is missing, as on pion's vnet); when ListenAddr
	// names one address, no IPv6 socket. An address given here must open,
	// or Start fails.
	ListenAddr6 string
	// Bootstrap lists DHT nodes to join through. Empty means this node is
	// the first node of its network.
	Bootstrap []netip.AddrPort
	// Mode chooses persistent, ephemeral or adaptive (zero).
	Mode Mode
	// PublicAddr is the node's public address when known in advance (a
	// public server's --public-ip). Zero means learn it from replies.
	PublicAddr netip.AddrPort
	// PublicAddr6 is PublicAddr for the IPv6 socket.
	PublicAddr6 netip.AddrPort

	// K is the bucket size and replication factor. Zero means 20.
	K int
	// Concurrency is the number of requests in flight per lookup. Zero means 10.
	Concurrency int
	// RequestTimeout is the wait for one reply. Zero means 1 s: a round trip
	// across the world is under 400 ms, so 1 s separates slow from dead.
	RequestTimeout time.Duration
	// Retries is how many times a request is resent after a timeout. Zero
	// means 2; negative means none.
	Retries int

	// RecordTTL is how long an announce lives unless refreshed. Zero means
	// 20 min (announcers refresh every 10 min, HyperDHT's numbers).
	RecordTTL time.Duration
	// TokenInterval is how often write-token secrets rotate; a token is
	// valid for one to two intervals. Zero means 2 min.
	TokenInterval time.Duration
	// MaxRecordsPerTopic bounds stored records per topic. Zero means 128.
	MaxRecordsPerTopic int
	// MaxRecords bounds stored records in all. Zero means 65536.
	MaxRecords int
	// LookupLimit is the most records one LOOKUP reply carries. Zero means 20.
	LookupLimit int
	// WebSocketURL is carried in every topic record this node announces
	// (PeerRecord.WebSocketURL): where browsers reach it. Empty means none;
	// a URL that ValidWebSocketURL refuses is left out.
	WebSocketURL string

	// legacyRecords makes the node behave as one from before record
	// extensions (tests only, through export_test.go): it refuses records
	// with extensions, answers every LOOKUP with version-1 records and does
	// not ask for extensions itself.
	legacyRecords bool

	// RateLimit is the requests per second accepted from one source IP.
	// Zero means 200; negative disables the limit.
	RateLimit float64
	// RateBurst is the bucket size of RateLimit. Zero means 2×RateLimit.
	RateBurst int
	// MaxRelayInflight bounds concurrent relayed signaling exchanges this
	// node forwards. Zero means 64.
	MaxRelayInflight int

	// RelayKeepalive is how often an announcer pings its relays to keep its
	// NAT pinhole open. Zero means 10 s, well inside the 30 s UDP timeout
	// of Linux conntrack and common home routers.
	RelayKeepalive time.Duration
	// PingInterval is how often the oldest routing-table contacts are
	// checked. Zero means 1 min.
	PingInterval time.Duration
	// RefreshInterval is how long a bucket may go untouched before a
	// refresh lookup. Zero means 5 min.
	RefreshInterval time.Duration

	// OnSignal answers relayed signaling for keys this node announced.
	OnSignal SignalHandler
	// OnTURN makes TURN relay offers (CmdTURN) for requesters that proved
	// their address. Zero means this node serves no TURN relay.
	OnTURN TURNHandler

	// Logger receives the node's logs. Zero means discard.
	Logger *slog.Logger
}

// withDefaults returns c with every zero field filled in. It is the only
// place defaults live.
func (c Config) withDefaults() Config {
	if c.Net == nil {
		n, err := stdnet.NewNet()
		if err == nil {
			c.Net = n
		}
	}
	if c.ListenAddr == "" {
		c.ListenAddr = "0.0.0.0:0"
	}
	if c.K == 0 {
		c.K = 20
	}
	if c.Concurrency == 0 {
		c.Concurrency = 10
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = time.Second
	}
	switch {
	case c.Retries == 0:
		c.Retries = 2
	case c.Retries < 0:
		c.Retries = 0
	}
	if c.RecordTTL == 0 {
		c.RecordTTL = 20 * time.Minute
	}
	if c.TokenInterval == 0 {
		c.TokenInterval = 2 * time.Minute
	}
	if c.MaxRecordsPerTopic == 0 {
		c.MaxRecordsPerTopic = 128
	}
	if c.MaxRecords == 0 {
		c.MaxRecords = 65536
	}
	if !ValidWebSocketURL(c.WebSocketURL) {
		c.WebSocketURL = ""
	}
	if c.LookupLimit == 0 {
		c.LookupLimit = 20
	}
	if c.RateLimit == 0 {
		c.RateLimit = 200
	}
	if c.RateBurst == 0 {
		c.RateBurst = int(2 * max(c.RateLimit, 1))
	}
	if c.MaxRelayInflight == 0 {
		c.MaxRelayInflight = 64
	}
	if c.RelayKeepalive == 0 {
		c.RelayKeepalive = 10 * time.Second
	}
	if c.PingInterval == 0 {
		c.PingInterval = time.Minute
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = 5 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}
