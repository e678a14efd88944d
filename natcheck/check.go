package natcheck

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// ProbeKind selects where the unsolicited packet of a filtering probe
// comes from.
type ProbeKind int

const (
	// ProbeOtherNode: a node on an IP we never sent to sends the packet.
	ProbeOtherNode ProbeKind = iota + 1
	// ProbeOtherPort: the server answers from another port on its IP.
	ProbeOtherPort
)

// Prober is how Check reaches the network. It is implemented over the DHT
// node (natcheck/dhtprobe) and by fakes in tests. Every method must use
// the node's one shared socket, so that the mapping measured is the one
// peers will see.
type Prober interface {
	// Binding sends a STUN Binding request to server and returns the
	// reflexive address it saw and the round-trip time.
	Binding(ctx context.Context, server netip.AddrPort) (mapped netip.AddrPort, rtt time.Duration, err error)
	// Probe asks server for an unsolicited packet of the given kind and,
	// once the server has answered, waits up to wait(rtt) for it, rtt being
	// the request's round trip. Err is set only when the request failed.
	Probe(ctx context.Context, server netip.AddrPort, kind ProbeKind, wait func(rtt time.Duration) time.Duration) (arrived, unsolicited bool, err error)
}

// DefaultProbeWait is the longest Check waits for a probe's unsolicited
// packet. One second is several worst-case round trips (under 400 ms across
// the world), so a packet that has not come by then was filtered.
const DefaultProbeWait = time.Second

// The adaptive probe wait (CheckConfig.ProbeWait zero): probeWaitRTTs round
// trips to the server plus probeWaitMargin for the helper node's leg, at least
// minProbeWait, at most DefaultProbeWait.
const (
	probeWaitRTTs   = 3
	probeWaitMargin = 100 * time.Millisecond
	minProbeWait    = 150 * time.Millisecond
)

// CheckConfig configures Check. Prober and Servers are required.
type CheckConfig struct {
	// Prober reaches the network. Required.
	Prober Prober
	// Servers are the first servers to ask (the bootstrap nodes). The
	// filtering probes go to the first that answers. Required.
	Servers []netip.AddrPort
	// Discover, when set, returns more servers for the Binding requests.
	// Check calls it only after the filtering probes, because discovering
	// servers sends to them, and a server we sent to could then pass a
	// filter it should not (the other-node probe must come from a
	// stranger). Zero means use Servers only.
	Discover func(ctx context.Context) ([]netip.AddrPort, error)
	// MaxServers bounds the servers asked for a Binding. Zero means 5.
	MaxServers int
	// Local is the socket's local address; LocalIPs the host's interface
	// IPs (to recognise an unspecified Local). Optional.
	Local    netip.AddrPort
	LocalIPs []netip.Addr
	// ProbeWait is the wait for a probe's packet. Zero means adaptive: a few
	// RTTs to the server (measured by a Binding first), at most
	// DefaultProbeWait.
	ProbeWait time.Duration
	// Hairpin asks for the hairpin check (a Binding to our own public
	// address). False means not measured.
	Hairpin bool
	// Logger receives debug logs. Zero means discard.
	Logger *slog.Logger
}

func (c CheckConfig) withDefaults() CheckConfig {
	if c.MaxServers == 0 {
		c.MaxServers = 5
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Check measures the NAT in front of the prober's socket and classifies it.
// The order matters (see Discover): the filtering probes (other-node and
// other-port, at once) go first, while we have sent to only one server; then
// Bindings to all servers in parallel; then the hairpin check.
func Check(ctx context.Context, cfg CheckConfig) (Report, error) {
	cfg = cfg.withDefaults()
	if cfg.Prober == nil {
		return Report{}, ErrNoProber
	}
	if len(cfg.Servers) == 0 {
		return Report{}, ErrNoServers
	}
	log := cfg.Logger
	obs := Observations{Local: cfg.Local, LocalIPs: cfg.LocalIPs}

	for _, s := range cfg.Servers {
		a := probe(ctx, cfg, s)
		obs.Probes = append(obs.Probes, a)
		if ctx.Err() != nil {
			return Report{}, ctx.Err()
		}
		if a.OtherNode.Err != nil && a.OtherPort.Err != nil {
			log.Debug("nat probe failed", "addr", s, "err", a.OtherNode.Err)
			continue
		}
		// One probe may decide alone: a filtered other-port packet means
		// address-and-port-dependent filtering whatever the other-node
		// probe did (it fails when the server knows no node we have not
		// contacted, as after a join). A round that decides nothing is
		// kept, and the next server is tried.
		obs.OtherNode, obs.OtherPort = a.OtherNode, a.OtherPort
		log.Debug("nat probes done", "addr", s, "other_node", a.OtherNode, "other_port", a.OtherPort)
		if classifyFiltering(a.OtherNode, a.OtherPort) != FilteringUnknown {
			break
		}
	}

	servers := append([]netip.AddrPort(nil), cfg.Servers...)
	if cfg.Discover != nil {
		more, err := cfg.Discover(ctx)
		if err != nil {
			log.Debug("server discovery failed", "err", err)
		}
		servers = appendNew(servers, more...)
	}
	if len(servers) > cfg.MaxServers {
		servers = servers[:cfg.MaxServers]
	}
	obs.Servers = bindings(ctx, cfg.Prober, servers)

	report := Classify(obs)
	if report.Answered == 0 {
		return report, fmt.Errorf("natcheck: check via %v: %w", cfg.Servers, ErrNoAnswer)
	}
	if cfg.Hairpin && report.PublicAddr.IsValid() && report.Mapping != MappingNone {
		_, _, err := cfg.Prober.Binding(ctx, report.PublicAddr)
		hp := err == nil
		obs.Hairpin = &hp
		report = Classify(obs)
	} else if cfg.Hairpin && report.Mapping == MappingNone {
		// Without a NAT, sending to our own address always comes back.
		hp := true
		obs.Hairpin = &hp
		report = Classify(obs)
	}
	return report, nil
}

// probe runs one round of filtering probes against server s.
func probe(ctx context.Context, cfg CheckConfig, s netip.AddrPort) ProbeAttempt {
	// Adaptive: the probe request's own round trip times the wait, and the unsolicited
	// packet gets a few of those. A filtered probe costs its whole wait, and behind a
	// port-restricted NAT both are filtered: at a fixed second each they were two seconds
	// of every start-up. (A Binding first measured the RTT: one round trip more.)
	waitFor := func(rtt time.Duration) time.Duration {
		if cfg.ProbeWait != 0 {
			return cfg.ProbeWait
		}
		return min(max(probeWaitRTTs*rtt+probeWaitMargin, minProbeWait), DefaultProbeWait)
	}
	// Both probes at once: each involves only this server and its helpers, so neither can
	// open the filter for the other.
	observe := func(kind ProbeKind) ProbeObservation {
		var waited time.Duration
		arrived, unsolicited, err := cfg.Prober.Probe(ctx, s, kind, func(rtt time.Duration) time.Duration {
			waited = waitFor(rtt)
			return waited
		})
		return ProbeObservation{Measured: err == nil, Arrived: arrived, Unsolicited: unsolicited, Err: err, Wait: waited}
	}
	a := ProbeAttempt{Server: s}
	var wg sync.WaitGroup
	wg.Go(func() { a.OtherNode = observe(ProbeOtherNode) })
	wg.Go(func() { a.OtherPort = observe(ProbeOtherPort) })
	wg.Wait()
	return a
}

// bindings asks every server in parallel; results keep the servers' order.
func bindings(ctx context.Context, p Prober, servers []netip.AddrPort) []ServerObservation {
	out := make([]ServerObservation, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() {
			mapped, rtt, err := p.Binding(ctx, s)
			out[i] = ServerObservation{Server: s, Mapped: mapped, RTT: rtt, Err: err}
		})
	}
	wg.Wait()
	return out
}

func appendNew(list []netip.AddrPort, more ...netip.AddrPort) []netip.AddrPort {
	for _, a := range more {
		dup := false
		for _, b := range list {
			dup = dup || a == b
		}
		if !dup {
			list = append(list, a)
		}
	}
	return list
}
