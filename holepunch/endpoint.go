package holepunch

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/logging"
	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"

	"github.com/swarmdb/swarmdb/internal/demux"
	"github.com/swarmdb/swarmdb/internal/pionlog"
	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/secure"
)

// Endpoint defaults. Each is an EndpointConfig field's zero value.
const (
	// DefaultMaxHandshakes bounds incoming handshakes in progress (ICE
	// running, session not yet open). Each holds an ICE agent.
	DefaultMaxHandshakes = 64
	// DefaultMaxHandshakesPerIP bounds them per source IP, so one host
	// cannot take every slot.
	DefaultMaxHandshakesPerIP = 8
	// DefaultConnectTimeout bounds one dial attempt from message 1 to the
	// open session: ICE gives up on pairs after 5 s (iceMaxBindingRequests),
	// birthday punching after about 10 s.
	DefaultConnectTimeout = 12 * time.Second
)

// Timing constants of the handshake.
const (
	// natWait bounds how long a dial or Listen waits for a NAT
	// measurement. Without it the dial still works but cannot plan
	// birthday punching or go straight to a relay.
	natWait = 3 * time.Second
	// answerTTL: a retransmitted message 1 (the DHT retries requests) gets
	// the same answer for this long instead of a second ICE session.
	answerTTL = 30 * time.Second
	// replayHorizon: message 1 older than this is refused, and the newest
	// timestamp seen from a key is remembered this long, so no message 1 can
	// be replayed (WireGuard's rule, with a bounded memory).
	replayHorizon = 10 * time.Minute
	// stampPrecision: message 1 carries its timestamp in milliseconds
	// (secure.Responder.Timestamp), so one written up to this long after
	// an instant may read as before it.
	stampPrecision = time.Millisecond
)

// prologue binds every handshake to this protocol's use of Noise.
var prologue = []byte("swarmdb/holepunch/1")

// EndpointConfig configures an Endpoint. Key and Link are required.
type EndpointConfig struct {
	// Key is the node's identity. Required.
	Key ed25519.PrivateKey
	// Link is the DHT node the endpoint signals and sends through. Required.
	Link Link
	// Net opens every socket and lists interfaces (ICE, TURN, birthday
	// sockets). Zero means the real network.
	Net transport.Net
	// Firewall, when set, sees the key of every peer that dials us, and the
	// hello it dialled with (DialOptions.Hello; nil for none), before any
	// ICE work starts; an error refuses it (the peer gets ErrRefused).
	Firewall func(remote ed25519.PublicKey, hello []byte) error
	// OnConnection receives incoming connections. Nil refuses every peer.
	// It runs on its own goroutine and owns the Conn.
	OnConnection func(*Conn)
	// MeasureNAT measures the node's NAT; the endpoint calls it at Start and
	// on Remeasure. Nil means unknown (no birthday punching, no early
	// relay; a failed direct dial still falls back to the relay).
	MeasureNAT MeasureNATFunc
	// Session configures the secure sessions. The zero value works.
	Session secure.Config
	// ConnectTimeout bounds one dial attempt. Zero means
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// MaxHandshakes and MaxHandshakesPerIP bound incoming handshakes in
	// progress. Zero means the defaults above.
	MaxHandshakes      int
	MaxHandshakesPerIP int
	// KeepLoopback keeps loopback candidates; set it when nodes live on
	// 127.0.0.0/8 (tests, the demo). Zero means drop them.
	KeepLoopback bool
	// KeepFreedMemory stops the endpoint from having the process return
	// freed memory to the OS after connection setups (internal/memrelease:
	// a full GC and debug.FreeOSMemory 2 s after the last setup, at most
	// every 10 s). Set it in a program that manages its own memory
	// (GOMEMLIMIT, its own GC policy) or whose heap is large enough that a
	// forced GC costs more than the pages are worth. Zero means release.
	KeepFreedMemory bool
	// Mapped returns the public address a router's port mapping (PCP,
	// NAT-PMP, UPnP-IGD) forwards to the node's socket, or the zero value.
	// It is sent as one more server-reflexive candidate, and while there is
	// one the signaling says our filtering is endpoint-independent: anyone
	// may send to that address, so two endpoint-dependent NATs need no
	// relay when either has a mapping. Nil means no port mapping.
	Mapped func() netip.AddrPort
	// Logger receives logs. Zero means discard.
	Logger *slog.Logger
}

func (c EndpointConfig) withDefaults() EndpointConfig {
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.MaxHandshakes == 0 {
		c.MaxHandshakes = DefaultMaxHandshakes
	}
	if c.MaxHandshakesPerIP == 0 {
		c.MaxHandshakesPerIP = DefaultMaxHandshakesPerIP
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// EndpointStats counts what the endpoint did.
type EndpointStats struct {
	Dials, DialFailures   uint64
	Accepted, Refused     uint64
	BadHandshakes         uint64 // message 1 that failed to parse or authenticate
	Replays               uint64 // message 1 older than one already seen
	Busy                  uint64 // refused at the handshake limits
	ByPath                map[Path]uint64
	Live                  int            // open connections
	MuxDropped            uint64         // datagrams lost between the node and ICE
	Routed                uint64         // session datagrams handed straight to a path (birthday, ICE pair), not through pion
	EarlyPaths            uint64         // dials whose session started on the first answered ICE check (ice_early.go)
	AgentsRetired         uint64         // ICE agents closed agentLinger after their routed session settled (ice_direct.go)
	NAT                   natcheck.Class // last measured class
	HandshakesInProgress  int
	RetransmittedAnswered uint64
}

// Endpoint connects to peers by public key and accepts their connections.
// See the package documentation for the protocol.
type Endpoint struct {
	// Immutable after NewEndpoint (mux: set by Start, before any handler
	// runs).
	cfg  EndpointConfig
	pub  ed25519.PublicKey
	log  *slog.Logger
	mux  *muxes // the ICE mux of each of the node's sockets
	pion logging.LoggerFactory

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// Mutable state, one lock per concern (endpoint_state.go). Each lock
	// is a leaf: no code holds two at once, so there is no lock order, and
	// none is held while application code runs or a connection closes.
	admit    *admission        // which message 1 we answer (admission.go)
	pending  pendingHandshakes // handshakes in progress by remote key
	conns    connTable         // live connections by remote key; closed
	paths    punchedPaths      // routed paths the packet demux feeds (birthday, ICE)
	checks   checkWatches      // dials waiting for their first answered check
	counters counters          // atomic

	listened      atomic.Bool // Listen registered our key at relays
	reregistering atomic.Bool // a reregister runs

	// NAT measurement, guarded by natMu.
	natMu     sync.Mutex
	nat       natcheck.Report
	measuring int           // NAT measurements in flight (the first counts from New)
	natIdle   chan struct{} // closed while measuring is zero
	natMapped chan struct{} // closed once the mapping is known: an early report, or natIdle
	isMapped  bool          // natMapped is closed
}

// MeasureNATFunc measures the node's NAT (dhtlink.Link.MeasureNAT). A
// measurement that knows the mapping before its filtering probes end (they
// wait 3 RTT + 100 ms) hands that report to early, if set: dials and Listen
// go on with it (see waitNAT).
type MeasureNATFunc func(ctx context.Context, early func(natcheck.Report)) (natcheck.Report, error)

// NewEndpoint returns an endpoint; Start makes it run.
func NewEndpoint(cfg EndpointConfig) (*Endpoint, error) {
	cfg = cfg.withDefaults()
	if len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: key of %d bytes", ErrConfig, len(cfg.Key))
	}
	if cfg.Link == nil {
		return nil, fmt.Errorf("%w: no link", ErrConfig)
	}
	if cfg.Net == nil {
		n, err := stdnet.NewNet()
		if err != nil {
			return nil, fmt.Errorf("holepunch: network: %w", err)
		}
		cfg.Net = n
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Endpoint{
		cfg:       cfg,
		pub:       cfg.Key.Public().(ed25519.PublicKey),
		log:       cfg.Logger,
		pion:      pionlog.Factory(cfg.Logger),
		admit:     newAdmission(cfg.MaxHandshakes, cfg.MaxHandshakesPerIP),
		ctx:       ctx,
		cancel:    cancel,
		pending:   newPendingHandshakes(),
		conns:     newConnTable(),
		paths:     newPunchedPaths(),
		measuring: 1, // the first measurement, which Start runs
		natIdle:   make(chan struct{}),
		natMapped: make(chan struct{}),
	}
	return e, nil
}

// Start installs the endpoint's handlers on the link and measures the NAT
// in the background.
func (e *Endpoint) Start() error {
	e.mux = newMuxes(e.cfg.Link, e.cfg.Net, e.pion.NewLogger("icemux"))
	e.setHandlers(true)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.measureNAT()
	}()
	return nil
}

// Close closes every connection and stops the endpoint. The DHT node and
// its socket stay open; they belong to the caller.
func (e *Endpoint) Close() error {
	conns, first := e.conns.close()
	if !first {
		return nil
	}
	// Close the sessions first, in parallel, while their packets still
	// reach us: a graceful close waits for the peer to acknowledge, and
	// without the handlers it would wait out its timeout (3 s).
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Close()
		}()
	}
	wg.Wait()
	e.setHandlers(false)
	e.cancel()
	e.wg.Wait()
	if e.mux != nil {
		_ = e.mux.all.Close() // closes only our muxSockets, never the DHT sockets
	}
	return nil
}

// PublicKey is the endpoint's identity.
func (e *Endpoint) PublicKey() ed25519.PublicKey { return e.pub }

// NAT returns the last NAT measurement (zero before the first finished).
func (e *Endpoint) NAT() natcheck.Report {
	e.natMu.Lock()
	defer e.natMu.Unlock()
	return e.nat
}

// Remeasure measures the NAT again, for instance after the local address
// changed or the DHT was first joined. It blocks until done; dials and
// Listen started meanwhile wait for its mapping (at most natWait), so that
// they use the new measurement.
func (e *Endpoint) Remeasure(ctx context.Context) (natcheck.Report, error) {
	e.beginMeasure()
	defer e.endMeasure()
	return e.remeasure(ctx)
}

func (e *Endpoint) remeasure(ctx context.Context) (natcheck.Report, error) {
	if e.cfg.MeasureNAT == nil {
		return natcheck.Report{}, nil
	}
	r, err := e.cfg.MeasureNAT(ctx, e.earlyNAT)
	if err != nil {
		return r, err
	}
	e.natMu.Lock()
	e.nat = r
	e.natMu.Unlock()
	return r, nil
}

// earlyNAT takes a measurement's early report (mapping known, filtering
// not yet): dials and Listen waiting in waitNAT go on with it.
func (e *Endpoint) earlyNAT(r natcheck.Report) {
	e.natMu.Lock()
	defer e.natMu.Unlock()
	e.nat = r
	e.markMappedLocked()
}

func (e *Endpoint) markMappedLocked() {
	if !e.isMapped {
		e.isMapped = true
		close(e.natMapped)
	}
}

// beginMeasure and endMeasure count measurements in flight; natIdle is
// closed while there are none.
func (e *Endpoint) beginMeasure() {
	e.natMu.Lock()
	defer e.natMu.Unlock()
	if e.measuring == 0 {
		e.natIdle = make(chan struct{})
		e.natMapped, e.isMapped = make(chan struct{}), false
	}
	e.measuring++
}

func (e *Endpoint) endMeasure() {
	e.natMu.Lock()
	defer e.natMu.Unlock()
	e.measuring--
	if e.measuring == 0 {
		close(e.natIdle)
		e.markMappedLocked()
	}
}

// measureNAT is the first measurement, counted as in flight since New.
func (e *Endpoint) measureNAT() {
	defer e.endMeasure()
	if e.cfg.MeasureNAT == nil {
		return
	}
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	r, err := e.remeasure(ctx)
	if err != nil {
		e.log.Info("nat measurement failed", "err", err)
		return
	}
	e.log.Debug("nat measured", "nat", r.Class, "public", r.PublicAddr)
}

// waitNAT waits, at most natWait, until the NAT's mapping is known
// (WaitMapping). A dial or Listen needs no more: the filtering probes'
// wait, 3 RTT + 100 ms, would only delay them. A dial made before the
// filtering is known states it unknown, which birthdayRole takes for the
// stricter port-restricted kind, so a pair that needs birthday punching
// still gets it; an easy side that turns out less strict pays with
// birthday probes where ICE alone would have done.
func (e *Endpoint) waitNAT(ctx context.Context) natcheck.Report {
	ctx, cancel := context.WithTimeout(ctx, natWait)
	defer cancel()
	return e.WaitMapping(ctx)
}

// WaitMapping waits until the NAT's mapping is known, the filtering
// perhaps not yet: the measurement in flight reported it early (see
// EndpointConfig.MeasureNAT) or none is in flight. It returns the current
// measurement, or returns when ctx ends.
func (e *Endpoint) WaitMapping(ctx context.Context) natcheck.Report {
	return e.waitClosed(ctx, &e.natMapped)
}

// WaitNAT waits until no NAT measurement is in flight (the first one, which
// Start runs, or a Remeasure) or ctx ends, and returns the current
// measurement.
func (e *Endpoint) WaitNAT(ctx context.Context) natcheck.Report {
	return e.waitClosed(ctx, &e.natIdle)
}

// waitClosed waits until the channel in *ch (natIdle or natMapped, read
// under natMu) is closed or ctx ends, and returns the current measurement.
func (e *Endpoint) waitClosed(ctx context.Context, ch *chan struct{}) natcheck.Report {
	e.natMu.Lock()
	c := *ch
	e.natMu.Unlock()
	select {
	case <-c:
	case <-ctx.Done():
	}
	return e.NAT()
}

// Listen makes the endpoint reachable by its public key: DHT nodes close
// to the key become its relays and forward signaling to it. The DHT node
// keeps the relays' pinholes open and replaces relays that stop answering.
// Incoming connections go to OnConnection.
func (e *Endpoint) Listen(ctx context.Context) ([]netip.AddrPort, error) {
	e.waitNAT(ctx)
	relays, err := e.cfg.Link.Register(ctx, e.cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("holepunch: listen: %w", err)
	}
	e.listened.Store(true)
	return relays, nil
}

// reregisterTimeout bounds the registration reregister starts.
const reregisterTimeout = 10 * time.Second

// reregister registers our key at its relays again, in the background, when
// a peer answers our dial with CodeSimultaneous but its own message 1 has
// not reached us: its signaling goes through our relays, which may forward
// to an address our NAT no longer maps (a router that lost its conntrack
// gave us a new port). Registering from the current mapping updates them,
// and a relay's second forward attempt uses the new address. Without it
// the peer's dial, which won the tie-break, stalled for two relay timeouts
// while ours had given way (TestConntrackFlushNATLab, symmetric writer).
func (e *Endpoint) reregister(remote ed25519.PublicKey) {
	if !e.listened.Load() || e.pending.incomingFrom(string(remote)) != nil || !e.reregistering.CompareAndSwap(false, true) {
		return
	}
	e.spawn(func() {
		defer e.reregistering.Store(false)
		ctx, cancel := context.WithTimeout(e.ctx, reregisterTimeout)
		defer cancel()
		if _, err := e.cfg.Link.Register(ctx, e.cfg.Key); err != nil {
			e.log.Debug("registering again failed", "err", err)
		}
	})
}

// Stats returns a snapshot of the counters.
func (e *Endpoint) Stats() EndpointStats {
	s := EndpointStats{
		Dials:         e.counters.dials.Load(),
		DialFailures:  e.counters.dialFailures.Load(),
		Accepted:      e.counters.accepted.Load(),
		Refused:       e.counters.refused.Load(),
		BadHandshakes: e.counters.badHandshakes.Load(),
		Routed:        e.counters.routed.Load(),
		EarlyPaths:    e.counters.earlyPaths.Load(),
		AgentsRetired: e.counters.agentsRetired.Load(),
		NAT:           e.NAT().Class,
	}
	s.Live, s.ByPath = e.conns.stats()
	a := e.admit.stats()
	s.HandshakesInProgress = a.inProgress
	s.Busy, s.Replays, s.RetransmittedAnswered = a.busy, a.replays, a.retransmitted
	if e.mux != nil {
		s.MuxDropped = e.mux.dropped()
	}
	return s
}

// Connect opens an encrypted connection to the peer whose public key is
// remote. relays are where the peer's signaling goes (from a topic record);
// nil means look them up by key. A direct attempt (LAN, reflexive, birthday)
// that fails falls back to a TURN relay when a public node offers one.
//
// The endpoint keeps at most one connection per remote key (two ICE
// sessions toward one address cannot coexist), and it is the only layer
// that decides which (package swarm takes each new connection as the one
// that counts): dialling a key, or being dialled by it, closes the
// connection to it that exists, and when two dials meet the larger key's
// goes on (glare, see verdict).
func (e *Endpoint) Connect(ctx context.Context, remote ed25519.PublicKey, relays []netip.AddrPort) (*Conn, error) {
	return e.ConnectWith(ctx, remote, relays, DialOptions{})
}

// DialOptions are the optional parts of a dial.
type DialOptions struct {
	// Hello travels to the server's firewall inside the encrypted message 1
	// (at most MaxHello bytes; nil for none): the application's word on why
	// it dials, read before the server spends anything on ICE.
	Hello []byte
}

// ConnectWith is Connect with options.
func (e *Endpoint) ConnectWith(ctx context.Context, remote ed25519.PublicKey, relays []netip.AddrPort, opts DialOptions) (*Conn, error) {
	start := time.Now()
	if len(opts.Hello) > MaxHello {
		return nil, fmt.Errorf("%w: hello of %d bytes (at most %d)", ErrConfig, len(opts.Hello), MaxHello)
	}
	if err := secure.CheckPublicKey(remote); err != nil {
		return nil, fmt.Errorf("holepunch: connect: %w", err)
	}
	if bytes.Equal(remote, e.pub) {
		return nil, fmt.Errorf("%w: cannot dial our own key", ErrConfig)
	}
	key := string(remote)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if in := e.pending.incomingFrom(key); in != nil && !dialWins(e.pub, remote) {
		// The peer is dialling us already and its outgoing dial wins the
		// tie-break (glare): let it finish. If it made a connection, that
		// is the one; if it failed, dial after all.
		select {
		case <-in.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("holepunch: connect %x: %w", remote[:4], context.Cause(ctx))
		}
		if e.conns.has(key) {
			return nil, fmt.Errorf("holepunch: connect %x: %w", remote[:4], ErrSimultaneous)
		}
	}
	if e.conns.isClosed() {
		return nil, ErrClosed
	}
	ds := &dialState{cancel: cancel}
	in, err := e.pending.startDial(key, ds)
	if err != nil {
		return nil, err
	}
	defer e.pending.endDial(key, ds)
	e.counters.dials.Add(1)
	if in != nil {
		// Our dial wins: the peer gives up its own when our message 1
		// arrives (glare), so end its handshake here.
		in.cancelAndWait()
	}
	e.dropConn(remote)
	stop := context.AfterFunc(e.ctx, func() { cancel(ErrClosed) })
	defer stop()

	c, err := e.connect(ctx, remote, relays, opts.Hello, start)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w (%w)", cause, err)
		}
		e.counters.dialFailures.Add(1)
		return nil, fmt.Errorf("holepunch: connect %x: %w", remote[:4], err)
	}
	return c, nil
}

func (e *Endpoint) connect(ctx context.Context, remote ed25519.PublicKey, relays []netip.AddrPort, hello []byte, start time.Time) (*Conn, error) {
	e.waitNAT(ctx)
	unmapped := e.NAT().Mapping == natcheck.MappingUnknown
	hinted := len(relays) > 0
	if !hinted {
		var err error
		if relays, err = e.findRelays(ctx, remote); err != nil {
			return nil, err
		}
	}
	c, err := e.dial(ctx, remote, relays, ModeAuto, hello, start)
	if err != nil && hinted && errors.Is(err, ErrSignal) && ctx.Err() == nil {
		// The relays named in a topic record can be gone (the record lives
		// up to 20 minutes); the peer registers fresh ones under its key.
		fresh, ferr := e.findRelays(ctx, remote)
		if ferr != nil {
			return nil, fmt.Errorf("%w; by key: %w", err, ferr)
		}
		e.log.Debug("hinted relays failed, using the key's relays", "peer", short(remote), "relays", fresh)
		relays = fresh
		c, err = e.dial(ctx, remote, relays, ModeAuto, hello, start)
	}
	// final: the attempt connected, or failed in a way no other attempt
	// can mend, or the caller gave up.
	final := func(err error) bool { return err == nil || !fallsBackToRelay(err) || ctx.Err() != nil }
	if final(err) {
		return c, err
	}
	if unmapped && e.NAT().Mapping != natcheck.MappingUnknown {
		// The dial went out before our NAT's mapping was known (a
		// measurement slower than waitNAT's bound), so birthday punching
		// could not be chosen; it can now. Seen under heavy load: a
		// symmetric node relayed to a port-restricted one
		// (TestMainlineOnlyNATLab, node).
		e.log.Debug("direct dial failed before the nat was known; dialling again", "peer", short(remote), "err", err)
		if c, err = e.dial(ctx, remote, relays, ModeAuto, hello, start); final(err) {
			return c, err
		}
	}
	e.log.Debug("direct dial failed, trying relay", "peer", short(remote), "err", err)
	c, rerr := e.dial(ctx, remote, relays, ModeRelay, hello, start)
	if rerr != nil {
		return nil, fmt.Errorf("%w; relay: %w", err, rerr)
	}
	return c, nil
}

// findRelays looks up the relays the peer registered under its key.
func (e *Endpoint) findRelays(ctx context.Context, remote ed25519.PublicKey) ([]netip.AddrPort, error) {
	relays, err := e.cfg.Link.FindRelays(ctx, remote)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoRelays, err)
	}
	if len(relays) == 0 {
		return nil, ErrNoRelays
	}
	return relays, nil
}

// fallsBackToRelay says which failures of a direct attempt a relay can fix.
func fallsBackToRelay(err error) bool {
	return errors.Is(err, ErrBothSymmetric) || errors.Is(err, ErrPunchFailed)
}

// dial runs one handshake and punch attempt.
func (e *Endpoint) dial(ctx context.Context, remote ed25519.PublicKey, relays []netip.AddrPort, mode Mode, hello []byte, start time.Time) (*Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.ConnectTimeout)
	defer cancel()
	var turn *TURNServerInfo
	if mode == ModeRelay {
		info, err := e.cfg.Link.TURN(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoTURN, err)
		}
		turn = &info
	}
	agent, err := newAgent(e.agentConfig(turn))
	if err != nil {
		return nil, fmt.Errorf("ice agent: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = agent.Close()
		}
	}()
	local, err := e.localSignal(ctx, agent, CodeOK, mode)
	if err != nil {
		return nil, err
	}
	if mode == ModeRelay && !hasKind(local.Cands, candRelay) {
		return nil, fmt.Errorf("%w: no relay candidate gathered", ErrNoTURN)
	}
	if _, err := rand.Read(local.Secret[:]); err != nil {
		return nil, err
	}
	local.Hello = hello
	init, err := secure.NewInitiator(e.cfg.Key, remote, prologue)
	if err != nil {
		return nil, err
	}
	msg1, err := init.WriteMsg1(time.Now(), appendSignal(nil, local))
	if err != nil {
		return nil, err
	}
	peer, keys, err := e.exchange(ctx, init, msg1, remote, relays)
	if err != nil {
		return nil, err
	}
	if peer.Code != CodeOK {
		if peer.Code == CodeSimultaneous {
			e.reregister(remote)
		}
		return nil, codeError(peer.Code)
	}
	e.log.Debug("handshake done", "peer", short(remote), "mode", mode, "nat", local.Mapping, "filtering", local.Filtering,
		"peer_nat", peer.Mapping, "peer_filtering", peer.Filtering, "birthday", birthdayRole(local, peer) != roleNone, "cipher", keys.Cipher)
	tr, err := e.punch(ctx, agent, true, local, peer)
	if err != nil {
		return nil, err
	}
	conn, err := e.openSession(ctx, tr, keys, start, true)
	if err != nil {
		return nil, err
	}
	ok = true
	return conn, nil
}

// exchange sends message 1 through the relays in turn until one answers
// with a message 2 that authenticates as remote.
func (e *Endpoint) exchange(ctx context.Context, init *secure.Initiator, msg1 []byte, remote ed25519.PublicKey, relays []netip.AddrPort) (*signal, secure.Keys, error) {
	var lastErr error = ErrNoRelays
	for _, relay := range relays {
		ans, err := e.cfg.Link.Signal(ctx, relay, remote, msg1)
		if err != nil {
			lastErr = fmt.Errorf("%w: %w", ErrSignal, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		payload, keys, err := init.ReadMsg2(ans)
		if err != nil {
			// A relay that answers with a forged message 2 cannot complete
			// the handshake (it lacks the server's key); try the next.
			lastErr = fmt.Errorf("%w: %w", ErrHandshake, err)
			continue
		}
		peer, err := parseSignal(payload)
		if err != nil {
			return nil, keys, err
		}
		return peer, keys, nil
	}
	return nil, secure.Keys{}, lastErr
}

// agentConfig is the ICE agent configuration of this endpoint.
func (e *Endpoint) agentConfig(turn *TURNServerInfo) agentConfig {
	return agentConfig{mux: e.mux.all, networks: e.mux.networkTypes(), net: e.cfg.Net, turn: turn, keepLoopback: e.cfg.KeepLoopback, log: e.pion}
}

// localSignal gathers our candidates and builds our half of the signaling.
func (e *Endpoint) localSignal(ctx context.Context, agent *ice.Agent, code Code, mode Mode) (*signal, error) {
	v6 := e.cfg.Link.IPv6()
	cands, err := gather(ctx, agent, e.cfg.KeepLoopback, v6.usable())
	if err != nil {
		return nil, fmt.Errorf("gather candidates: %w", err)
	}
	if pub := e.cfg.Link.PublicAddr(); pub.IsValid() && !hasAddr(cands, pub) {
		cands = append(cands, candidate{Kind: candSrflx, Addr: pub})
	}
	if v6.usable() && v6.Public.IsValid() && !hasAddr(cands, v6.Public) {
		cands = append(cands, candidate{Kind: candSrflx, Addr: v6.Public})
	}
	// After the DHT's reflexive address, which birthday punching takes
	// as the one our NAT shows to the peer (reflexive).
	if m := e.mapped(); m.IsValid() && !hasAddr(cands, m) {
		cands = append(cands, candidate{Kind: candSrflx, Addr: m})
	}
	if len(cands) > maxCandidates {
		cands = cands[:maxCandidates]
	}
	ufrag, pwd, err := agent.GetLocalUserCredentials()
	if err != nil {
		return nil, err
	}
	mapping, filtering := e.advertisedNAT()
	return &signal{Code: code, Mode: mode, Mapping: mapping, Filtering: filtering, Ufrag: ufrag, Pwd: pwd, Cands: cands}, nil
}

// mapped is the port-mapped address, or the zero value.
func (e *Endpoint) mapped() netip.AddrPort {
	if e.cfg.Mapped == nil {
		return netip.AddrPort{}
	}
	return e.cfg.Mapped()
}

// advertisedNAT is the NAT behaviour the signaling states: the measured
// one, except that a port mapping makes the filtering endpoint-independent
// (the router forwards anything sent to the mapped address). The mapping
// behaviour stays as measured: our own packets still leave through the
// NAT's usual translation, so birthday punching against a port-restricted
// peer is still what connects an endpoint-dependent NAT to it.
func (e *Endpoint) advertisedNAT() (natcheck.Mapping, natcheck.Filtering) {
	nat := e.NAT()
	if e.mapped().IsValid() {
		return nat.Mapping, natcheck.FilteringEndpointIndependent
	}
	return nat.Mapping, nat.Filtering
}

func hasKind(cands []candidate, k candidateKind) bool {
	for _, c := range cands {
		if c.Kind == k {
			return true
		}
	}
	return false
}

func hasAddr(cands []candidate, a netip.AddrPort) bool {
	for _, c := range cands {
		if c.Addr == a {
			return true
		}
	}
	return false
}

// transport is the datagram path a session runs over, and what to close
// when the session ends.
type transportPath struct {
	conn    net.Conn
	path    Path
	remote  netip.AddrPort // the peer's end of the path (see Conn.Remote)
	release func()
	// settle, when set, is called once the session is up and returns the
	// path it ended on (an early ICE path follows ICE's nomination; see
	// dialICE), or path and remote when ctx ends first.
	settle func(ctx context.Context) (Path, netip.AddrPort)
	// settled, when set, is called once the session is up and settled: an
	// ICE path routed past pion lets its agent go then (retireAgent).
	settled func()
}

// punch runs ICE (and, when the NATs call for it, birthday punching beside
// it) and returns the first path that works.
func (e *Endpoint) punch(ctx context.Context, agent *ice.Agent, controlling bool, local, peer *signal) (transportPath, error) {
	switch birthdayRole(local, peer) {
	case roleHard:
		_ = agent.Close()
		return e.punchHard(ctx, local, peer)
	case roleEasy:
		_ = agent.Close()
		return e.punchEasy(ctx, local, peer)
	}
	cands := peer.Cands
	if awaitsPeer(local, peer) {
		cands = withoutReflexive(cands)
	}
	addRemote(agent, cands, e.cfg.Link.IPv6().usable(), e.log)
	failed := make(chan struct{})
	var failOnce sync.Once
	_ = agent.OnConnectionStateChange(func(s ice.ConnectionState) {
		if s == ice.ConnectionStateFailed {
			failOnce.Do(func() { close(failed) })
		}
	})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-failed:
			cancel()
		case <-ctx.Done():
		}
	}()
	// The session closes its conn when it ends (ice.Conn.Close closes the
	// agent) while releasePath may close the agent at the same moment;
	// pion/ice v2's Agent.Close checks, then acts, so two at once close a
	// channel twice and panic (seen in the swarm tests). Both go through
	// one Once.
	closeAgent := sync.OnceValue(agent.Close)
	var (
		conn *ice.Conn
		err  error
	)
	if controlling {
		var early transportPath
		conn, early, err = e.dialICE(ctx, agent, local, peer, closeAgent)
		if err == nil && conn == nil {
			return early, nil
		}
	} else {
		conn, err = agent.Accept(ctx, peer.Ufrag, peer.Pwd)
	}
	if err != nil {
		select {
		case <-failed:
			return transportPath{}, fmt.Errorf("%w: %w", ErrPunchFailed, errAgentFailed)
		default:
		}
		if errors.Is(err, ice.ErrCanceledByCaller) && ctx.Err() != nil {
			if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
				return transportPath{}, fmt.Errorf("%w: %w", ErrPunchFailed, cause)
			}
		}
		return transportPath{}, fmt.Errorf("%w: %w", ErrPunchFailed, err)
	}
	path, remote := selectedPath(agent)
	e.log.Debug("ice connected", "path", path, "addr", remote)
	if rc := e.routeICE(conn, path, remote, closeAgent); rc != nil {
		return transportPath{conn: rc, path: path, remote: remote, release: func() { _ = rc.Close() }, settled: e.retireAgent(closeAgent)}, nil
	}
	return transportPath{conn: agentConn{Conn: conn, close: closeAgent}, path: path, remote: remote, release: func() { _ = closeAgent() }}, nil
}

// agentConn is an ICE conn whose Close closes the agent at most once.
type agentConn struct {
	*ice.Conn
	close func() error
}

func (c agentConn) Close() error { return c.close() }

// openSession runs the secure session over tr and registers the result.
func (e *Endpoint) openSession(ctx context.Context, tr transportPath, keys secure.Keys, start time.Time, initiator bool) (*Conn, error) {
	// A connection's setup leaves most of what it allocated as garbage.
	defer e.noteGarbage()
	dc := secure.NewDatagramConn(tr.conn, keys, secure.DatagramConfig{})
	cfg := e.cfg.Session
	if ff, ok := e.cfg.Link.(FragmentFree); ok && ff.DontFragment() {
		cfg.PathMTUDiscovery = true
	}
	var (
		sess *secure.Session
		err  error
	)
	if initiator {
		sess, err = secure.Client(ctx, dc, cfg)
	} else {
		sess, err = secure.Server(ctx, dc, cfg)
	}
	if err != nil {
		_ = dc.Close()
		if tr.release != nil {
			tr.release()
		}
		// The path was found but carried no session (a birthday port that
		// closed again, a relay that stopped forwarding): a relay attempt
		// may still work, so this counts as a failed punch.
		if ctx.Err() == nil || errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			return nil, fmt.Errorf("%w: secure session over %s path: %w", ErrPunchFailed, tr.path, err)
		}
		return nil, fmt.Errorf("secure session: %w", err)
	}
	c := &Conn{Session: sess, path: tr.path, remote: tr.remote, settled: make(chan struct{}), ConnectTime: time.Since(start), Initiator: initiator, opened: time.Now(), release: tr.release}
	if tr.settle == nil {
		close(c.settled)
		if tr.settled != nil {
			tr.settled()
		}
	}
	key := string(keys.Remote)
	old, err := e.conns.add(key, c)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	if old != nil {
		e.retire(old)
	}
	// When the session ends, its path goes and so does its table entry.
	// No goroutine waits for that (Session.OnEnd). Close closes every
	// connection in the table itself, and Conn.Close releases the path
	// before it returns, so Close needs no watcher to have finished.
	sess.OnEnd(func() {
		c.releasePath()
		e.conns.remove(key, c)
	})
	if tr.settle != nil {
		// The session started on the first answered ICE check (dialICE):
		// Connect returns now, and the path follows ICE's nomination
		// beside the session, a round trip later. Waiting for it here
		// cost every dial that round trip (86 ms at 80 ms RTT).
		if !e.spawn(func() { e.settlePath(c, tr) }) {
			c.settle(tr.path, tr.remote) // Close began
		}
	}
	return c, nil
}

// settlePath waits for the path ICE settles on (transportPath.settle) and
// sets it on c, which started on tr's early path.
func (e *Endpoint) settlePath(c *Conn, tr transportPath) {
	path, remote := tr.settle(e.ctx)
	if was := c.settle(path, remote); was != path {
		e.conns.moved(was, path)
	}
	if tr.settled != nil {
		tr.settled()
	}
}

// dropConn retires the live connection to remote, if any, before a new
// handshake with it starts: the peer is dialling again, so it lost that
// connection, and its ICE agent would steal the new one's packets
// (pitfall P1).
func (e *Endpoint) dropConn(remote ed25519.PublicKey) {
	if old := e.conns.take(string(remote)); old != nil {
		e.retire(old)
	}
}

// retire releases a connection's path at once and closes its session in
// the background: a graceful close waits for the peer, which may be gone.
func (e *Endpoint) retire(c *Conn) {
	c.releasePath()
	if !e.spawn(func() { _ = c.Session.Close() }) {
		_ = c.Session.Close() // Close began: no goroutine may start now
	}
}

// spawn runs f on a goroutine Close waits for, unless Close has begun; then
// it returns false and f does not run. The wg.Add happens under the
// connection table's lock, which Close takes to begin, so no Add can
// follow Close's wg.Wait (sync.WaitGroup's rule; the race detector caught
// handleSignal's Add, made after a check of closed, racing with Wait).
func (e *Endpoint) spawn(f func()) bool {
	e.conns.mu.Lock()
	defer e.conns.mu.Unlock()
	if e.conns.closed {
		return false
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f()
	}()
	return true
}

// setHandlers installs the endpoint's handlers on the link, or removes
// them: it is the list of what the endpoint takes from the node's socket
// (internal/demux has the whole table). The packet handlers run on the
// node's read loop and must not block: each copies what it keeps and hands
// it on through a buffered channel or queue, dropping it when that is full.
func (e *Endpoint) setHandlers(on bool) {
	signal, birthday, bySource, stun := e.handleSignal, e.handleBirthday, e.routeBySource, e.handleSTUN
	if !on {
		signal, birthday, bySource, stun = nil, nil, nil, nil
	}
	l := e.cfg.Link
	l.SetSignalHandler(signal)
	l.Handle(demux.Birthday, birthday) // probes of punches in progress
	l.Handle(demux.Sealed, bySource)   // sessions, on a punched path or over ICE
	l.Handle(demux.STUN, stun)         // ICE checks, keepalives and consent (and dialICE's watch)
}

// routeBySource takes the session datagrams on the node's socket: those from
// an address a path owns (a birthday path, or an ICE pair, see routeICE) go
// to it, the rest to the ICE mux.
func (e *Endpoint) routeBySource(b []byte, from netip.AddrPort) {
	e.paths.mu.Lock()
	rc := e.paths.routes[from]
	e.paths.mu.Unlock()
	if rc != nil {
		rc.deliver(b)
		e.counters.routed.Add(1)
		return
	}
	e.toMux(b, from)
}

// handleSTUN shows a STUN message to the dials watching for their first
// answered check (dialICE), then hands it to the ICE mux.
func (e *Endpoint) handleSTUN(b []byte, from netip.AddrPort) {
	e.checks.observe(b, from)
	e.toMux(b, from)
}

// toMux hands a datagram to the ICE mux of its family: every STUN message
// (ICE keeps its pairs alive even when a path owns the address) and the
// session datagrams no path owns.
func (e *Endpoint) toMux(b []byte, from netip.AddrPort) {
	if e.mux != nil {
		if s := e.mux.sockFor(from); s != nil {
			s.deliver(b, from)
		}
	}
}

// codeError maps a server's refusal to an error.
func codeError(c Code) error {
	switch c {
	case CodeRefused:
		return ErrRefused
	case CodeBusy:
		return ErrBusy
	case CodeSimultaneous:
		return ErrSimultaneous
	case CodeUseRelay:
		return ErrBothSymmetric
	case CodeNoRelay:
		return ErrNoTURN
	}
	return fmt.Errorf("%w: code %s", ErrBadSignal, c)
}

func short(k ed25519.PublicKey) string {
	if len(k) < 4 {
		return ""
	}
	return fmt.Sprintf("%x", []byte(k[:4]))
}
