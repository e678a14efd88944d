// Package dhtlink implements holepunch.Link over a *dht.Node: the endpoint
// signals through the node's relays and shares its one UDP socket. Besides
// package dhtprobe it is the only place where holepunch meets dht.
//
// Wire it before the node starts, since dht.Config takes the hooks:
//
//	link := dhtlink.New()
//	cfg.OnSignal, cfg.OnPacket = link.HandleSignal, link.HandlePacket
//	node := dht.New(cfg)
//	link.Attach(node, tn)
//	ep, _ := holepunch.NewEndpoint(holepunch.EndpointConfig{Key: priv, Link: link, MeasureNAT: link.MeasureNAT})
//
// Users: swarm, cmd/swarmdb (pipe) and tests.
package dhtlink

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/transport/v2"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/holepunch/dhtprobe"
)

// Link is a holepunch.Link over a DHT node. The zero value is not usable;
// call New.
type Link struct {
	prober *dhtprobe.Prober

	// Guarded by mu.
	mu       sync.RWMutex
	node     *dht.Node
	net      transport.Net
	onSignal func(from netip.AddrPort, payload []byte) []byte
	onPacket func(b []byte, from netip.AddrPort)
	turn     dht.TURNOffer // last offer, reused until turnReuse before expiry
}

var _ holepunch.Link = (*Link)(nil)

// New returns a Link with no node attached.
func New() *Link {
	return &Link{prober: dhtprobe.New()}
}

// Attach sets the node the link works through. Its bootstrap nodes
// (dht.Node.BootstrapNodes, which may grow after the start) are the first
// servers the NAT measurement and the TURN request ask; tn lists the host's
// interfaces for the NAT check (nil: it cannot recognise an unspecified
// bind address).
func (l *Link) Attach(node *dht.Node, tn transport.Net) {
	l.mu.Lock()
	l.node, l.net = node, tn
	l.mu.Unlock()
	l.prober.Attach(node)
}

func (l *Link) nodeOrNil() *dht.Node {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.node
}

// ErrNotAttached: the link has no node yet.
var ErrNotAttached = errors.New("dhtlink: no dht node attached")

// HandleSignal is the node's dht.SignalHandler.
func (l *Link) HandleSignal(to ed25519.PublicKey, from netip.AddrPort, payload []byte) []byte {
	l.mu.RLock()
	h := l.onSignal
	l.mu.RUnlock()
	if h == nil {
		return nil
	}
	return h(from, payload)
}

// HandlePacket is the node's dht.PacketHandler: STUN responses to the NAT
// measurement go to the prober, everything else to the endpoint.
func (l *Link) HandlePacket(b []byte, from netip.AddrPort) {
	if l.prober.Handle(b, from) {
		return
	}
	l.mu.RLock()
	h := l.onPacket
	l.mu.RUnlock()
	if h != nil {
		h(b, from)
	}
}

// SetHandlers implements holepunch.Link.
func (l *Link) SetHandlers(onSignal func(netip.AddrPort, []byte) []byte, onPacket func([]byte, netip.AddrPort)) {
	l.mu.Lock()
	l.onSignal, l.onPacket = onSignal, onPacket
	l.mu.Unlock()
}

// Register implements holepunch.Link.
func (l *Link) Register(ctx context.Context, priv []byte) ([]netip.AddrPort, error) {
	n := l.nodeOrNil()
	if n == nil {
		return nil, ErrNotAttached
	}
	return n.Register(ctx, ed25519.PrivateKey(priv))
}

// FindRelays implements holepunch.Link.
func (l *Link) FindRelays(ctx context.Context, pub []byte) ([]netip.AddrPort, error) {
	n := l.nodeOrNil()
	if n == nil {
		return nil, ErrNotAttached
	}
	return n.FindRelays(ctx, ed25519.PublicKey(pub))
}

// Signal implements holepunch.Link.
func (l *Link) Signal(ctx context.Context, relay netip.AddrPort, pub []byte, payload []byte) ([]byte, error) {
	n := l.nodeOrNil()
	if n == nil {
		return nil, ErrNotAttached
	}
	return n.Signal(ctx, relay, ed25519.PublicKey(pub), payload)
}

// WritePacket implements holepunch.Link.
func (l *Link) WritePacket(b []byte, to netip.AddrPort) error {
	n := l.nodeOrNil()
	if n == nil {
		return ErrNotAttached
	}
	return n.WritePacket(b, to)
}

// LocalAddr implements holepunch.Link.
func (l *Link) LocalAddr() netip.AddrPort {
	if n := l.nodeOrNil(); n != nil {
		return n.LocalAddr()
	}
	return netip.AddrPort{}
}

// PublicAddr implements holepunch.Link.
func (l *Link) PublicAddr() netip.AddrPort {
	if n := l.nodeOrNil(); n != nil {
		return n.PublicAddr()
	}
	return netip.AddrPort{}
}

// IPv6 implements holepunch.Link: the node's IPv6 socket beside its
// primary one (see dht.Family).
func (l *Link) IPv6() holepunch.IPv6State {
	n := l.nodeOrNil()
	if n == nil {
		return holepunch.IPv6State{}
	}
	for _, f := range n.Families() {
		if f.Family == dht.IPv6 {
			return holepunch.IPv6State{Local: f.LocalAddr, Public: f.PublicAddr, Joined: f.Joined}
		}
	}
	return holepunch.IPv6State{}
}

// TURN implements holepunch.Link: it asks public nodes for a TURN offer,
// the bootstrap nodes first (public servers usually run the relay), then
// the nodes closest to a random target. An offer is reused until half its
// lifetime is gone.
func (l *Link) TURN(ctx context.Context) (holepunch.TURNServerInfo, error) {
	l.mu.RLock()
	n, cached := l.node, l.turn
	l.mu.RUnlock()
	if n == nil {
		return holepunch.TURNServerInfo{}, ErrNotAttached
	}
	boot := n.BootstrapNodes()
	if cached.Server.IsValid() && time.Until(cached.Expires) > turnReuse {
		return infoOf(cached), nil
	}
	try := func(addrs []netip.AddrPort) (dht.TURNOffer, error) {
		var lastErr error = holepunch.ErrNoTURN
		for _, a := range addrs {
			o, err := n.TURNOffer(ctx, a)
			if err == nil {
				return o, nil
			}
			lastErr = err
			if ctx.Err() != nil {
				break
			}
		}
		return dht.TURNOffer{}, lastErr
	}
	o, err := try(boot)
	if err != nil && ctx.Err() == nil {
		var target dht.ID
		_, _ = rand.Read(target[:])
		if more, ferr := n.FindNode(ctx, target); ferr == nil {
			o, err = try(more)
		}
	}
	if err != nil {
		return holepunch.TURNServerInfo{}, fmt.Errorf("dhtlink: %w: %w", holepunch.ErrNoTURN, err)
	}
	l.mu.Lock()
	l.turn = o
	l.mu.Unlock()
	return infoOf(o), nil
}

// turnReuse: a cached offer is used while it has at least this long left,
// so an allocation made with it never outlives the credential by much.
const turnReuse = 5 * time.Minute

func infoOf(o dht.TURNOffer) holepunch.TURNServerInfo {
	return holepunch.TURNServerInfo{Addr: o.Server, Username: o.Username, Password: o.Password}
}

// TURNHandler returns a dht.TURNHandler that offers srv to every requester
// with a credential tagged with the requester's IP. Put it in the
// dht.Config of a public node that runs a TURN relay.
func TURNHandler(srv *holepunch.TURNServer) dht.TURNHandler {
	return func(requester netip.AddrPort) (dht.TURNOffer, bool) {
		user, pass, exp := srv.Credentials(requester.Addr().String())
		return dht.TURNOffer{Server: srv.Addr(), Username: user, Password: pass, Expires: exp}, true
	}
}

// MeasureNAT measures the NAT in front of each of the node's sockets
// against that family's bootstrap nodes and nodes a random lookup finds
// (holepunch.Check): the report is the IPv4 one, with the IPv6 one in its
// IPv6 field. The families are measured at once when both have bootstrap
// nodes from the start (each family's filtering probes then go out before
// the node joins either overlay); otherwise the IPv6 side is measured
// after the join, against the IPv6 nodes it found. The measurement fails
// only when no family could be measured.
func (l *Link) MeasureNAT(ctx context.Context) (holepunch.NATReport, error) {
	l.mu.RLock()
	n, tn := l.node, l.net
	l.mu.RUnlock()
	if n == nil {
		return holepunch.NATReport{}, ErrNotAttached
	}
	var ips []netip.Addr
	if tn != nil {
		ips = dhtprobe.LocalIPs(tn)
	}
	var servers [2][]netip.AddrPort
	for _, b := range n.BootstrapNodes() {
		servers[dht.FamilyOf(b)] = append(servers[dht.FamilyOf(b)], b)
	}
	var joinOnce sync.Once
	var joinErr error
	join := func(ctx context.Context) error {
		joinOnce.Do(func() { joinErr = n.Bootstrap(ctx) })
		return joinErr
	}
	has := func(fam dht.Family) bool { return n.LocalAddrIn(fam).IsValid() }
	early6 := has(dht.IPv6) && len(servers[dht.IPv6]) > 0
	early4 := has(dht.IPv4) && len(servers[dht.IPv4]) > 0
	// Checks that run at once join only when every one has sent its
	// filtering probes: joining contacts the other family's nodes too,
	// and a probe's "stranger" must be one.
	probed := newBarrier(btoi(early4) + btoi(early6))
	check := func(fam dht.Family, b *barrier) (holepunch.NATReport, error) {
		var arrived sync.Once
		defer arrived.Do(b.arrive)
		return holepunch.Check(ctx, holepunch.CheckConfig{
			Prober:   l.prober,
			Servers:  servers[fam],
			Local:    n.LocalAddrIn(fam),
			LocalIPs: ips,
			Discover: func(ctx context.Context) ([]netip.AddrPort, error) {
				// Check calls Discover after its filtering probes, which
				// must reach a node that never heard from us; measuring
				// before the first bootstrap gets the best filtering
				// result, so join here.
				arrived.Do(b.arrive)
				if err := b.wait(ctx); err != nil {
					return nil, err
				}
				if err := join(ctx); err != nil {
					return nil, err
				}
				var target dht.ID
				_, _ = rand.Read(target[:])
				return n.FindNodeIn(ctx, fam, target)
			},
		})
	}
	var (
		r4, r6     holepunch.NATReport
		err4, err6 = holepunch.ErrNoServers, holepunch.ErrNoServers
		wg         sync.WaitGroup
	)
	if early6 {
		wg.Go(func() { r6, err6 = check(dht.IPv6, probed) })
	}
	if early4 {
		r4, err4 = check(dht.IPv4, probed)
	}
	wg.Wait()
	if err := join(ctx); err != nil && err4 != nil && err6 != nil {
		return holepunch.NATReport{}, err
	}
	if !early6 && has(dht.IPv6) && n.Speaks(dht.IPv6) {
		for _, b := range n.BootstrapNodes() {
			if dht.FamilyOf(b) == dht.IPv6 {
				servers[dht.IPv6] = append(servers[dht.IPv6], b)
			}
		}
		r6, err6 = check(dht.IPv6, newBarrier(1))
	}
	if err4 != nil {
		if err6 != nil {
			return r4, err4
		}
		r4 = holepunch.Classify(holepunch.Observations{}) // IPv4 unmeasured
	}
	if err6 == nil {
		r4.IPv6 = &r6
	}
	return r4, nil
}

// barrier lets n parties wait until all have arrived.
type barrier struct {
	mu   sync.Mutex
	left int
	all  chan struct{} // closed when left reaches zero
}

func newBarrier(n int) *barrier {
	b := &barrier{left: n, all: make(chan struct{})}
	if n <= 0 {
		close(b.all)
	}
	return b
}

// arrive counts one party in; each party calls it once.
func (b *barrier) arrive() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.left--; b.left == 0 {
		close(b.all)
	}
}

// wait returns when every party arrived or ctx is done.
func (b *barrier) wait(ctx context.Context) error {
	select {
	case <-b.all:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
