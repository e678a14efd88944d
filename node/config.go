package node

import (
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/pion/transport/v2"

	"github.com/swarmdb/swarmdb/bridge"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/secure"
)

// Config configures a Node. Topic and DataDir are required.
type Config struct {
	// Topic is the swarm to join; its key is SHA-256 of the string, and it
	// is also the ToolDb topic in peer descriptors. Required.
	Topic string
	// DataDir holds the identity (identity.json) and the store (db/).
	// Required; created if missing.
	DataDir string

	// ListenAddr is the UDP address of the node's one socket (DHT, STUN,
	// hole punching, sessions). Zero means "0.0.0.0:0".
	ListenAddr string
	// Bootstrap lists DHT nodes to join through. Empty means LAN discovery
	// only (there are no built-in public nodes).
	Bootstrap []netip.AddrPort
	// Net opens every socket. Zero means the real network.
	Net transport.Net

	// Server announces the node on the topic; Client looks the topic up
	// and dials the peers. Both false means both.
	Server, Client bool
	// MaxPeers bounds swarm connections. Zero means swarm's default.
	MaxPeers int
	// Firewall, when set, is asked about every swarm peer before any work
	// (inbound true for peers that dial us). An error refuses the peer.
	Firewall func(remote ed25519.PublicKey, inbound bool) error
	// DisableLAN turns mDNS discovery off.
	DisableLAN bool
	// KeepLoopback keeps loopback ICE candidates (nodes on 127.0.0.0/8).
	KeepLoopback bool
	// Session tunes the secure sessions (keepalive, dead-peer timeout).
	Session secure.Config
	// StaleAfter is how long a swarm connection may stay silent, despite a
	// ping, before the peer is dialled again (see swarm.Config). Zero means
	// swarm.DefaultStaleAfter.
	StaleAfter time.Duration

	// WebSocketAddr is where browsers and ToolDb clients connect (TCP,
	// e.g. ":9000"). Zero means no WebSocket server.
	WebSocketAddr string
	// AllowedOrigins are the browser origins the WebSocket server accepts
	// (see bridge.Config). Nil means any, as ToolDb's server does.
	AllowedOrigins []string
	// Limits bound every message-layer connection (size, rate, queue).
	Limits bridge.Limits
	// Functions are server functions ToolDb clients may call by name
	// (ToolDb's "function" message). Nil means none.
	Functions map[string]bridge.Function
	// DisablePlumtree sends every put to every swarmdb peer instead of
	// along the broadcast tree (see bridge.Config; for comparisons).
	DisablePlumtree bool

	// MonitorInterval is how often local addresses are polled for network
	// changes. Zero means holepunch's default (5 s).
	MonitorInterval time.Duration

	// OnPeerConnect and OnPeerDisconnect report swarm connections. They run
	// on the swarm's event goroutine: do not block.
	OnPeerConnect    func(PeerEvent)
	OnPeerDisconnect func(PeerEvent)

	// Logger receives every component's logs. Zero means discard.
	Logger *slog.Logger
}

// PeerEvent is a swarm connection opening or closing.
type PeerEvent struct {
	PublicKey   ed25519.PublicKey
	Path        holepunch.Path
	Role        string // "client" (we dialled) or "server"
	ConnectTime time.Duration
	Err         error // why it closed (disconnects only)
}

func (c Config) withDefaults() (Config, error) {
	if c.Topic == "" {
		return c, fmt.Errorf("%w: Topic is required", ErrConfig)
	}
	if c.DataDir == "" {
		return c, fmt.Errorf("%w: DataDir is required", ErrConfig)
	}
	if c.ListenAddr == "" {
		c.ListenAddr = "0.0.0.0:0"
	}
	if !c.Server && !c.Client {
		c.Server, c.Client = true, true
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}
