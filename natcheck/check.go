package natcheck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
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
	// reflexive address it saw and the round-trip time. It fails with
	// ErrHeld while server sends a probe packet we wait for.
	Binding(ctx context.Context, server netip.AddrPort) (mapped netip.AddrPort, rtt time.Duration, err error)
	// Probe asks server for an unsolicited packet of the given kind and,
	// once the server has answered, waits up to wait(rtt, isolated) for it,
	// rtt being the request's round trip. Isolated promises that until
	// Probe returns nothing is sent to the packet's sender (the node sending
	// it is known and held), so the caller may contact other nodes during
	// the wait without opening the filter being measured. Err is set only
	// when the request failed.
	Probe(ctx context.Context, server netip.AddrPort, kind ProbeKind, wait func(rtt time.Duration, isolated bool) time.Duration) (arrived, unsolicited bool, err error)
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
	// Discovering servers sends to them, and a server we sent to could then
	// pass a filter it should not (the other-node probe must come from a
	// stranger), so Check calls it once a round of filtering probes is
	// isolated (both waits under way, their senders held: see Prober.Probe)
	// or, failing that, after the probes. Zero means use Servers only.
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
	// OnMapping, when set, is called at most once, as soon as the Bindings
	// show the mapping while the filtering probes still wait for their
	// packets (3 RTT + 100 ms): with a report of the servers alone, its
	// filtering unknown. A caller that needs only the mapping (and its
	// public address) can go on with it; Check's result follows.
	OnMapping func(Report)
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
// other-port, at once) go first, while we have sent to only one server;
// then Discover and Bindings to all servers in parallel — during the
// probes' wait when the prober isolates them, after the probes otherwise;
// then the hairpin check.
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

	// The mapping half — Discover (the DHT join: a few round trips) and the
	// Bindings — costs no time of its own when it runs during an isolated
	// probe's wait (3 RTT + 100 ms).
	var probesDone atomic.Bool
	mapping := &background{run: func(ctx context.Context) {
		obs.Servers = askServers(ctx, cfg)
		if cfg.OnMapping == nil || probesDone.Load() {
			return
		}
		early := Classify(Observations{Local: cfg.Local, LocalIPs: cfg.LocalIPs, Servers: obs.Servers})
		if early.Mapping != MappingUnknown {
			cfg.OnMapping(early)
		}
	}}
	for _, s := range cfg.Servers {
		a := probe(ctx, cfg, s, func() { mapping.start(ctx) })
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

	probesDone.Store(true)
	if err := mapping.wait(ctx); err != nil {
		return Report{}, err
	}
	if Classify(obs).Answered < highConfidenceServers {
		askHeldAgain(ctx, cfg.Prober, obs.Servers)
	}

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

// probe runs one round of filtering probes against server s. It calls
// isolated once both probes wait for their packets with their senders held.
func probe(ctx context.Context, cfg CheckConfig, s netip.AddrPort, isolated func()) ProbeAttempt {
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
	round := &isolation{left: 2, held: true, then: isolated}
	observe := func(kind ProbeKind) ProbeObservation {
		var waited time.Duration
		var once sync.Once
		arrived, unsolicited, err := cfg.Prober.Probe(ctx, s, kind, func(rtt time.Duration, held bool) time.Duration {
			once.Do(func() { round.waiting(held) })
			waited = waitFor(rtt)
			return waited
		})
		once.Do(func() { round.waiting(false) }) // the request failed: nothing held
		return ProbeObservation{Measured: err == nil, Arrived: arrived, Unsolicited: unsolicited, Err: err, Wait: waited}
	}
	a := ProbeAttempt{Server: s}
	var wg sync.WaitGroup
	wg.Go(func() { a.OtherNode = observe(ProbeOtherNode) })
	wg.Go(func() { a.OtherPort = observe(ProbeOtherPort) })
	wg.Wait()
	return a
}

// isolation calls then once every probe of a round waits for its packet
// with the sender held (Prober.Probe's isolated).
type isolation struct {
	mu   sync.Mutex
	left int  // probes that have not reached their wait
	held bool // every probe so far waits isolated
	then func()
}

// waiting reports that one probe reached its wait (or failed: held false).
func (r *isolation) waiting(held bool) {
	r.mu.Lock()
	r.left--
	r.held = r.held && held
	all := r.left == 0 && r.held
	r.mu.Unlock()
	if all {
		r.then()
	}
}

// background runs run once, in the background: started early by an
// isolated probe round, or by wait after the probes.
type background struct {
	run  func(ctx context.Context)
	once sync.Once
	done chan struct{}
}

func (b *background) start(ctx context.Context) {
	b.once.Do(func() {
		b.done = make(chan struct{})
		go func() {
			defer close(b.done)
			b.run(ctx)
		}()
	})
}

// wait starts run if no probe round did and waits for it to end.
func (b *background) wait(ctx context.Context) error {
	b.start(ctx)
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// askServers discovers servers (CheckConfig.Discover) and asks the first
// MaxServers of them for our mapped address.
func askServers(ctx context.Context, cfg CheckConfig) []ServerObservation {
	servers := append([]netip.AddrPort(nil), cfg.Servers...)
	if cfg.Discover != nil {
		more, err := cfg.Discover(ctx)
		if err != nil {
			cfg.Logger.Debug("server discovery failed", "err", err)
		}
		servers = appendNew(servers, more...)
	}
	if len(servers) > cfg.MaxServers {
		servers = servers[:cfg.MaxServers]
	}
	return bindings(ctx, cfg.Prober, servers)
}

// highConfidenceServers is how many answering servers a report needs for
// ConfidenceHigh.
const highConfidenceServers = 3

// askHeldAgain repeats, in parallel, the Bindings that were refused with
// ErrHeld during the probes' wait (one round trip after it): in a small DHT
// the node that sent a probe's packet is one of the few servers there are.
// Check asks only when fewer than highConfidenceServers answered.
func askHeldAgain(ctx context.Context, p Prober, obs []ServerObservation) {
	var at []int
	var held []netip.AddrPort
	for i, o := range obs {
		if errors.Is(o.Err, ErrHeld) {
			at, held = append(at, i), append(held, o.Server)
		}
	}
	for j, o := range bindings(ctx, p, held) {
		obs[at[j]] = o
	}
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
