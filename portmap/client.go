package portmap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"
)

// Defaults of Config fields whose zero value means "default".
const (
	// DefaultLifetime is the lifetime asked for: RFC 6886 §3.3 recommends
	// two hours. A crashed node's mappings go away after it; a live one
	// renews at half of it.
	DefaultLifetime = 2 * time.Hour
	// DefaultCheckInterval is the time between checks that the gateway
	// still holds the mappings. A router that reboots loses them, and
	// renewals alone would notice only at half the lifetime; a check is
	// one small request (PCP ANNOUNCE, NAT-PMP external address) or two
	// SOAP calls (UPnP).
	DefaultCheckInterval = 2 * time.Minute
	// DefaultRetryInterval is the first wait after a failed attempt; it
	// doubles up to maxRetryInterval. A gateway with no port mapping at
	// all is asked again at that pace, at a cost of three datagrams.
	DefaultRetryInterval = 10 * time.Second
	// DefaultDescription names our mappings in the router's UPnP table.
	DefaultDescription = "swarmdb"
)

// maxRetryInterval caps the backoff between attempts.
const maxRetryInterval = 30 * time.Minute

// closeTimeout bounds the deletion of the mappings in Close.
const closeTimeout = 3 * time.Second

// Config configures a Client. At least one of UDPPort and TCPPort is
// required; the zero value of every other field works.
type Config struct {
	// Net opens the sockets of PCP, SSDP and UPnP's HTTP. Zero means the
	// system network. NAT-PMP runs only on the system network:
	// jackpal/go-nat-pmp opens its own sockets.
	Net transport.Net
	// Gateway returns the default gateway to ask. Zero means
	// DefaultGateway on the system network; on any other network port
	// mapping then fails with ErrNoGateway, because the system's routes
	// say nothing about that network.
	Gateway func() (netip.Addr, error)
	// LocalIP is the address the mappings point to. Zero (or unspecified)
	// means the address this host uses toward the gateway.
	LocalIP netip.Addr
	// UDPPort and TCPPort are the local ports to map; zero means none.
	UDPPort, TCPPort uint16
	// Lifetime is the mapping lifetime asked for; the gateway may grant
	// less or more (miniupnpd's PCP grants at least 120 s). Zero means
	// DefaultLifetime.
	Lifetime time.Duration
	// CheckInterval is the time between checks. Zero means
	// DefaultCheckInterval; negative means no checks (renewals only).
	CheckInterval time.Duration
	// RetryInterval is the first wait after a failure. Zero means
	// DefaultRetryInterval.
	RetryInterval time.Duration
	// Protocols lists the protocols to try, in order of preference, from
	// PCP, NATPMP and UPnP. Zero means all three in that order.
	Protocols []Protocol
	// Description names the mappings on the router (UPnP shows it). Zero
	// means DefaultDescription.
	Description string
	// OnChange receives the status whenever the mappings appear, change or
	// go, and after the first attempt. It runs on the client's goroutine:
	// do not block and do not call Close from it.
	OnChange func(Status)
	// Logger receives logs. Zero means discard.
	Logger *slog.Logger

	// Test hooks (package tests only): the servers' ports on the gateway
	// and the clock. Zero means the protocols' ports and time.Now.
	pcpPort, ssdpPort uint16
	now               func() time.Time
}

func (c Config) withDefaults() (Config, error) {
	if c.UDPPort == 0 && c.TCPPort == 0 {
		return c, fmt.Errorf("%w: no port to map", ErrConfig)
	}
	for _, p := range c.Protocols {
		if p != PCP && p != NATPMP && p != UPnP {
			return c, fmt.Errorf("%w: unknown protocol %q", ErrConfig, p)
		}
	}
	if c.Net == nil {
		n, err := stdnet.NewNet()
		if err != nil {
			return c, fmt.Errorf("portmap: network: %w", err)
		}
		c.Net = n
	}
	if c.Lifetime <= 0 {
		c.Lifetime = DefaultLifetime
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = DefaultRetryInterval
	}
	if len(c.Protocols) == 0 {
		c.Protocols = []Protocol{PCP, NATPMP, UPnP}
	}
	if c.Description == "" {
		c.Description = DefaultDescription
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.pcpPort == 0 {
		c.pcpPort = PCPPort
	}
	if c.ssdpPort == 0 {
		c.ssdpPort = ssdpPort
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// State is where the client stands.
type State string

// States.
const (
	// StateProbing: the first attempt has not finished.
	StateProbing State = "probing"
	// StateMapped: the gateway granted the mappings (UDP at least, when
	// asked for).
	StateMapped State = "mapped"
	// StateUnavailable: no protocol worked (yet); the client keeps trying
	// with a backoff.
	StateUnavailable State = "unavailable"
)

// Status is a snapshot of the client.
type Status struct {
	State    State
	Protocol Protocol   // the protocol of the mappings, or of the last attempt's session
	Gateway  netip.Addr // the gateway asked last
	UDP, TCP *Mapping   // the mappings held; nil when none
	// Err is why the last attempt failed (nil after a success).
	Err error
	// Counters since Start.
	Maps, Renewals, Checks, Losses uint64
}

// MarshalJSON writes the status for status pages and events.
func (s Status) MarshalJSON() ([]byte, error) {
	out := struct {
		State    State    `json:"state"`
		Protocol Protocol `json:"protocol,omitempty"`
		Gateway  string   `json:"gateway,omitempty"`
		UDP      *Mapping `json:"udp,omitempty"`
		TCP      *Mapping `json:"tcp,omitempty"`
		Error    string   `json:"error,omitempty"`
		Renewals uint64   `json:"renewals"`
		Losses   uint64   `json:"losses"`
	}{State: s.State, Protocol: s.Protocol, UDP: s.UDP, TCP: s.TCP, Renewals: s.Renewals, Losses: s.Losses}
	if s.Gateway.IsValid() {
		out.Gateway = s.Gateway.String()
	}
	if s.Err != nil {
		out.Error = s.Err.Error()
	}
	return json.Marshal(out)
}

// Client keeps port mappings for one host's ports on its default gateway:
// it finds a protocol the gateway speaks (PCP, then NAT-PMP, with UPnP's
// discovery running meanwhile and used when neither answers), renews the
// mappings at half their lifetime, checks that the gateway still holds
// them (a PCP or NAT-PMP epoch that went backwards, a UPnP entry that is
// gone) and makes them again when it does not, and deletes them on Close.
type Client struct {
	// Immutable after New.
	cfg    Config
	timing timing
	log    *slog.Logger

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ready  chan struct{} // closed after the first attempt

	// Owned by the loop goroutine (and by Close after it ended).
	sched  schedule
	mapper mapper

	// Guarded by mu.
	mu        sync.Mutex
	status    Status
	started   bool
	closed    bool
	readyOnce bool
}

// New checks cfg and returns a client; Start starts it.
func New(cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	check := cfg.CheckInterval
	if check < 0 {
		check = 0
	}
	return &Client{
		cfg:    cfg,
		timing: timing{check: check, retryMin: cfg.RetryInterval, retryMax: max(cfg.RetryInterval, maxRetryInterval)},
		log:    cfg.Logger,
		ctx:    ctx,
		cancel: cancel,
		ready:  make(chan struct{}),
		status: Status{State: StateProbing},
	}, nil
}

// Start starts asking for the mappings in the background.
func (c *Client) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.started {
		return nil
	}
	c.started = true
	c.wg.Add(1)
	go c.run()
	return nil
}

// Ready is closed once the first attempt has finished, whatever its
// outcome (see Status).
func (c *Client) Ready() <-chan struct{} { return c.ready }

// Status returns a snapshot.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Mapping returns the mapping held for t, if any.
func (c *Client) Mapping(t Transport) (Mapping, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.status.UDP
	if t == TCP {
		m = c.status.TCP
	}
	if m == nil {
		return Mapping{}, false
	}
	return *m, true
}

// Close stops the client and deletes its mappings from the gateway (within
// a few seconds; a gateway that does not answer keeps them until they
// expire). It is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.markReady()
	st := c.Status()
	if c.mapper == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	var errs []error
	for _, m := range []*Mapping{st.UDP, st.TCP} {
		if m == nil {
			continue
		}
		if err := c.mapper.remove(ctx, *m); err != nil {
			errs = append(errs, fmt.Errorf("delete %s %s: %w", m.Transport, m.External, err))
			continue
		}
		c.log.Info("port mapping deleted", "protocol", m.Protocol, "transport", m.Transport, "external", m.External)
	}
	c.mu.Lock()
	c.status.UDP, c.status.TCP = nil, nil
	c.mu.Unlock()
	if len(errs) > 0 {
		c.log.Info("port mapping not deleted; it expires on its own", "err", errors.Join(errs...))
	}
	return nil
}

// run is the client's loop: wait for the schedule's next step, do it.
func (c *Client) run() {
	defer c.wg.Done()
	for {
		st, at := c.sched.next(c.timing)
		if d := at.Sub(c.cfg.now()); !at.IsZero() && d > 0 {
			t := time.NewTimer(d)
			select {
			case <-c.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if c.ctx.Err() != nil {
			return
		}
		c.do(st)
		c.markReady()
	}
}

// do carries out one step of the schedule.
func (c *Client) do(st step) {
	now := c.cfg.now()
	switch st {
	case stepMap, stepRenew:
		ms, err := c.mapAll(c.ctx)
		if c.ctx.Err() != nil {
			return
		}
		if err != nil {
			c.sched.failedAt(now)
			c.log.Debug("port mapping failed", "step", st, "err", err)
			c.update(func(s *Status) {
				s.Err = err
				if st == stepMap {
					s.State = StateUnavailable
				}
			})
			return
		}
		c.sched.mappedAt(now, lifetimeOf(ms))
		c.publish(ms, st == stepRenew)
	case stepCheck:
		if c.mapper == nil {
			// The last check or renewal failed to reach the session's
			// server: look for the gateway's protocol again.
			c.do(stepRenew)
			return
		}
		err := c.mapper.check(c.ctx, c.held())
		if c.ctx.Err() != nil {
			return
		}
		c.update(func(s *Status) { s.Checks++ })
		switch {
		case err == nil:
			c.sched.checkedAt(now)
		case errors.Is(err, ErrServerRestarted), errors.Is(err, ErrLost):
			c.log.Info("port mappings lost; mapping again", "err", err)
			c.sched.lost()
			c.update(func(s *Status) {
				s.UDP, s.TCP, s.Err, s.State = nil, nil, err, StateUnavailable
				s.Losses++
			})
			c.notify()
		default:
			// The gateway did not answer as it used to: keep the mappings
			// until they expire, and find its protocol again soon.
			c.log.Debug("port mapping check failed", "err", err)
			c.sched.checkedAt(now)
			c.sched.failedAt(now)
			c.mapper = nil
			c.update(func(s *Status) { s.Err = err })
		}
	case stepExpire:
		c.log.Info("port mappings expired without renewal")
		c.sched.expired()
		c.update(func(s *Status) {
			s.UDP, s.TCP, s.State = nil, nil, StateUnavailable
			s.Losses++
		})
		c.notify()
	}
}

// requests lists the mappings the client wants.
func (c *Client) requests(local netip.Addr) []request {
	var out []request
	if c.cfg.UDPPort != 0 {
		out = append(out, request{transport: UDP, internal: netip.AddrPortFrom(local, c.cfg.UDPPort), lifetime: c.cfg.Lifetime, desc: c.cfg.Description})
	}
	if c.cfg.TCPPort != 0 {
		out = append(out, request{transport: TCP, internal: netip.AddrPortFrom(local, c.cfg.TCPPort), lifetime: c.cfg.Lifetime, desc: c.cfg.Description})
	}
	return out
}

// held returns the mappings held now.
func (c *Client) held() []Mapping {
	st := c.Status()
	var out []Mapping
	for _, m := range []*Mapping{st.UDP, st.TCP} {
		if m != nil {
			out = append(out, *m)
		}
	}
	return out
}

// mapAll makes (or renews) every wanted mapping: through the current
// session when there is one, otherwise by finding a protocol the gateway
// speaks.
func (c *Client) mapAll(ctx context.Context) ([]Mapping, error) {
	if c.mapper != nil {
		ms, err := c.addAll(ctx, c.mapper)
		if err == nil {
			return ms, nil
		}
		c.log.Debug("port mapping session failed; looking for the gateway's protocol again", "protocol", c.mapper.protocol(), "err", err)
		c.mapper = nil
	}
	return c.probe(ctx)
}

// probe finds the gateway and a protocol it speaks, and makes the
// mappings with it. PCP goes first, then NAT-PMP (a NAT-PMP-only server
// says so to a PCP request, and one that ignored PCP may still answer);
// UPnP's discovery (SSDP, then the description over HTTP) runs meanwhile,
// so that a gateway with UPnP alone costs no more than the slower of the
// two, but UPnP maps only when neither answered, so no gateway ever gets
// two mappings for one port.
func (c *Client) probe(ctx context.Context) ([]Mapping, error) {
	gw, err := c.gateway()
	if err != nil {
		return nil, err
	}
	local, err := c.localIP(gw)
	if err != nil {
		return nil, err
	}
	c.update(func(s *Status) { s.Gateway = gw })
	ctx, cancel := context.WithCancel(ctx)
	// Cancelled when probe returns; the discovery then ends on its own
	// (Close waits for it), so a PCP answer is not held up by it.
	defer cancel()
	type found struct {
		m   *upnpMapper
		err error
	}
	var upnp chan found
	if slices.Contains(c.cfg.Protocols, UPnP) {
		upnp = make(chan found, 1)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			m, err := discoverUPnP(ctx, c.cfg.Net, gw, local, c.cfg.ssdpPort, c.cfg.now)
			upnp <- found{m, err}
		}()
	}
	var errs []error
	var pcpErr error
	for _, p := range c.cfg.Protocols {
		var m mapper
		switch p {
		case PCP:
			m = newPCPMapper(c.cfg.Net, netip.AddrPortFrom(gw, c.cfg.pcpPort), local, c.cfg.now)
		case NATPMP:
			switch {
			case !systemNet(c.cfg.Net):
				errs = append(errs, errors.New("NAT-PMP: only on the system network"))
				continue
			case errors.Is(pcpErr, ErrUnreachable), errors.Is(pcpErr, ErrRefused):
				// The port is closed, or a PCP server refused: NAT-PMP on
				// the same port would fare no better.
				continue
			}
			m = newNATPMPMapper(gw, local, c.cfg.now)
		case UPnP:
			f := <-upnp
			upnp = nil
			if f.err != nil {
				errs = append(errs, f.err)
				continue
			}
			m = f.m
		}
		ms, err := c.addAll(ctx, m)
		if err == nil {
			c.mapper = m
			return ms, nil
		}
		if p == PCP {
			pcpErr = err
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("%w at %s: %w", ErrNoService, gw, errors.Join(errs...))
}

// addAll asks m for every wanted mapping, renewing the ones held through
// the same protocol. It succeeds when the first wanted mapping (UDP, when
// asked for) does; a TCP mapping the gateway refuses is logged and tried
// again at the next renewal.
func (c *Client) addAll(ctx context.Context, m mapper) ([]Mapping, error) {
	st := c.Status()
	var out []Mapping
	for i, req := range c.requests(sessionLocal(m)) {
		var prev *Mapping
		if held := heldFor(st, req.transport); held != nil && held.Protocol == m.protocol() {
			prev = held
		}
		got, err := m.add(ctx, req, prev)
		if err != nil {
			if i == 0 {
				return nil, err
			}
			c.log.Info("port mapping refused", "transport", req.transport, "protocol", m.protocol(), "err", err)
			continue
		}
		out = append(out, got)
	}
	return out, nil
}

// sessionLocal is the local address a session's mappings point to.
func sessionLocal(m mapper) netip.Addr {
	switch s := m.(type) {
	case *pcpMapper:
		return s.client
	case *natpmpMapper:
		return s.local
	case *upnpMapper:
		return s.local
	}
	return netip.Addr{}
}

func heldFor(st Status, t Transport) *Mapping {
	if t == TCP {
		return st.TCP
	}
	return st.UDP
}

// publish records new mappings and reports a change.
func (c *Client) publish(ms []Mapping, renewal bool) {
	var udp, tcp *Mapping
	for i := range ms {
		if ms[i].Transport == TCP {
			tcp = &ms[i]
		} else {
			udp = &ms[i]
		}
	}
	var changed bool
	c.update(func(s *Status) {
		changed = s.State != StateMapped || !sameExternal(s.UDP, udp) || !sameExternal(s.TCP, tcp)
		s.State, s.UDP, s.TCP, s.Err = StateMapped, udp, tcp, nil
		s.Protocol = ms[0].Protocol
		if renewal && !changed {
			s.Renewals++
		} else {
			s.Maps++
		}
	})
	if changed {
		for _, m := range ms {
			c.log.Info("port mapped", "protocol", m.Protocol, "transport", m.Transport, "external", m.External,
				"internal", m.Internal, "lifetime", m.Lifetime)
		}
		c.notify()
	} else {
		c.log.Debug("port mappings renewed", "protocol", ms[0].Protocol, "lifetime", ms[0].Lifetime)
	}
}

func sameExternal(a, b *Mapping) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.External == b.External && a.Protocol == b.Protocol
}

// lifetimeOf is the shortest finite lifetime of ms (zero when all are
// permanent): the schedule renews them together.
func lifetimeOf(ms []Mapping) time.Duration {
	var d time.Duration
	for _, m := range ms {
		if m.Lifetime > 0 && (d == 0 || m.Lifetime < d) {
			d = m.Lifetime
		}
	}
	return d
}

func (c *Client) update(f func(*Status)) {
	c.mu.Lock()
	f(&c.status)
	c.mu.Unlock()
}

// markReady closes Ready after the first attempt, and reports the first
// outcome when it was a failure (a success was reported by publish).
func (c *Client) markReady() {
	c.mu.Lock()
	if c.readyOnce {
		c.mu.Unlock()
		return
	}
	c.readyOnce = true
	if c.status.State == StateProbing {
		c.status.State = StateUnavailable
	}
	failed := c.status.State != StateMapped
	c.mu.Unlock()
	close(c.ready)
	if failed && c.ctx.Err() == nil {
		c.notify()
	}
}

func (c *Client) notify() {
	if c.cfg.OnChange != nil {
		c.cfg.OnChange(c.Status())
	}
}

// gateway returns the gateway to ask.
func (c *Client) gateway() (netip.Addr, error) {
	if c.cfg.Gateway != nil {
		gw, err := c.cfg.Gateway()
		if err != nil {
			return netip.Addr{}, fmt.Errorf("%w: %w", ErrNoGateway, err)
		}
		if !gw.Is4() {
			return netip.Addr{}, fmt.Errorf("%w: %s is not an IPv4 address", ErrNoGateway, gw)
		}
		return gw, nil
	}
	if !systemNet(c.cfg.Net) {
		return netip.Addr{}, fmt.Errorf("%w: Config.Gateway is required on a network other than the system's", ErrNoGateway)
	}
	return DefaultGateway()
}

// localIP is the address our mappings point to: LocalIP, or the source
// address this host picks toward gw (a connected UDP socket sends nothing).
func (c *Client) localIP(gw netip.Addr) (netip.Addr, error) {
	if ip := c.cfg.LocalIP; ip.IsValid() && !ip.IsUnspecified() {
		return ip.Unmap(), nil
	}
	conn, err := c.cfg.Net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(gw, c.cfg.pcpPort)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("portmap: route to %s: %w", gw, err)
	}
	defer conn.Close()
	ua, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return netip.Addr{}, fmt.Errorf("portmap: route to %s: local address %v", gw, conn.LocalAddr())
	}
	return ua.AddrPort().Addr().Unmap(), nil
}
