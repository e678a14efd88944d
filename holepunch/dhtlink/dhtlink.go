// Package dhtlink implements holepunch.Link over a *dht.Node: the endpoint
// signals through the node's relays and shares its UDP sockets, and
// measures the NAT with natcheck/dhtprobe on the same socket. It is the only
// place where holepunch meets dht.
//
// Wire it before the node starts, since dht.Config takes the signaling
// hook; Attach registers the link's STUN handler with the node, and the
// endpoint's Start registers its handlers through the link (Handle):
//
//	link := dhtlink.New()
//	cfg.OnSignal = link.HandleSignal
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
	"github.com/swarmdb/swarmdb/internal/demux"
	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/natcheck/dhtprobe"
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
	ice      demux.Handler                 // the endpoint's STUN handler (handleSTUN)
	handlers map[demux.Class]demux.Handler // the endpoint's others, for Attach to register
	turn     dht.TURNOffer                 // last offer, reused until turnReuse before expiry
}

var (
	_ holepunch.Link         = (*Link)(nil)
	_ holepunch.FragmentFree = (*Link)(nil)
	_ holepunch.SegmentLink  = (*Link)(nil)
)

// New returns a Link with no node attached.
func New() *Link {
	return &Link{prober: dhtprobe.New(), handlers: map[demux.Class]demux.Handler{}}
}

// Attach sets the node the link works through. Its bootstrap nodes
// (dht.Node.BootstrapNodes, which may grow after the start) are the first
// servers the NAT measurement and the TURN request ask; tn lists the host's
// interfaces for the NAT check (nil: it cannot recognise an unspecified
// bind address). It registers the link's STUN handler with the node, and
// the endpoint's handlers if the endpoint started first.
func (l *Link) Attach(node *dht.Node, tn transport.Net) {
	l.mu.Lock()
	l.node, l.net = node, tn
	for c, h := range l.handlers {
		node.Handle(c, h)
	}
	l.mu.Unlock()
	node.Handle(demux.STUN, l.handleSTUN)
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

// SetSignalHandler implements holepunch.Link.
func (l *Link) SetSignalHandler(h func(netip.AddrPort, []byte) []byte) {
	l.mu.Lock()
	l.onSignal = h
	l.mu.Unlock()
}

// Handle implements holepunch.Link. Birthday probes and sealed datagrams
// go from the node straight to the endpoint's handlers; STUN goes through
// handleSTUN. It may come before Attach, which then registers h.
func (l *Link) Handle(c demux.Class, h demux.Handler) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c == demux.STUN {
		l.ice = h
		return
	}
	l.handlers[c] = h
	if l.node != nil {
		l.node.Handle(c, h) // only stores h: no lock of the node, no callback
	}
}

// handleSTUN is the node's STUN handler, the one place that orders the
// STUN class's three takers: the node has answered plain Binding requests
// itself (every DHT node is a STUN server); responses to the NAT
// measurement's own requests go to the prober; the rest (ICE checks and
// their responses) to the endpoint. It runs on the node's read loop.
func (l *Link) handleSTUN(b []byte, from netip.AddrPort) {
	if l.prober.Handle(b, from) {
		return
	}
	l.mu.RLock()
	h := l.ice
	l.mu.RUnlock()
	if h != nil {
		h(b, from)
	}
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

// WriteSegments implements holepunch.SegmentLink.
func (l *Link) WriteSegments(b []byte, segSize int, to netip.AddrPort) error {
	n := l.nodeOrNil()
	if n == nil {
		return ErrNotAttached
	}
	return n.WriteSegments(b, segSize, to)
}

// DontFragment implements holepunch.FragmentFree: the node's sockets set the
// IP Don't Fragment bit.
func (l *Link) DontFragment() bool {
	n := l.nodeOrNil()
	return n != nil && n.DontFragment()
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
// primary one (see dht.Family). A node that has joined no overlay at all
// (no DHT nodes: a LAN-only node) counts as joined in every family it has
// a socket for, as dht.Node.Usable does, so two IPv6-only hosts on a LAN
// still offer each other their addresses.
func (l *Link) IPv6() holepunch.IPv6State {
	n := l.nodeOrNil()
	if n == nil {
		return holepunch.IPv6State{}
	}
	fams := n.Families()
	none := true
	for _, f := range fams {
		none = none && !f.Joined
	}
	for _, f := range fams {
		if f.Family == dht.IPv6 {
			return holepunch.IPv6State{Local: f.LocalAddr, Public: f.PublicAddr, Joined: f.Joined || none}
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

// TURNIssuer is the part of a TURN relay (a *turnserver.Server) that
// TURNHandler offers: its address and credentials tagged for a requester.
// It keeps this client-side adapter free of the server package.
type TURNIssuer interface {
	Addr() netip.AddrPort
	Credentials(tag string) (user, pass string, expires time.Time)
}

// TURNHandler returns a dht.TURNHandler that offers srv to every requester
// with a credential tagged with the requester's IP. Put it in the
// dht.Config of a public node that runs a TURN relay.
func TURNHandler(srv TURNIssuer) dht.TURNHandler {
	return func(requester netip.AddrPort) (dht.TURNOffer, bool) {
		user, pass, exp := srv.Credentials(requester.Addr().String())
		return dht.TURNOffer{Server: srv.Addr(), Username: user, Password: pass, Expires: exp}, true
	}
}

// MeasureNAT measures the NAT in front of each of the node's sockets
// (dhtprobe.Measure): the IPv4 report, with the IPv6 one in its IPv6
// field. early, when set, gets the IPv4 report as soon as the mapping is
// known, before the filtering probes end (dhtprobe.MeasureConfig.OnMapping).
func (l *Link) MeasureNAT(ctx context.Context, early func(natcheck.Report)) (natcheck.Report, error) {
	l.mu.RLock()
	n, tn := l.node, l.net
	l.mu.RUnlock()
	if n == nil {
		return natcheck.Report{}, ErrNotAttached
	}
	return dhtprobe.Measure(ctx, n, l.prober, dhtprobe.MeasureConfig{Net: tn, OnMapping: early})
}
