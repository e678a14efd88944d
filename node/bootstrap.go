package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/natcheck/dhtprobe"
	"github.com/swarmdb/swarmdb/turnserver"
)

// BootstrapConfig configures a bootstrap node: a persistent DHT node on a
// public address that others join through, with a STUN server on its DHT
// port, optionally a TURN relay, and optionally a mainline DHT node that
// announces it under mainline.BootstrapName so that nodes find it with no
// address given. `swarmdb bootstrap` runs one.
type BootstrapConfig struct {
	// ListenAddr is the DHT's UDP address. Zero means "0.0.0.0:0".
	ListenAddr string
	// ListenAddr6 is the DHT's IPv6 address (dht.Config.ListenAddr6): zero
	// means [::] on ListenAddr's port when that binds every interface.
	ListenAddr6 string
	// Bootstrap lists other bootstrap nodes to join.
	Bootstrap []netip.AddrPort
	// PublicAddr is the node's public address when it cannot be learned
	// (bound to 0.0.0.0 with no other bootstrap node). Zero means learn it.
	PublicAddr netip.AddrPort
	// Net opens the sockets. Zero means the real network.
	Net transport.Net

	// TURNAddr is the TURN relay's listen address. Zero means no relay.
	TURNAddr string
	// TURNPrivate lets the relay reach private and loopback peers (LAN-only
	// and test networks).
	TURNPrivate bool

	// Mainline lists mainline DHT routers (host:port); empty means off. See
	// Config.Mainline.
	Mainline []string
	// DataDir, when set, keeps the node cache (nodes.json) across restarts.
	DataDir string
	// OnMainlinePeer reports the bootstrap nodes found under the name.
	OnMainlinePeer func(MainlinePeer)

	// Logger receives every component's logs. Zero means discard.
	Logger *slog.Logger
}

// ErrTURNNoPublicIP: the relay is off because its public IP is unknown.
var ErrTURNNoPublicIP = turnserver.ErrNoPublicIP

// Bootstrap is a running bootstrap node.
type Bootstrap struct {
	// Immutable after NewBootstrap.
	cfg BootstrapConfig
	log *slog.Logger

	// Set by Start, immutable after it.
	dn       *dht.Node
	relay    atomic.Pointer[turnserver.Server]
	turnErr  error // why the relay is off when TURNAddr was set
	mainline *mainlinePart
	cache    *nodeCache

	mu      sync.Mutex
	started bool
	closed  bool
}

// bootstrapJoinTimeout bounds the first join of other bootstrap nodes; a
// bootstrap node serves even when they are down.
const bootstrapJoinTimeout = 15 * time.Second

// NewBootstrap returns a bootstrap node. It starts nothing.
func NewBootstrap(cfg BootstrapConfig) *Bootstrap {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Bootstrap{cfg: cfg, log: cfg.Logger}
}

// Start opens the DHT socket, joins the other bootstrap nodes (logging
// when none answers), starts the relay and the mainline part.
func (b *Bootstrap) Start(ctx context.Context) (err error) {
	b.mu.Lock()
	if b.started || b.closed {
		b.mu.Unlock()
		return fmt.Errorf("%w: Start called twice or after Close", ErrConfig)
	}
	b.started = true
	b.mu.Unlock()
	defer func() {
		if err != nil {
			b.shutdown()
		}
	}()
	boot := b.cfg.Bootstrap
	if b.cfg.DataDir != "" {
		c, err := loadNodeCache(b.cfg.DataDir)
		if err != nil {
			b.log.Warn("node cache ignored", "err", err)
		}
		b.cache = &c
		boot = validAddrs(append(append([]netip.AddrPort(nil), boot...), c.DHT...))
	}
	b.dn = dht.New(dht.Config{Net: b.cfg.Net, ListenAddr: b.cfg.ListenAddr, ListenAddr6: b.cfg.ListenAddr6, Bootstrap: boot, Mode: dht.ModePersistent,
		PublicAddr: b.cfg.PublicAddr, OnTURN: b.turnOffer, Logger: b.log.With("component", "dht")})
	if err := b.dn.Start(); err != nil {
		return err
	}
	if len(boot) > 0 {
		bctx, cancel := context.WithTimeout(ctx, bootstrapJoinTimeout)
		err := b.dn.Bootstrap(bctx)
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			b.log.Warn("bootstrap peers did not answer; serving anyway", "err", err)
		}
	}
	if b.cfg.TURNAddr != "" {
		if err := b.startRelay(); err != nil {
			return err
		}
	}
	return b.startMainline(ctx)
}

// startRelay starts the TURN relay, advertised at the DHT's public address
// (or the listen IP). A relay whose public IP is unknown stays off, which
// TURNError reports: peers could not reach it.
func (b *Bootstrap) startRelay() error {
	cfg := turnserver.Config{Net: b.cfg.Net, ListenAddr: b.cfg.TURNAddr, AllowPrivatePeers: b.cfg.TURNPrivate,
		Logger: b.log.With("component", "turn")}
	if pub := b.dn.PublicAddr().Addr(); pub.IsValid() && !pub.IsUnspecified() {
		cfg.PublicIP = pub // behind a 1:1 NAT (cloud VMs) the listen IP is not it
	}
	srv := turnserver.New(cfg)
	if err := srv.Start(); err != nil {
		if errors.Is(err, turnserver.ErrNoPublicIP) {
			b.turnErr = err
			b.log.Warn("TURN relay off: public IP unknown (pass the public IP)")
			return nil
		}
		return fmt.Errorf("node: turn relay: %w", err)
	}
	b.relay.Store(srv)
	return nil
}

// turnOffer is the DHT's OnTURN: a credential on the relay for the
// requester (tagged with its IP), once the relay runs.
func (b *Bootstrap) turnOffer(requester netip.AddrPort) (dht.TURNOffer, bool) {
	srv := b.relay.Load()
	if srv == nil {
		return dht.TURNOffer{}, false
	}
	user, pass, exp := srv.Credentials(requester.Addr().String())
	return dht.TURNOffer{Server: srv.Addr(), Username: user, Password: pass, Expires: exp}, true
}

// startMainline starts the mainline part with no topic: it only announces
// the node under the bootstrap name (and joins other bootstrap nodes found
// there).
func (b *Bootstrap) startMainline(ctx context.Context) error {
	if len(b.cfg.Mainline) == 0 {
		return nil
	}
	routers := resolveRouters(ctx, b.cfg.Mainline, b.dn, b.log)
	if b.cache != nil {
		routers = validAddrs(append(routers, b.cache.Mainline...))
	}
	tn := b.cfg.Net
	if tn == nil {
		tn, _ = stdnet.NewNet()
	}
	part, err := newMainlinePart(b.dn, mainlineConfig{
		Routers:  routers,
		LocalIPs: func() []netip.Addr { return dhtprobe.LocalIPs(tn) },
		OnPeer:   b.cfg.OnMainlinePeer,
		Logger:   b.log.With("component", "mainline"),
	})
	if err != nil {
		return fmt.Errorf("node: mainline: %w", err)
	}
	if err := part.start(); err != nil {
		return fmt.Errorf("node: mainline: %w", err)
	}
	b.mainline = part
	return nil
}

// DHT returns the bootstrap node's DHT node (nil before Start).
func (b *Bootstrap) DHT() *dht.Node { return b.dn }

// TURN returns the relay, or nil when it does not run.
func (b *Bootstrap) TURN() *turnserver.Server { return b.relay.Load() }

// TURNError says why the relay is off although TURNAddr was set.
func (b *Bootstrap) TURNError() error { return b.turnErr }

// MainlineStats is the state of the mainline part; ok is false when off.
func (b *Bootstrap) MainlineStats() (MainlineStats, bool) {
	if b.mainline == nil {
		return MainlineStats{}, false
	}
	return b.mainline.stats(), true
}

// Close stops everything Start started. Idempotent.
func (b *Bootstrap) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	return b.shutdown()
}

func (b *Bootstrap) shutdown() error {
	if b.cache != nil {
		if err := saveNodeCache(b.cfg.DataDir, b.dn, b.mainline, b.cache); err != nil {
			b.log.Warn("node cache not saved", "err", err)
		}
	}
	if b.mainline != nil {
		b.mainline.close()
	}
	var errs []error
	if srv := b.relay.Load(); srv != nil {
		errs = append(errs, srv.Close())
	}
	if b.dn != nil {
		errs = append(errs, b.dn.Close())
	}
	return errors.Join(errs...)
}

// BootstrapStatus is a snapshot of a running bootstrap node, what its
// operator is told (`swarmdb bootstrap`'s ready and stopped events).
type BootstrapStatus struct {
	// LocalAddr is the DHT socket's address (the IPv4 one, or the only
	// one of an IPv6-only node).
	LocalAddr netip.AddrPort
	// PublicAddr is zero until the node knows it (from PublicAddr, or
	// from the first node that reports it).
	PublicAddr netip.AddrPort
	// ID is the node id in hex, "" until it is derived from the public
	// address.
	ID string
	// LocalAddr6, PublicAddr6 and ID6 are the IPv6 socket's, beside an
	// IPv4 one; zero without it.
	LocalAddr6, PublicAddr6 netip.AddrPort
	ID6                     string

	// TURNAddr is the relay's address, zero when it does not run; TURNOff
	// says why it does not although TURNAddr was set (ErrTURNNoPublicIP).
	TURNAddr netip.AddrPort
	TURNOff  error
	// TURNAllocated counts relay allocations since Start.
	TURNAllocated uint64

	// RequestsIn, Records and RoutingTable are the DHT node's counters.
	RequestsIn            uint64
	Records, RoutingTable int
}

// Status returns the node's state (zero before Start).
func (b *Bootstrap) Status() BootstrapStatus {
	if b.dn == nil {
		return BootstrapStatus{}
	}
	st := b.dn.Stats()
	out := BootstrapStatus{LocalAddr: st.LocalAddr, PublicAddr: st.PublicAddr, TURNOff: b.turnErr,
		RequestsIn: st.RequestsIn, Records: st.Records, RoutingTable: st.RoutingTable}
	if st.Persistent {
		out.ID = st.ID.String()
	}
	for _, f := range st.Families {
		if f.Family != dht.IPv6 || f.LocalAddr == st.LocalAddr {
			continue
		}
		out.LocalAddr6, out.PublicAddr6 = f.LocalAddr, f.PublicAddr
		if f.Persistent {
			out.ID6 = f.ID.String()
		}
		break
	}
	if srv := b.relay.Load(); srv != nil {
		out.TURNAddr, out.TURNAllocated = srv.Addr(), srv.Stats().Allocated
	}
	return out
}
