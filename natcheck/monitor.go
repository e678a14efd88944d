package natcheck

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"
)

// This file re-measures the NAT when the network changes (issue 3): the
// local addresses change (the laptop moved to another Wi-Fi, DHCP gave a
// new lease) or peers start to report another reflexive address (the
// router rebooted, the ISP changed our public IP, the NAT lost its
// mapping). The decision is the pure changeWatch; Monitor is the thin
// manager that polls, measures and calls back.

// ReflexiveReport is one peer's report of our reflexive address: the
// address it saw our packets come from (dht: every reply carries it).
type ReflexiveReport struct {
	// By is the IP of the peer that saw us.
	By netip.Addr
	// Addr is the address it saw.
	Addr netip.AddrPort
}

// Trigger says why a measurement ran.
type Trigger int

const (
	// TriggerNone: nothing changed, no measurement is due.
	TriggerNone Trigger = iota
	// TriggerStart: the first measurement.
	TriggerStart
	// TriggerLocal: the host's local addresses changed.
	TriggerLocal
	// TriggerReflexive: peers report a reflexive address the last report
	// does not contain.
	TriggerReflexive
	// TriggerRetry: the last measurement failed.
	TriggerRetry
	// TriggerManual: Remeasure was called.
	TriggerManual
)

func (t Trigger) String() string {
	switch t {
	case TriggerStart:
		return "start"
	case TriggerLocal:
		return "local-address"
	case TriggerReflexive:
		return "reflexive-address"
	case TriggerRetry:
		return "retry"
	case TriggerManual:
		return "manual"
	}
	return "none"
}

// Monitor defaults. The interface poll is a few syscalls, so 5 s costs
// nothing and notices a move well within the 10 s relay keepalive. The
// minimum gap keeps a flapping link from turning into back-to-back
// measurements (one Check sends about ten packets and waits up to 2 s).
const (
	DefaultMonitorInterval = 5 * time.Second
	DefaultMinRecheck      = 10 * time.Second
	DefaultRetryInterval   = 30 * time.Second
	// DefaultConfirm is the hysteresis: two polls in a row must see the
	// same new local addresses, and two distinct peers must report a new
	// reflexive address, before a change counts. One odd report (a peer
	// behind a broken middlebox, a NAT rebinding one flow) does not.
	DefaultConfirm = 2
	// maxCheckTime bounds one measurement, so Close never waits longer.
	maxCheckTime = 30 * time.Second
)

// MonitorConfig configures a Monitor. Check or CheckConfig is required.
type MonitorConfig struct {
	// Net lists the host's interfaces. Zero means the real network (pion
	// stdnet).
	Net transport.Net
	// Interval is how often local addresses and reflexive reports are
	// polled. Zero means DefaultMonitorInterval.
	Interval time.Duration
	// Reflexive returns the latest reflexive-address reports, oldest first
	// (dht.Node.Observed, converted). Nil means react to local address
	// changes only.
	Reflexive func() []ReflexiveReport
	// Check measures the NAT. Nil means Check(ctx, CheckConfig) with
	// CheckConfig.LocalIPs set to the polled local addresses.
	Check func(ctx context.Context) (Report, error)
	// CheckConfig is used when Check is nil.
	CheckConfig CheckConfig
	// OnChange is called after a measurement whose result differs from
	// the previous one (public address, mapping, filtering or class); the
	// first successful report comes with a zero old. It runs on the
	// monitor's goroutine, without locks held; it may call Report or
	// Remeasure but not Close.
	OnChange func(old, new Report)
	// Confirm is the hysteresis (see DefaultConfirm). Zero means 2.
	Confirm int
	// MinRecheck is the least time between two measurements. Zero means
	// DefaultMinRecheck.
	MinRecheck time.Duration
	// RetryInterval is the wait after a failed measurement. Zero means
	// DefaultRetryInterval.
	RetryInterval time.Duration
	// Logger receives the monitor's logs. Zero means discard.
	Logger *slog.Logger
}

func (c MonitorConfig) withDefaults() MonitorConfig {
	if c.Net == nil {
		if n, err := stdnet.NewNet(); err == nil {
			c.Net = n
		}
	}
	if c.Interval == 0 {
		c.Interval = DefaultMonitorInterval
	}
	if c.Confirm == 0 {
		c.Confirm = DefaultConfirm
	}
	if c.MinRecheck == 0 {
		c.MinRecheck = DefaultMinRecheck
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = DefaultRetryInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// MonitorStats counts what a Monitor did, for tests and metrics.
type MonitorStats struct {
	Checks   int            // measurements run
	Failures int            // measurements that returned an error
	Changes  int            // OnChange calls
	ByReason map[string]int // measurements by Trigger name
}

// Monitor keeps a Report current: it measures once at Start, then again
// whenever the local addresses or the reported reflexive addresses change.
type Monitor struct {
	// Immutable after New.
	cfg    MonitorConfig
	log    *slog.Logger
	wake   chan struct{} // Remeasure; buffered, 1
	ctx    context.Context
	cancel context.CancelFunc

	// Guarded by mu.
	mu      sync.Mutex
	started bool
	closed  bool
	report  Report
	have    bool
	stats   MonitorStats

	// Owned by the run goroutine.
	watch changeWatch

	wg sync.WaitGroup
}

// NewMonitor returns a monitor configured by cfg. It starts nothing.
func NewMonitor(cfg MonitorConfig) *Monitor {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Monitor{
		cfg:    cfg,
		log:    cfg.Logger,
		wake:   make(chan struct{}, 1),
		ctx:    ctx,
		cancel: cancel,
		watch:  changeWatch{confirm: cfg.Confirm, minGap: cfg.MinRecheck, retry: cfg.RetryInterval},
		stats:  MonitorStats{ByReason: map[string]int{}},
	}
}

// Start runs the first measurement in the background and starts polling.
func (m *Monitor) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.started {
		return ErrMonitorClosed
	}
	if m.cfg.Net == nil {
		return errors.New("natcheck: monitor: no network available")
	}
	m.started = true
	m.wg.Add(1)
	go m.run()
	return nil
}

// Close stops polling and waits for a running measurement to end (it is
// cancelled). It is idempotent.
func (m *Monitor) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	return nil
}

// Report returns the latest successful report and whether there is one.
func (m *Monitor) Report() (Report, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.report, m.have
}

// Stats returns a snapshot of the monitor's counters.
func (m *Monitor) Stats() MonitorStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	s.ByReason = make(map[string]int, len(m.stats.ByReason))
	for k, v := range m.stats.ByReason {
		s.ByReason[k] = v
	}
	return s
}

// Remeasure asks for a measurement as soon as the minimum gap allows, for
// callers that notice trouble the monitor cannot see (every connection
// dropped at once, a relay refusing us).
func (m *Monitor) Remeasure() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *Monitor) run() {
	defer m.wg.Done()
	tick := time.NewTicker(m.cfg.Interval)
	defer tick.Stop()
	for {
		local := m.localAddrs()
		var refl []ReflexiveReport
		if m.cfg.Reflexive != nil {
			refl = m.cfg.Reflexive()
		}
		if trig := m.watch.observe(time.Now(), local, refl); trig != TriggerNone {
			m.measure(trig, local, refl)
		}
		select {
		case <-m.ctx.Done():
			return
		case <-tick.C:
		case <-m.wake:
			m.watch.requestManual()
		}
	}
}

// measure runs one Check and records the result.
func (m *Monitor) measure(trig Trigger, local []netip.Addr, refl []ReflexiveReport) {
	m.log.Debug("nat re-measure", "stage", trig.String(), "local", local)
	ctx, cancel := context.WithTimeout(m.ctx, maxCheckTime)
	rep, err := m.check(ctx, local)
	cancel()
	if m.ctx.Err() != nil {
		return
	}
	// The reports and addresses current before the Check are the
	// baseline: anything they said, the new report has answered.
	m.watch.measured(time.Now(), local, refl, rep, err)

	m.mu.Lock()
	m.stats.Checks++
	m.stats.ByReason[trig.String()]++
	if err != nil {
		m.stats.Failures++
		m.mu.Unlock()
		m.log.Warn("nat measurement failed", "stage", trig.String(), "err", err)
		return
	}
	old, had := m.report, m.have
	m.report, m.have = rep, true
	changed := !had || Changed(old, rep)
	if changed {
		m.stats.Changes++
	}
	m.mu.Unlock()

	m.log.Info("nat measured", "stage", trig.String(), "nat", rep.Class, "addr", rep.PublicAddr, "changed", changed)
	if changed && m.cfg.OnChange != nil {
		m.cfg.OnChange(old, rep)
	}
}

func (m *Monitor) check(ctx context.Context, local []netip.Addr) (Report, error) {
	if m.cfg.Check != nil {
		return m.cfg.Check(ctx)
	}
	cc := m.cfg.CheckConfig
	cc.LocalIPs = local
	return Check(ctx, cc)
}

// localAddrs polls the host's usable addresses, sorted: IPv4 ones, and
// global IPv6 ones (the node has an IPv6 socket too, see dht.Family; a
// privacy address rotating, about once a day, costs one measurement).
// Loopback, link-local and unique-local addresses never reach a peer
// outside the site.
func (m *Monitor) localAddrs() []netip.Addr {
	ifaces, err := m.cfg.Net.Interfaces()
	if err != nil {
		m.log.Debug("interface poll failed", "err", err)
		return nil
	}
	var out []netip.Addr
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			var ip net.IP
			switch v := a.(type) {
			case *net.IPNet:
				ip = v.IP
			case *net.IPAddr:
				ip = v.IP
			}
			na, ok := netip.AddrFromSlice(ip)
			if !ok {
				continue
			}
			na = na.Unmap()
			if na.Is4() && !na.IsLoopback() && !na.IsLinkLocalUnicast() && !na.IsUnspecified() || globalIPv6(na) {
				out = append(out, na)
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// Changed reports whether new differs from old in a way the node must
// act on (re-announce, reconnect). Under endpoint-dependent mapping every
// measurement sees fresh ports, so only the IP counts.
func Changed(old, new Report) bool {
	if (old.IPv6 == nil) != (new.IPv6 == nil) || old.IPv6 != nil && Changed(*old.IPv6, *new.IPv6) {
		return true
	}
	if old.Mapping != new.Mapping || old.Filtering != new.Filtering || old.Class != new.Class {
		return true
	}
	if new.Mapping == MappingEndpointDependent {
		return old.PublicAddr.Addr() != new.PublicAddr.Addr()
	}
	return old.PublicAddr != new.PublicAddr
}

// changeWatch is the pure decision core: given the polled local addresses
// and reflexive reports and the time, should the NAT be measured again?
// No goroutines, no clocks, no I/O.
//
// Local addresses: a set that differs from the one of the last measurement
// must be seen confirm polls in a row (an interface going down and up, or a
// DHCP renewal in progress, settles before we measure).
//
// Reflexive reports: only the latest report of each peer counts, and only
// if it changed since the last measurement (a peer that has not spoken
// since still holds what it saw before, which the measurement already
// answered). confirm distinct peers must report an address the current
// report does not contain.
type changeWatch struct {
	// Settings, immutable.
	confirm int
	minGap  time.Duration
	retry   time.Duration

	measuredOnce bool
	lastCheck    time.Time
	failed       bool
	report       Report
	haveReport   bool
	baseLocal    []netip.Addr
	baseRefl     map[netip.Addr]netip.AddrPort // latest report per peer at the last measurement

	pendLocal []netip.Addr // a changed local set seen in pendCount polls in a row
	pendCount int
	manualDue bool
}

// observe takes one poll and returns the reason to measure now, or
// TriggerNone.
func (w *changeWatch) observe(now time.Time, local []netip.Addr, refl []ReflexiveReport) Trigger {
	if !w.measuredOnce {
		return TriggerStart
	}
	localChanged := false
	if !slices.Equal(local, w.baseLocal) {
		if slices.Equal(local, w.pendLocal) {
			w.pendCount++
		} else {
			w.pendLocal, w.pendCount = slices.Clone(local), 1
		}
		localChanged = w.pendCount >= w.confirm
	} else {
		w.pendLocal, w.pendCount = nil, 0
	}
	reflChanged := w.haveReport && w.reflexiveDisagree(refl) >= w.confirm

	if now.Sub(w.lastCheck) < w.minGap {
		return TriggerNone
	}
	switch {
	case localChanged:
		return TriggerLocal
	case reflChanged:
		return TriggerReflexive
	case w.manualDue:
		return TriggerManual
	case w.failed && now.Sub(w.lastCheck) >= w.retry:
		return TriggerRetry
	}
	return TriggerNone
}

// requestManual records a Remeasure request: it runs at the first poll
// the minimum gap allows.
func (w *changeWatch) requestManual() { w.manualDue = true }

// reflexiveDisagree counts peers whose latest report is new since the
// last measurement and not an address of the current report.
func (w *changeWatch) reflexiveDisagree(refl []ReflexiveReport) int {
	n := 0
	for by, addr := range latestByPeer(refl) {
		if prev, ok := w.baseRefl[by]; ok && prev == addr {
			continue // nothing new from this peer
		}
		if !w.reportHas(addr) {
			n++
		}
	}
	return n
}

// reportHas reports whether addr is one of the report's public addresses
// (only the IP under endpoint-dependent mapping, whose ports differ per
// peer).
func (w *changeWatch) reportHas(addr netip.AddrPort) bool {
	r := w.report
	if addr.Addr().Is6() && !addr.Addr().Is4In6() && r.IPv6 != nil {
		r = *r.IPv6 // the IPv6 socket's report
	}
	for _, a := range append([]netip.AddrPort{r.PublicAddr}, r.PublicAddrs...) {
		if a == addr || (r.Mapping == MappingEndpointDependent && a.Addr() == addr.Addr()) {
			return true
		}
	}
	return false
}

// measured records a measurement's outcome and its baseline: the local
// addresses and reflexive reports polled before it ran.
func (w *changeWatch) measured(now time.Time, local []netip.Addr, refl []ReflexiveReport, rep Report, err error) {
	w.measuredOnce = true
	w.lastCheck = now
	w.manualDue = false
	w.baseLocal = slices.Clone(local)
	w.pendLocal, w.pendCount = nil, 0
	w.baseRefl = latestByPeer(refl)
	w.failed = err != nil
	if err == nil {
		w.report, w.haveReport = rep, true
	}
}

// latestByPeer keeps each peer's last report (refl is oldest first).
func latestByPeer(refl []ReflexiveReport) map[netip.Addr]netip.AddrPort {
	out := make(map[netip.Addr]netip.AddrPort, len(refl))
	for _, r := range refl {
		if r.By.IsValid() && r.Addr.IsValid() {
			out[r.By] = r.Addr
		}
	}
	return out
}

// globalIPv6 reports a public IPv6 address: one a peer on another site can
// reach (not link-local, loopback or unique-local). holepunch applies the
// same rule to the candidates it offers.
func globalIPv6(ip netip.Addr) bool {
	return ip.Is6() && !ip.Is4In6() && ip.IsGlobalUnicast() && !ip.IsPrivate()
}
