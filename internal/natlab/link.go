package natlab

import (
	"fmt"
	"strconv"
	"sync"
	"time"
)

// LinkConfig shapes a router's uplink, the part of a real path a bridge
// leaves out: propagation delay and a bottleneck with a queue.
type LinkConfig struct {
	// Delay is added to every frame crossing the link, in each direction
	// (one way). Two hosts behind two routers with delays d1 and d2 see an
	// RTT of about 2×(d1+d2). Zero forwards at once.
	Delay time.Duration
	// Rate is the bottleneck in bits per second, in each direction (tc tbf
	// on the link's egress). Zero means no bottleneck.
	Rate uint64
	// Queue is how long a full bottleneck queue takes to drain at Rate
	// (tbf's latency): the buffer a home router has. Zero means 50 ms.
	Queue time.Duration
}

// defaultLinkQueue is the bottleneck queue when LinkConfig.Queue is zero: a
// modest home-router buffer, between a bufferbloated one (seconds) and an
// AQM-managed one (5–10 ms).
const defaultLinkQueue = 50 * time.Millisecond

// Interface names inside a link's namespace: the end facing the router and
// the end facing the upstream segment.
const (
	linkRouterIf   = "lr0"
	linkUpstreamIf = "lu0"
)

// link is the shaped uplink of one router: a namespace between the router's
// WAN veth and the upstream bridge, with a delay line running in this
// process.
type link struct {
	// Immutable after addLink.
	lab  *Lab
	ns   string
	line *delayLine

	mu  sync.Mutex // guards cfg
	cfg LinkConfig
}

// addLink builds the link namespace for a router whose WAN interface wanIf
// (in routerNS) would otherwise plug straight into bridge in upstreamNS as
// port upstreamPort. The delay line stops when the test ends, before the
// namespaces go.
func (l *Lab) addLink(name, routerNS, upstreamNS, upstreamPort, bridge string, cfg LinkConfig) *link {
	l.t.Helper()
	ns := l.addNamespace(name + "-link")
	l.must(l.vethPair(routerNS, wanIf, ns, linkRouterIf))
	l.must(l.connect(ns, linkUpstreamIf, upstreamNS, upstreamPort, bridge))
	l.must(l.ip(ns, "link set "+linkRouterIf+" up", "link set "+linkUpstreamIf+" up"))
	// The link namespace is a wire: it must not answer or route anything.
	l.must(l.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1"))
	lk := &link{lab: l, ns: ns}
	err := inNetns(nsPath(ns), func() error {
		var err error
		lk.line, err = newDelayLine(linkRouterIf, linkUpstreamIf)
		return err
	})
	l.must(err)
	lk.line.start()
	l.t.Cleanup(lk.line.close)
	l.must(lk.set(cfg))
	return lk
}

// set applies cfg: the delay at once, the bottleneck by replacing both
// qdiscs.
func (lk *link) set(cfg LinkConfig) error {
	if cfg.Delay < 0 || cfg.Queue < 0 {
		return fmt.Errorf("%w: link %+v", ErrBadConfig, cfg)
	}
	lk.mu.Lock()
	defer lk.mu.Unlock()
	lk.line.setDelay(cfg.Delay)
	for _, dev := range []string{linkRouterIf, linkUpstreamIf} {
		if err := lk.lab.run(lk.ns, "", "tc", tbfArgs(dev, cfg)...); err != nil {
			return err
		}
	}
	lk.cfg = cfg
	return nil
}

// tbfArgs returns the tc arguments that put dev's egress under cfg's
// bottleneck, or back to the default qdisc when there is none.
func tbfArgs(dev string, cfg LinkConfig) []string {
	if cfg.Rate == 0 {
		// "replace ... pfifo" rather than "del": del fails when nothing is set.
		return []string{"qdisc", "replace", "dev", dev, "root", "pfifo", "limit", "10000"}
	}
	queue := cfg.Queue
	if queue == 0 {
		queue = defaultLinkQueue
	}
	// The bucket must hold a few frames and a few milliseconds at the
	// rate, or tbf falls short of the rate when its timer fires late on a
	// busy machine.
	burst := max(cfg.Rate/8/250, 32<<10)
	return []string{"qdisc", "replace", "dev", dev, "root", "tbf",
		"rate", strconv.FormatUint(cfg.Rate, 10) + "bit",
		"burst", strconv.FormatUint(burst, 10),
		"latency", strconv.FormatInt(queue.Microseconds(), 10) + "us"}
}

// SetLink changes the router's link shaping. The router must have been
// built with RouterConfig.Link set; others have no link to shape.
func (r *Router) SetLink(cfg LinkConfig) error {
	if r.link == nil {
		return fmt.Errorf("%w: router %s has no shaped link (set RouterConfig.Link)", ErrBadConfig, r.name)
	}
	return r.link.set(cfg)
}

// Link returns the router's current link shaping and whether it has a
// shaped link at all.
func (r *Router) Link() (LinkConfig, bool) {
	if r.link == nil {
		return LinkConfig{}, false
	}
	r.link.mu.Lock()
	defer r.link.mu.Unlock()
	return r.link.cfg, true
}

// LinkStats returns what the router's delay line forwarded and dropped.
func (r *Router) LinkStats() (LineStats, bool) {
	if r.link == nil {
		return LineStats{}, false
	}
	return r.link.line.stats(), true
}
