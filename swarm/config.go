package swarm

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/pion/transport/v2"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/secure"
)

// Defaults for Config fields whose zero value means "default".
const (
	// DefaultMaxPeers bounds connections of both directions (Hyperswarm's
	// MAX_PEERS).
	DefaultMaxPeers = 64
	// DefaultMaxParallel bounds dials in flight (Hyperswarm's MAX_PARALLEL).
	DefaultMaxParallel = 3
	// DefaultRefreshInterval is the base time between announces and lookups
	// of a joined topic. DHT records live 20 minutes (dht.Config.RecordTTL),
	// so a refresh every 10 minutes plus up to 2 minutes of jitter keeps the
	// record alive through one lost refresh (HyperDHT's numbers).
	DefaultRefreshInterval = 10 * time.Minute
	// DefaultDialTimeout bounds one dial: lookup of the peer's relays,
	// signaling, ICE and the session setup. ICE with a TURN fallback takes
	// up to about 15 s; beyond 30 s nothing will come of it.
	DefaultDialTimeout = 30 * time.Second
	// DefaultLivenessCheck is how long NetworkChanged waits for traffic on
	// each connection before declaring it dead: secure sends a keepalive
	// after 2 s of silence, so a live peer is heard from at least twice.
	DefaultLivenessCheck = 5 * time.Second
	// DefaultLANInterval is the time between LAN (mDNS) queries.
	DefaultLANInterval = 10 * time.Second
)

// Topic is the 32-byte key of a topic: SHA-256 of the topic string
// (TopicOf), or any 32 bytes the application chooses.
type Topic [32]byte

// TopicOf returns the key of a topic string: its SHA-256.
func TopicOf(name string) Topic { return sha256.Sum256([]byte(name)) }

// String returns the key in hex.
func (t Topic) String() string { return hex.EncodeToString(t[:]) }

// Short returns the first 4 bytes in hex, for logs.
func (t Topic) Short() string { return hex.EncodeToString(t[:4]) }

func (t Topic) id() dht.ID { return dht.ID(t) }

// JoinOptions says how to take part in a topic. The zero value means both
// server and client (Hyperswarm's default).
type JoinOptions struct {
	// Server announces this node under the topic so that clients dial it.
	Server bool
	// Client looks the topic up and dials every peer found.
	Client bool
}

func (o JoinOptions) withDefaults() JoinOptions {
	if !o.Server && !o.Client {
		return JoinOptions{Server: true, Client: true}
	}
	return o
}

// Config configures a Swarm. The zero value is a working swarm with a
// random identity, no bootstrap nodes (LAN discovery only) and the default
// limits.
type Config struct {
	// Key is the node's identity. Zero means derived from Seed.
	Key ed25519.PrivateKey
	// Seed (32 bytes) derives Key deterministically when Key is nil. Both
	// nil means a random identity.
	Seed []byte

	// Net opens every socket (the DHT socket, which also carries hole
	// punching and sessions). Zero means the real network.
	Net transport.Net
	// ListenAddr is the UDP address to bind. Zero means "0.0.0.0:0".
	ListenAddr string
	// Bootstrap lists DHT nodes to join through. Empty means no DHT
	// discovery beyond this node (LAN discovery still works).
	Bootstrap []netip.AddrPort
	// DHT tunes the DHT node. Its Net, ListenAddr, Bootstrap, Logger and
	// OnSignal are set by the swarm. Zero Mode means adaptive.
	DHT dht.Config

	// MaxPeers bounds open connections of both directions plus dials in
	// flight: the active view of the membership protocol (overlay.go),
	// which keeps a swarm of any size one connected network. Zero means
	// DefaultMaxPeers. Explicit peers are dialled even when it is reached.
	MaxPeers int
	// MaxParallel bounds dials in flight. Zero means DefaultMaxParallel.
	MaxParallel int
	// MaxInbound bounds incoming connections; further ones are refused
	// before any hole punching. Zero means MaxPeers.
	MaxInbound int

	// Firewall, when set, is asked about every peer before dialling it
	// (inbound false) and before accepting it (inbound true, called before
	// any ICE work). A non-nil error refuses the peer.
	Firewall func(remote ed25519.PublicKey, inbound bool) error

	// OnConnection is called for every new connection, in order with
	// OnDisconnect, on one goroutine: do not block it for long, and do not
	// call Close from it. Nil means the connections are only counted (and
	// stay open).
	OnConnection func(c *Conn, info PeerInfo)
	// OnDisconnect is called once for every connection OnConnection
	// reported, when it closes, with the reason.
	OnDisconnect func(c *Conn, info PeerInfo, err error)

	// PassiveView bounds the known peers kept besides the open
	// connections (HyParView's passive view). Zero means
	// max(DefaultPassiveView, 4 × MaxPeers).
	PassiveView int
	// ActiveWalk and PassiveWalk are the forward-join walk length and the
	// hop that leaves the joiner in the passive view. Zero means
	// DefaultActiveWalk and DefaultPassiveWalk.
	ActiveWalk, PassiveWalk int
	// ShuffleInterval is the time between shuffles of the passive view.
	// Zero means DefaultShuffleInterval.
	ShuffleInterval time.Duration
	// StaleAfter is how long a connection may stay silent, despite a ping
	// on its control stream, before the peer is dialled again (which
	// replaces the connection): a peer whose NAT mapping changed is back
	// within about this long. Zero means DefaultStaleAfter. The ping goes
	// out after 2 s of silence, so a StaleAfter under about 3 s leaves it
	// no time to be answered.
	StaleAfter time.Duration

	// Backoff is the retry schedule. Zero means the default one.
	Backoff Backoff
	// RefreshInterval is the base time between re-announces and lookups of
	// a topic; each gets up to a fifth of it as random extra. Zero means
	// DefaultRefreshInterval.
	RefreshInterval time.Duration
	// DialTimeout bounds one dial. Zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// LivenessCheck is how long NetworkChanged waits for traffic on each
	// connection. Zero means DefaultLivenessCheck.
	LivenessCheck time.Duration

	// DisableLAN turns LAN discovery (mDNS/DNS-SD) off. It is on by default.
	DisableLAN bool
	// LANInterval is the time between LAN queries. Zero means
	// DefaultLANInterval.
	LANInterval time.Duration

	// Session configures every secure session (keepalive interval, dead
	// peer timeout). The zero value works; its KeepaliveInterval defaults
	// to DefaultKeepaliveInterval, not to secure's.
	Session secure.Config
	// KeepLoopback keeps loopback ICE candidates: set it when peers live on
	// 127.0.0.0/8 (tests, the demo).
	KeepLoopback bool

	// OnListen runs once the node's UDP socket is bound (local is its
	// address), before the DHT is joined and the NAT measured; Start waits
	// for it. The node asks its router for a port mapping there, so that
	// the first NAT measurement and the DHT's reachability check see it.
	// Nil means nothing to do.
	OnListen func(ctx context.Context, local netip.AddrPort)
	// KeepFreedMemory: see holepunch.EndpointConfig. Zero means freed
	// memory goes back to the OS once connection setups go quiet.
	KeepFreedMemory bool
	// Mapped returns the public address a router port mapping forwards to
	// the node's socket, or the zero value (see holepunch.EndpointConfig).
	// Nil means no port mapping.
	Mapped func() netip.AddrPort

	// MonitorNAT keeps the NAT measurement current (natcheck.Monitor): the
	// swarm polls the host's addresses every NATInterval and the reflexive
	// addresses DHT peers report, measures again when either changes, and
	// calls NetworkChanged when the result differs from the last. False
	// means the NAT is measured at Start and on RemeasureNAT only, which
	// suits a swarm with no DHT nodes beyond its LAN to measure against.
	// Without a DHT there is no monitor.
	MonitorNAT bool
	// NATInterval is how often the NAT monitor polls. Zero means
	// natcheck.DefaultMonitorInterval.
	NATInterval time.Duration
	// OnNATChange is called with every NAT report that differs from the
	// last one it was given (natcheck.Changed), starting with the first,
	// whatever ran the measurement (Start, the monitor, RemeasureNAT). It
	// runs on the goroutine of OnConnection, in order with it: do not block.
	// Nil means no calls.
	OnNATChange func(natcheck.Report)

	// Logger receives the swarm's logs. Nil means discard.
	Logger *slog.Logger

	// transport replaces the hole-punching endpoint (tests).
	transport transportFactory
	// discovery replaces the DHT (tests that run without sockets).
	discovery discoveryFactory
}

// withDefaults fills every zero field. It is the only place defaults live.
func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Key != nil:
		if len(c.Key) != ed25519.PrivateKeySize {
			return c, fmt.Errorf("%w: private key of %d bytes", ErrBadKey, len(c.Key))
		}
	case c.Seed != nil:
		if len(c.Seed) != ed25519.SeedSize {
			return c, fmt.Errorf("%w: seed of %d bytes", ErrBadKey, len(c.Seed))
		}
		c.Key = ed25519.NewKeyFromSeed(c.Seed)
	default:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return c, err
		}
		c.Key = priv
	}
	if c.ListenAddr == "" {
		c.ListenAddr = "0.0.0.0:0"
	}
	if c.MaxPeers <= 0 {
		c.MaxPeers = DefaultMaxPeers
	}
	if c.MaxParallel <= 0 {
		c.MaxParallel = DefaultMaxParallel
	}
	if c.MaxInbound <= 0 {
		c.MaxInbound = c.MaxPeers
	}
	if c.PassiveView <= 0 {
		c.PassiveView = max(DefaultPassiveView, 4*c.MaxPeers)
	}
	if c.ActiveWalk <= 0 {
		c.ActiveWalk = DefaultActiveWalk
	}
	c.ActiveWalk = min(c.ActiveWalk, maxPath-1) // a shuffle records every hop
	if c.PassiveWalk <= 0 {
		c.PassiveWalk = DefaultPassiveWalk
	}
	if c.ShuffleInterval <= 0 {
		c.ShuffleInterval = DefaultShuffleInterval
	}
	if c.StaleAfter <= 0 {
		c.StaleAfter = DefaultStaleAfter
	}
	if c.Session.KeepaliveInterval <= 0 {
		c.Session.KeepaliveInterval = DefaultKeepaliveInterval
	}
	c.Backoff = c.Backoff.withDefaults()
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = DefaultRefreshInterval
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.LivenessCheck <= 0 {
		c.LivenessCheck = DefaultLivenessCheck
	}
	if c.LANInterval <= 0 {
		c.LANInterval = DefaultLANInterval
	}
	if c.NATInterval <= 0 {
		c.NATInterval = natcheck.DefaultMonitorInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}
