package node

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/pion/transport/v2"

	"github.com/swarmdb/swarmdb/bridge"
	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/mainline"
	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/portmap"
	"github.com/swarmdb/swarmdb/secure"
	"github.com/swarmdb/swarmdb/swarm"
)

// Config configures a Node. Topic and DataDir are required.
type Config struct {
	// Topic is the swarm to join; its key is SHA-256 of the string, and it
	// is also the ToolDb topic in peer descriptors. Required.
	Topic string
	// DataDir holds the identity (identity.json), the store (db/) and the
	// lock a running node holds. Required; Start creates it if missing.
	DataDir string
	// RepairStore opens a store whose write-ahead log is damaged, after
	// copying it aside (db.Config.Repair). Zero means such a store is
	// refused with db.ErrWALCorrupt and left untouched.
	RepairStore bool

	// ListenAddr is the UDP address of the node's socket (DHT, STUN, hole
	// punching, sessions). Zero means "0.0.0.0:0". An IPv6 address makes an
	// IPv6-only node.
	ListenAddr string
	// ListenAddr6 is the UDP address of the node's IPv6 socket, or
	// dht.ListenOff. Zero means [::] on ListenAddr's port when ListenAddr
	// binds every interface and the host has IPv6, else none (see
	// dht.Config.ListenAddr6).
	ListenAddr6 string
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
	// KeepFreedMemory: see holepunch.EndpointConfig. Zero means freed
	// memory goes back to the OS once connection setups go quiet.
	KeepFreedMemory bool
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
	// PublicWebSocketURL is where browsers reach this node's WebSocket from
	// the outside (ws:// or wss://host:port, e.g. behind a port forward or
	// a TLS proxy). It is carried in the node's DHT announcement, listed
	// first in its /peers.json, and advertised in its ToolDb descriptor
	// when ToolDb's URL rule can express it (see advertisedHostPort).
	// Empty means the node is not announced as a server for browsers.
	PublicWebSocketURL string
	// TLSCertFile and TLSKeyFile (PEM) make the WebSocket server speak
	// HTTPS and WSS. Both or neither; the files are read again when they
	// change (certificate renewal needs no restart).
	TLSCertFile, TLSKeyFile string
	// PeersInterval is how often the node looks its topic up for the
	// public WebSocket URLs of other nodes and checks them for /peers.json.
	// Zero means DefaultPeersInterval.
	PeersInterval time.Duration
	// ProbeClient fetches the pages of other nodes when /peers.json checks
	// them. Zero means a client with ProbeTimeout and the system roots.
	ProbeClient *http.Client
	// Limits bound every message-layer connection (size, rate, queue).
	Limits bridge.Limits
	// Functions are server functions ToolDb clients may call by name
	// (ToolDb's "function" message). Nil means none.
	Functions map[string]bridge.Function
	// DisablePlumtree sends every put to every swarmdb peer instead of
	// along the broadcast tree (see bridge.Config; for comparisons).
	DisablePlumtree bool

	// MonitorInterval is how often local addresses are polled for network
	// changes (swarm.Config.NATInterval). Zero means natcheck's default
	// (5 s).
	MonitorInterval time.Duration
	// OnNATChange reports each NAT measurement that differs from the last
	// one reported, starting with the first (swarm.Config.OnNATChange). A
	// LAN-only node measures nothing. It runs on the swarm's event
	// goroutine: do not block.
	OnNATChange func(natcheck.Report)

	// DisablePortMap turns router port mapping off. On by default: a node
	// that joins a DHT beyond its LAN asks its gateway (PCP, NAT-PMP,
	// UPnP-IGD) to forward its UDP port, advertises the mapped address to
	// peers, and becomes a persistent DHT node when the DHT's reachability
	// check then gets through. Nodes whose socket or DHT nodes are all on
	// loopback never map.
	DisablePortMap bool
	// MapWebSocket maps the WebSocket's TCP port too, and the mainline
	// part then announces the WebSocket at the mapped address, so ToolDb
	// and browser clients reach a node behind a home router. The
	// WebSocket must listen on an address the router can forward to (not
	// loopback).
	MapWebSocket bool
	// PortMap tunes the port-mapping client (lifetime, checks, protocols;
	// Gateway is required when Net is not the system network, otherwise
	// port mapping stays off). Its Net, ports, LocalIP, OnChange and
	// Logger are set by the node.
	PortMap portmap.Config

	// Mainline lists BitTorrent mainline DHT routers (host:port) to join
	// the mainline DHT through. Empty means the mainline part is off. On,
	// the node looks its topic up there as discovery-channel does (SHA-1 of
	// the topic) and connects to the ToolDb servers it finds; announces its
	// WebSocket there in server mode when that is reachable; finds a
	// swarmdb DHT to join under mainline.BootstrapName when it has none,
	// and announces itself there once publicly reachable. Joining a public
	// DHT publishes this node's IP address: only the user can choose it.
	// mainline.PublicRouters lists the well-known public routers.
	Mainline []string
	// OnMainlinePeer reports each peer found on the mainline DHT or by
	// discovery-channel's multicast DNS, once. It runs on the finder's
	// goroutine: do not block.
	OnMainlinePeer func(MainlinePeer)

	// OnPeerConnect and OnPeerDisconnect report swarm connections. They run
	// on the swarm's event goroutine: do not block.
	OnPeerConnect    func(PeerEvent)
	OnPeerDisconnect func(PeerEvent)

	// Logger receives every component's logs. Zero means discard.
	Logger *slog.Logger
}

// DefaultMaxPeers is Config.MaxPeers's default (swarm.DefaultMaxPeers).
const DefaultMaxPeers = swarm.DefaultMaxPeers

// PublicMainlineRouters are the well-known routers of the public
// BitTorrent mainline DHT (host:port, comma-separated) for Config.Mainline:
// joining through them publishes the node's IP address.
const PublicMainlineRouters = mainline.PublicRouters

// PeerEvent is a swarm connection opening or closing.
type PeerEvent struct {
	PublicKey   ed25519.PublicKey
	Path        holepunch.Path // the path the connection opened on (swarm.PeerInfo.Path)
	Remote      netip.AddrPort // the peer's end of the path (IPv4 or IPv6)
	Role        string         // "client" (we dialled) or "server"
	ConnectTime time.Duration
	Err         error // why it closed (disconnects only)
}

// Reason names why a connection ended, from Err (disconnects only):
// closed, shutdown, remote_closed, timeout, duplicate,
// dead_after_network_change, silent, demoted, banned, firewall, or error.
func (e PeerEvent) Reason() string {
	err := e.Err
	switch {
	case err == nil, errors.Is(err, secure.ErrSessionClosed):
		return "closed"
	case errors.Is(err, swarm.ErrClosed):
		return "shutdown"
	case errors.Is(err, secure.ErrRemoteClosed):
		return "remote_closed"
	case errors.Is(err, secure.ErrPeerDead):
		return "timeout"
	case errors.Is(err, swarm.ErrDuplicate):
		return "duplicate"
	case errors.Is(err, swarm.ErrDead):
		return "dead_after_network_change"
	case errors.Is(err, swarm.ErrStale):
		return "silent"
	case errors.Is(err, swarm.ErrDemoted):
		return "demoted"
	case errors.Is(err, swarm.ErrBanned):
		return "banned"
	case errors.Is(err, swarm.ErrFirewalled):
		return "firewall"
	}
	return "error"
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
	if c.PublicWebSocketURL != "" && !dht.ValidWebSocketURL(c.PublicWebSocketURL) {
		return c, fmt.Errorf("%w: PublicWebSocketURL %q: want ws:// or wss://host[:port], at most %d bytes", ErrConfig, c.PublicWebSocketURL, dht.MaxWebSocketURL)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return c, fmt.Errorf("%w: TLSCertFile and TLSKeyFile go together", ErrConfig)
	}
	if c.PeersInterval <= 0 {
		c.PeersInterval = DefaultPeersInterval
	}
	if c.ProbeClient == nil {
		c.ProbeClient = &http.Client{Timeout: ProbeTimeout}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}
