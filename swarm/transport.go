package swarm

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"net/netip"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/natcheck"
)

// connector connects to peers by public key and hands over the connections
// peers open to us. It keeps at most one connection per remote key and
// settles simultaneous dials (the swarm takes each new connection as the
// one that counts; see adopt). The production one is holepunch's Endpoint
// (endpoint.go); tests use a fake whose dials fail.
type connector interface {
	// Connect dials remote. relays are the DHT relays from the peer's
	// record (nil: look them up by key); direct are addresses to try
	// without signaling through the DHT (LAN discovery); hello reaches the
	// remote's firewall before any ICE work (dialHello).
	Connect(ctx context.Context, remote ed25519.PublicKey, relays, direct []netip.AddrPort, hello []byte) (*holepunch.Conn, error)
	// NAT returns the last NAT measurement (zero before the first).
	NAT() natcheck.Report
	// WaitNAT waits until no measurement is in flight (the transport's own
	// at start, a RemeasureNAT) or ctx ends, and returns the last report.
	WaitNAT(ctx context.Context) natcheck.Report
	// RemeasureNAT measures the NAT in front of the socket again and uses
	// the new report in the next handshakes. A transport that cannot
	// measure returns ErrNoEndpoint.
	RemeasureNAT(ctx context.Context) (natcheck.Report, error)
	// Close stops accepting and dialling. Connections already handed out
	// are the swarm's to close.
	Close() error
}

// transportHooks are what a transport calls back into the swarm.
type transportHooks struct {
	key ed25519.PrivateKey
	// firewall decides about an incoming peer, given the hello it dialled
	// with, before any hole punching; nil error accepts.
	firewall func(remote ed25519.PublicKey, hello []byte) error
	// incoming receives every accepted incoming connection.
	incoming func(*holepunch.Conn)
	// measured receives every successful NAT measurement, whoever asked
	// for it (the transport's own at start, RemeasureNAT).
	measured func(natcheck.Report)
	log      *slog.Logger
}

// transportFactory builds a transport over the swarm's DHT node in two
// steps, because signaling handlers must be in the DHT config before the
// node exists.
type transportFactory interface {
	// configure adjusts the DHT config before the node is created.
	configure(c *dht.Config)
	// start builds the transport; node is nil when the swarm runs without
	// a DHT (tests with an in-memory discovery).
	start(ctx context.Context, node *dht.Node, h transportHooks) (connector, error)
}

// Dial failure classes that transports wrap their errors in, so that the
// swarm can count failures by reason and choose between retry and drop.
var (
	// errRefused: the remote's firewall or limits refused us. Retried on
	// the backoff schedule: limits change.
	errRefused = errors.New("refused by peer")
	// errSimultaneous: both sides dialled at once and our dial lost the
	// tie-break; the connection arrives as an incoming one instead.
	errSimultaneous = errors.New("simultaneous dial lost")
	// errUnreachable: no path could be found (ICE failed, relay down).
	errUnreachable = errors.New("unreachable")
)

// failureReason names a dial error for Stats.FailuresByReason.
func failureReason(err error) string {
	switch {
	case errors.Is(err, ErrFirewalled):
		return "firewall"
	case errors.Is(err, ErrBanned):
		return "banned"
	case errors.Is(err, ErrInboundLimit):
		return "limit"
	case errors.Is(err, ErrSelf):
		return "self"
	case errors.Is(err, errRefused):
		return "refused"
	case errors.Is(err, errSimultaneous):
		return "simultaneous"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, errUnreachable):
		return "unreachable"
	case errors.Is(err, dht.ErrNoRelay), errors.Is(err, dht.ErrTimeout), errors.Is(err, dht.ErrNoNodes):
		return "signaling"
	}
	return "other"
}

// discovery is the swarm's view of the DHT: announce, unannounce and look
// up topics. The production one wraps *dht.Node; tests without sockets use
// an in-memory one.
type discovery interface {
	announce(ctx context.Context, topic Topic, key ed25519.PrivateKey) error
	unannounce(ctx context.Context, topic Topic, key ed25519.PrivateKey) error
	lookup(ctx context.Context, topic Topic) ([]dht.PeerRecord, error)
	// ready makes sure the node is joined to the network (bootstraps again
	// after an outage).
	ready(ctx context.Context) error
	// port is the local UDP port peers reach us on (LAN discovery).
	localAddr() netip.AddrPort
	close() error
}

// discoveryFactory builds the discovery; the default is dhtFactory.
type discoveryFactory func(cfg dht.Config) (discovery, *dht.Node, error)

// dhtDiscovery is discovery over a real DHT node.
type dhtDiscovery struct{ node *dht.Node }

// newDHTDiscovery creates and starts the swarm's DHT node.
func newDHTDiscovery(cfg dht.Config) (discovery, *dht.Node, error) {
	node := dht.New(cfg)
	if err := node.Start(); err != nil {
		return nil, nil, err
	}
	return &dhtDiscovery{node: node}, node, nil
}

func (d *dhtDiscovery) announce(ctx context.Context, topic Topic, key ed25519.PrivateKey) error {
	_, err := d.node.Announce(ctx, topic.id(), key)
	return err
}

func (d *dhtDiscovery) unannounce(ctx context.Context, topic Topic, key ed25519.PrivateKey) error {
	return d.node.Unannounce(ctx, topic.id(), key)
}

func (d *dhtDiscovery) lookup(ctx context.Context, topic Topic) ([]dht.PeerRecord, error) {
	res, err := d.node.Lookup(ctx, topic.id())
	if err != nil {
		return nil, err
	}
	return res.Peers, nil
}

func (d *dhtDiscovery) ready(ctx context.Context) error {
	if d.node.Stats().RoutingTable > 0 {
		return nil
	}
	return d.node.Bootstrap(ctx)
}

func (d *dhtDiscovery) localAddr() netip.AddrPort { return d.node.LocalAddr() }

func (d *dhtDiscovery) close() error { return d.node.Close() }
