package dhtprobe

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/transport/v2"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/natcheck"
)

// MeasureConfig configures Measure. The zero value works.
type MeasureConfig struct {
	// Net lists the host's interfaces, to recognise an unspecified bind
	// address. Nil means it cannot (CheckConfig.LocalIPs stays empty).
	Net transport.Net
	// ProbeWait is the wait for a filtering probe's packet. Zero means
	// natcheck.DefaultProbeWait.
	ProbeWait time.Duration
	// Hairpin asks for the hairpin check in each family.
	Hairpin bool
	// OnMapping, when set, receives the IPv4 check's early report
	// (natcheck.CheckConfig.OnMapping): the mapping known, the filtering
	// probes still waiting, the DHT joined. The IPv4 report is the one
	// hole punching reads.
	OnMapping func(natcheck.Report)
	// Logger receives debug logs. Zero means discard.
	Logger *slog.Logger
}

// Measure measures the NAT (or firewall) in front of each of node's
// sockets with natcheck.Check, against that family's bootstrap nodes and
// the nodes a random lookup finds, and joins the node to the DHT on the
// way (Check's Discover step). The report is the IPv4 one with the IPv6 one
// in its IPv6 field; a node without IPv4 (or whose IPv4 reached nobody)
// gets an unmeasured IPv4 part (class unknown, nothing answered). It fails
// only when no family could be measured.
//
// Both families are measured at once when both have bootstrap nodes from
// the start; each check's filtering probes must come from nodes that never
// heard from us, so the join, which contacts both families' nodes, waits
// until both checks' probes are waiting for their packets with the senders
// held (the node sends nothing to a probe's helper meanwhile: dht.NATProbe),
// or, with a server too old to name the helper, done. Without IPv6
// bootstrap nodes the IPv6 side is measured after the join, against the
// IPv6 nodes it found.
func Measure(ctx context.Context, n *dht.Node, p *Prober, cfg MeasureConfig) (natcheck.Report, error) {
	var ips []netip.Addr
	if cfg.Net != nil {
		ips = LocalIPs(cfg.Net)
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
	probed := newBarrier(btoi(early4) + btoi(early6))
	check := func(fam dht.Family, b *barrier) (natcheck.Report, error) {
		var arrived sync.Once
		defer arrived.Do(b.arrive)
		var onMapping func(natcheck.Report)
		if fam == dht.IPv4 {
			onMapping = cfg.OnMapping
		}
		return natcheck.Check(ctx, natcheck.CheckConfig{
			OnMapping: onMapping,
			Prober:    p,
			Servers:   servers[fam],
			Local:     n.LocalAddrIn(fam),
			LocalIPs:  ips,
			ProbeWait: cfg.ProbeWait,
			Hairpin:   cfg.Hairpin,
			Logger:    cfg.Logger,
			Discover: func(ctx context.Context) ([]netip.AddrPort, error) {
				// Check calls Discover once its filtering probes, whose
				// packets must come from a node that never heard from us,
				// are isolated or done; measuring before the first
				// bootstrap gets the best filtering result, so join here.
				arrived.Do(b.arrive)
				if err := b.wait(ctx); err != nil {
					return nil, err
				}
				if err := join(ctx); err != nil {
					return nil, err
				}
				// The join's lookup filled the routing table: more
				// servers to compare mappings with, at no extra round
				// trip (a lookup of a random target cost three or four).
				// The probes' helpers too: the join could not contact
				// them, and in a small DHT they are a good part of it.
				var more []netip.AddrPort
				for _, c := range append(n.Contacts(), n.HeldForProbes()...) {
					if dht.FamilyOf(c) == fam {
						more = append(more, c)
					}
				}
				return more, nil
			},
		})
	}
	var (
		r4, r6     natcheck.Report
		err4, err6 = natcheck.ErrNoServers, natcheck.ErrNoServers
		wg         sync.WaitGroup
	)
	if early6 {
		wg.Go(func() { r6, err6 = check(dht.IPv6, probed) })
	}
	if early4 {
		r4, err4 = check(dht.IPv4, probed)
	}
	wg.Wait()
	if !early6 && has(dht.IPv6) && (early4 || join(ctx) == nil) && n.Speaks(dht.IPv6) {
		// The IPv6 nodes the join found (the IPv4 check's Discover joined).
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
		r4 = natcheck.Classify(natcheck.Observations{}) // IPv4 unmeasured
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
