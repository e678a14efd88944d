package swarm

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/natcheck"
)

// bootstrapTimeout bounds the first DHT bootstrap in Start; a swarm that
// cannot reach its bootstrap nodes still starts (LAN discovery works) and
// tries again before each discovery round.
const bootstrapTimeout = 10 * time.Second

// unannounceTimeout bounds the unannounce in Leave when the caller's
// context has no deadline.
const unannounceTimeout = 10 * time.Second

// Swarm joins topics and keeps one connection per remote key. New builds
// it, Start starts it, Close stops it.
type Swarm struct {
	// immutable after New
	cfg Config
	key ed25519.PrivateKey
	pub ed25519.PublicKey
	log *slog.Logger

	// set by Start, immutable after it
	disc    discovery
	node    *dht.Node // nil without a DHT
	tr      connector
	lan     *lanDiscovery     // nil when disabled
	monitor *natcheck.Monitor // nil without Config.MonitorNAT or a DHT
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup // every goroutine but the event dispatcher
	evDone  chan struct{}  // closed when the event dispatcher exits

	kick chan struct{} // wakes the dial loop; buffered 1

	life sync.Mutex // serialises Start and Close

	mu      sync.Mutex // guards everything below
	started bool
	closed  bool
	table   *peerTable
	overlay *overlay // membership (HyParView) over the table
	rng     *rand.Rand
	conns   map[peerKey]*Conn
	topics  map[Topic]*Discovery
	changed chan struct{} // closed and replaced on every state change
	events  []event       // waiting for the dispatcher
	evWake  chan struct{} // buffered 1
	stats   counters
	// natLast is the NAT report last passed to OnNATChange (natMeasured);
	// natReported says there was one.
	natLast     natcheck.Report
	natReported bool
}

// event is one OnConnection, OnDisconnect or OnNATChange call.
type event struct {
	conn  *Conn
	info  PeerInfo
	close bool
	err   error
	nat   *natcheck.Report // set for OnNATChange
}

// New checks cfg and builds a swarm. It starts nothing.
func New(cfg Config) (*Swarm, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Swarm{
		cfg:     cfg,
		key:     cfg.Key,
		pub:     cfg.Key.Public().(ed25519.PublicKey),
		log:     cfg.Logger,
		kick:    make(chan struct{}, 1),
		conns:   make(map[peerKey]*Conn),
		topics:  make(map[Topic]*Discovery),
		changed: make(chan struct{}),
		evWake:  make(chan struct{}, 1),
		evDone:  make(chan struct{}),
		rng:     rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		stats: counters{
			failures: make(map[string]uint64), inboundRefused: make(map[string]uint64),
			opened: make(map[Role]uint64), closed: make(map[Role]uint64),
		},
	}
	lim := limits{maxPeers: cfg.MaxPeers, maxParallel: cfg.MaxParallel, maxInbound: cfg.MaxInbound}
	s.table = newPeerTable(s.pub, lim, cfg.Backoff, s.rng.Float64)
	s.overlay = newOverlay(overlayConfig{
		maxPeers: cfg.MaxPeers, passive: cfg.PassiveView,
		activeWalk: cfg.ActiveWalk, passiveWalk: cfg.PassiveWalk,
		shuffleInterval: cfg.ShuffleInterval, staleAfter: cfg.StaleAfter,
	}, s.pub, s.table, rand.New(rand.NewPCG(s.rng.Uint64(), s.rng.Uint64())), time.Now())
	return s, nil
}

// PublicKey returns the swarm's identity.
func (s *Swarm) PublicKey() ed25519.PublicKey { return s.pub }

// LocalAddr returns the UDP address the swarm listens on (zero before
// Start).
func (s *Swarm) LocalAddr() netip.AddrPort {
	if s.disc == nil {
		return netip.AddrPort{}
	}
	return s.disc.localAddr()
}

// Node returns the swarm's DHT node (nil before Start or without a DHT).
func (s *Swarm) Node() *dht.Node { return s.node }

// Start creates the DHT node and the transport, joins the DHT through the
// bootstrap nodes (a failure is logged, not fatal: the swarm retries before
// each discovery round) and starts LAN discovery.
func (s *Swarm) Start(ctx context.Context) error {
	s.life.Lock()
	defer s.life.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.started {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if err := s.start(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	s.started = true
	s.mu.Unlock()
	s.wg.Add(2)
	go s.dialLoop()
	go s.memberLoop()
	go s.dispatch()
	return nil
}

func (s *Swarm) start(ctx context.Context) error {
	tf := s.cfg.transport
	if tf == nil {
		tf = defaultTransport(s.cfg)
	}
	dcfg := s.cfg.DHT
	dcfg.Net = s.cfg.Net
	dcfg.ListenAddr = s.cfg.ListenAddr
	dcfg.Bootstrap = s.cfg.Bootstrap
	dcfg.Logger = s.log.With("component", "dht")
	tf.configure(&dcfg)
	df := s.cfg.discovery
	if df == nil {
		df = newDHTDiscovery
	}
	disc, node, err := df(dcfg)
	if err != nil {
		return fmt.Errorf("swarm: %w", err)
	}
	s.disc, s.node = disc, node
	if s.cfg.OnListen != nil && node != nil {
		s.cfg.OnListen(ctx, node.LocalAddr())
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	tr, err := tf.start(ctx, node, transportHooks{
		key:      s.key,
		firewall: s.acceptFirewall,
		incoming: func(c *holepunch.Conn) { s.adopt(c, false) },
		measured: s.natMeasured,
		log:      s.log,
	})
	if err != nil {
		s.cancel()
		disc.close()
		return fmt.Errorf("swarm: start transport: %w", err)
	}
	s.mu.Lock()
	s.tr = tr // adopt may already run: incoming connections need no Start
	s.mu.Unlock()
	if len(s.cfg.Bootstrap) > 0 {
		bctx, cancel := context.WithTimeout(ctx, bootstrapTimeout)
		awaitMeasuredJoin(bctx, node, tr)
		if err := disc.ready(bctx); err != nil {
			s.log.Warn("swarm: bootstrap failed; will retry", "err", err)
		}
		cancel()
	}
	if err := s.startNATMonitor(); err != nil {
		s.cancel()
		_ = tr.Close()
		disc.close()
		return fmt.Errorf("swarm: nat monitor: %w", err)
	}
	if !s.cfg.DisableLAN {
		s.lan = newLANDiscovery(s)
		if err := s.lan.start(); err != nil {
			s.log.Warn("swarm: lan discovery off", "err", err)
			s.lan = nil
		}
	}
	return nil
}

// awaitMeasuredJoin waits while the transport's first NAT measurement
// joins the DHT on its way (dhtprobe.Measure: after its filtering probes are
// isolated), until the node has joined or the measurement has ended. A
// bootstrap of our own beside it contacted, in a small DHT, the very nodes
// the probes needed as strangers, and filtering read unknown. Everything a
// swarm does first (announce, dial) waits for the measurement anyway.
func awaitMeasuredJoin(ctx context.Context, node *dht.Node, tr connector) {
	if node == nil {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	measured := make(chan struct{})
	go func() {
		defer close(measured)
		tr.WaitNAT(ctx)
	}()
	select {
	case <-node.Joined():
	case <-measured:
	case <-ctx.Done():
	}
}

// Close leaves nothing running: it stops discovery and dialling, closes
// every connection (reporting each to OnDisconnect with ErrClosed), the
// transport and the DHT node, and waits for every goroutine. Records of
// joined topics are not removed from the DHT (Leave does that); they
// expire. Idempotent.
func (s *Swarm) Close() error {
	s.life.Lock()
	defer s.life.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started := s.started
	conns := make([]*Conn, 0, len(s.conns))
	for k, c := range s.conns {
		conns = append(conns, c)
		delete(s.conns, k)
		s.table.disconnected(c.RemotePublicKey(), time.Now(), false)
		s.overlay.disconnected(c.RemotePublicKey(), time.Now())
		s.queueEventLocked(event{conn: c, info: c.info, close: true, err: ErrClosed})
	}
	s.notifyLocked()
	s.mu.Unlock()
	if !started {
		return nil
	}
	s.cancel()
	if s.monitor != nil {
		_ = s.monitor.Close() // before the transport it measures through
	}
	if s.lan != nil {
		s.lan.close()
	}
	err := s.tr.Close()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() { defer wg.Done(); c.Conn.Close(); c.ctl.writer.Wait() }()
	}
	wg.Wait()
	s.wg.Wait()
	err = errors.Join(err, s.disc.close())
	<-s.evDone
	return err
}

// JoinKey joins a topic by its raw 32-byte key. Joining a topic again
// widens its mode (server, client) and refreshes it at once.
func (s *Swarm) JoinKey(topic Topic, opts JoinOptions) (*Discovery, error) {
	opts = opts.withDefaults()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if !s.started {
		return nil, ErrNotStarted
	}
	if d := s.topics[topic]; d != nil {
		// Joining again widens the mode and refreshes at once.
		d.server = d.server || opts.Server
		d.client = d.client || opts.Client
		d.refresh()
		s.lanChangedLocked()
		s.topicsChangedLocked()
		return d, nil
	}
	ctx, cancel := context.WithCancel(s.ctx)
	d := &Discovery{
		s: s, topic: topic, server: opts.Server, client: opts.Client,
		cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1),
	}
	s.topics[topic] = d
	s.lanChangedLocked()
	s.topicsChangedLocked()
	s.wg.Add(1)
	go d.run(ctx)
	return d, nil
}

// Join joins the topic named by a string (its key is TopicOf(name)).
func (s *Swarm) Join(name string, opts JoinOptions) (*Discovery, error) {
	return s.JoinKey(TopicOf(name), opts)
}

// Leave stops announcing and looking up topic: it removes this node's
// record from the DHT (if it was a server) and stops dialling peers that
// only this topic wanted. Open connections stay.
func (s *Swarm) Leave(ctx context.Context, topic Topic) error {
	s.mu.Lock()
	d := s.topics[topic]
	if d == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotJoined, topic.Short())
	}
	delete(s.topics, topic)
	server := d.server
	s.table.leaveTopic(topic)
	s.lanChangedLocked()
	s.topicsChangedLocked()
	s.notifyLocked()
	s.mu.Unlock()
	d.cancel()
	<-d.done
	if !server {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, unannounceTimeout)
		defer cancel()
	}
	if err := s.disc.unannounce(ctx, topic, s.key); err != nil {
		return fmt.Errorf("swarm: leave %s: %w", topic.Short(), err)
	}
	return nil
}

// JoinPeer dials remote by key now and keeps reconnecting it whenever the
// connection drops, forever (backing off to about every 10 minutes).
func (s *Swarm) JoinPeer(remote ed25519.PublicKey) error {
	if len(remote) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key of %d bytes", ErrBadKey, len(remote))
	}
	if remote.Equal(s.pub) {
		return ErrSelf
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.table.addExplicit(remote, time.Now())
	s.kickLocked()
	return nil
}

// LeavePeer stops reconnecting remote. An open connection stays.
func (s *Swarm) LeavePeer(remote ed25519.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.table.removeExplicit(remote)
	s.notifyLocked()
}

// Ban refuses remote from now on (dials and incoming connections) and
// closes its connection.
func (s *Swarm) Ban(remote ed25519.PublicKey) {
	s.mu.Lock()
	s.table.ban(remote)
	c := s.conns[peerKey(remote)]
	s.stats.banned++
	s.notifyLocked()
	s.mu.Unlock()
	if c != nil {
		c.Conn.Close()
	}
}

// Unban lifts a ban; a peer still wanted by a topic or JoinPeer is dialled
// again.
func (s *Swarm) Unban(remote ed25519.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.table.unban(remote, time.Now())
	s.kickLocked()
}

// Conns returns the open connections.
func (s *Swarm) Conns() []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Conn, 0, len(s.conns))
	for _, c := range s.conns {
		out = append(out, c)
	}
	return out
}

// Conn returns the open connection to remote, or nil.
func (s *Swarm) Conn(remote ed25519.PublicKey) *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[peerKey(remote)]
}

// Flush waits until every joined topic finished its first announce and
// lookup and every peer found so far was tried (dials that failed wait out
// their backoff without holding Flush up).
func (s *Swarm) Flush(ctx context.Context) error {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		done := !s.table.pending(time.Now())
		for _, d := range s.topics {
			done = done && d.flushed
		}
		ch := s.changed
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// NetworkChanged tells the swarm the local network changed (an address
// came or went): every topic is announced and looked up again at once,
// every known peer is dialled again, and every connection that stays silent
// for LivenessCheck is closed as dead (a live peer sends keepalives), so
// the peers reconnect over the new network. The node calls it from its
// address watcher.
//
// Silence is counted from a fifth of LivenessCheck after the call, not from
// the call: a packet the peer sent before the change and still on its way
// (late on a loaded machine) proved nothing, and kept a dead connection
// for the minute membership takes to notice. The rest of the window still
// holds two keepalive intervals of a live peer.
func (s *Swarm) NetworkChanged() {
	s.mu.Lock()
	if s.closed || !s.started {
		s.mu.Unlock()
		return
	}
	for _, d := range s.topics {
		d.refresh()
	}
	s.table.requeueAll(time.Now())
	s.kickLocked()
	conns := make([]*Conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.stats.networkChanges++
	s.wg.Add(1)
	s.mu.Unlock()
	if s.lan != nil {
		s.lan.changed()
	}
	go func() {
		defer s.wg.Done()
		settle := s.cfg.LivenessCheck / 5
		if !sleepCtx(s.ctx, settle) {
			return
		}
		recv := make([]uint64, len(conns))
		for i, c := range conns {
			recv[i] = c.received()
		}
		if !sleepCtx(s.ctx, s.cfg.LivenessCheck-settle) {
			return
		}
		for i, c := range conns {
			if c.received() != recv[i] {
				continue
			}
			s.log.Info("swarm: connection silent after network change", "peer", shortKey(c.RemotePublicKey()))
			s.mu.Lock()
			s.stats.deadAfterChange++
			s.mu.Unlock()
			s.drop(c, ErrDead)
		}
	}()
}

// sleepCtx waits d or until ctx ends; it reports whether the wait was complete.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// drop closes c and reports it with err (instead of the session's own
// error).
func (s *Swarm) drop(c *Conn, err error) {
	s.mu.Lock()
	if s.conns[peerKey(c.RemotePublicKey())] == c {
		delete(s.conns, peerKey(c.RemotePublicKey()))
		s.table.disconnected(c.RemotePublicKey(), time.Now(), !s.closed)
		s.overlay.disconnected(c.RemotePublicKey(), time.Now())
		s.queueEventLocked(event{conn: c, info: c.info, close: true, err: err})
		s.kickLocked()
	}
	s.mu.Unlock()
	c.Conn.Close()
}

// acceptFirewall is the transport's firewall: own key, ban, the user's
// firewall and the inbound limits (which a dialler with no connection, or
// at the end of a forward-join walk, may pass: see overlay.admit), all
// before any hole punching.
func (s *Swarm) acceptFirewall(remote ed25519.PublicKey, hello []byte) error {
	s.mu.Lock()
	err := s.overlay.admit(remote, hello, time.Now())
	if s.closed {
		err = ErrClosed
	}
	if err != nil {
		s.stats.inboundRefused[failureReason(err)]++
		s.notifyLocked()
		s.mu.Unlock()
		return err
	}
	s.mu.Unlock()
	if fw := s.cfg.Firewall; fw != nil {
		if err := fw(remote, true); err != nil {
			s.mu.Lock()
			s.table.release(remote)
			s.stats.inboundRefused["firewall"]++
			s.notifyLocked()
			s.mu.Unlock()
			return fmt.Errorf("%w: %w", ErrFirewalled, err)
		}
	}
	return nil
}

// dialLoop hands due peers to dial goroutines whenever the queue or the
// limits change or a retry falls due.
func (s *Swarm) dialLoop() {
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		now := time.Now()
		dial, wake := s.table.next(now)
		for _, p := range dial {
			s.stats.attempts++
			h := s.overlay.helloFor(p)
			job := dialJob{pub: p.pub, relays: p.relays, lan: p.lan, hello: h.wire()}
			s.wg.Add(1)
			go s.dial(job)
		}
		if len(dial) > 0 {
			close(s.changed) // Flush re-checks; no kick, we are the loop
			s.changed = make(chan struct{})
		}
		s.mu.Unlock()
		timer.Stop()
		if !wake.IsZero() {
			timer.Reset(wake.Sub(now))
		}
		select {
		case <-s.ctx.Done():
			return
		case <-s.kick:
		case <-timer.C:
		}
	}
}

type dialJob struct {
	pub         ed25519.PublicKey
	relays, lan []netip.AddrPort
	hello       []byte
}

// dial runs one dial and hands the result to the table and adopt.
func (s *Swarm) dial(j dialJob) {
	defer s.wg.Done()
	var err error
	if fw := s.cfg.Firewall; fw != nil {
		if ferr := fw(j.pub, false); ferr != nil {
			err = fmt.Errorf("%w: %w", ErrFirewalled, ferr)
		}
	}
	if err == nil && s.endDialIfHeld(j.pub) {
		return
	}
	var hc *holepunch.Conn
	s.log.Debug("swarm: dialling", "peer", shortKey(j.pub), "relays", len(j.relays), "lan", len(j.lan))
	if err == nil {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
		hc, err = s.tr.Connect(ctx, j.pub, j.relays, j.lan, j.hello)
		cancel()
	}
	if err == nil {
		s.adoptDialed(hc, j.pub)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	drop := errors.Is(err, ErrFirewalled) || s.closed
	switch {
	case errors.Is(err, errSimultaneous):
		s.table.dialLost(j.pub, time.Now())
	case errors.Is(err, errRefused) && !drop:
		s.table.dialRefused(j.pub, time.Now())
	default:
		s.table.dialDone(j.pub, false, drop, time.Now())
	}
	if !errors.Is(err, errSimultaneous) && !s.closed {
		s.stats.failures[failureReason(err)]++
		s.log.Debug("swarm: dial failed", "peer", shortKey(j.pub), "err", err)
	}
	s.notifyLocked()
	s.kickLocked()
}

// endDialIfHeld ends the dial to pub, without dialling, when the swarm
// holds a connection to pub: the peer's own connection came in after the
// dial loop took the job. A dial would replace it (holepunch keeps the
// newest connection per key), closing a fresh connection to set up another.
// A connection closed as stale is no longer held, so its redial goes on and
// replaces the dying one. Check and end are one step under the lock: a
// stale close in between would find the peer still dialling and skip its
// redial.
func (s *Swarm) endDialIfHeld(pub ed25519.PublicKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns[peerKey(pub)] == nil {
		return false
	}
	s.table.dialDone(pub, true, false, time.Now())
	s.notifyLocked()
	s.kickLocked()
	return true
}

// adoptDialed takes a connection our dial produced.
func (s *Swarm) adoptDialed(hc *holepunch.Conn, pub ed25519.PublicKey) {
	if !hc.RemotePublicKey().Equal(pub) {
		// Cannot happen with a correct transport: the handshake binds the
		// key. Refuse rather than mislabel.
		hc.Close()
		s.mu.Lock()
		s.table.dialDone(pub, false, true, time.Now())
		s.stats.failures["other"]++
		s.notifyLocked()
		s.mu.Unlock()
		return
	}
	s.adopt(hc, true)
}

// adopt takes a new connection (dialled when dialed is true) and reports
// it. A new connection to a key replaces the one the swarm holds: the
// transport keeps one connection per key (holepunch.Endpoint.Connect) and
// has retired the old one already, so the new one is the one that counts.
func (s *Swarm) adopt(hc *holepunch.Conn, dialed bool) {
	remote := hc.RemotePublicKey()
	key := peerKey(remote)
	now := time.Now()
	s.mu.Lock()
	// Why the connection was made, for the membership: the kind of our
	// dial, or the hello the peer's dial passed the firewall with.
	var why dialHello
	if p := s.table.get(remote); dialed && p != nil {
		why.Kind = p.dialKind
	} else if r, ok := s.table.reservationOf(remote); ok {
		why = r.hello
	}
	if dialed {
		s.table.dialDone(remote, true, false, now)
	}
	if s.closed {
		s.mu.Unlock()
		hc.Close()
		return
	}
	if p := s.table.get(remote); p != nil && p.banned {
		s.mu.Unlock()
		hc.Close()
		return
	}
	inbound := !hc.Initiator
	var replaced *Conn
	if old := s.conns[key]; old != nil {
		s.stats.duplicates++
		replaced = old
		s.table.setInbound(s.table.get(remote), inbound)
		s.queueEventLocked(event{conn: old, info: old.info, close: true, err: ErrDuplicate})
		s.overlay.replaced(remote, now)
	} else {
		if inbound {
			// The firewall checked the limits before the handshake; several
			// handshakes may have passed it at once.
			if err := s.table.canAccept(remote); err != nil {
				s.stats.inboundRefused[failureReason(err)]++
				s.mu.Unlock()
				hc.Close()
				return
			}
		}
		s.table.connected(remote, inbound, now)
	}
	c := &Conn{Conn: hc, openedAt: now}
	c.ctl = newControl(func() { s.writeControl(c) })
	s.conns[key] = c
	if replaced == nil {
		// Past MaxPeers (a priority dial), this demotes another connection
		// first, so that no one ever sees more than MaxPeers open.
		s.overlay.connected(remote, inbound, why, now)
		s.applyLocked()
	}
	p := s.table.get(remote)
	info := PeerInfo{
		PublicKey:   remote,
		Role:        RoleServer,
		Path:        hc.Path(),
		Remote:      hc.Remote(),
		Attempts:    p.attempts,
		Explicit:    p.explicit,
		LAN:         p.viaLAN,
		ConnectTime: hc.ConnectTime,
	}
	if hc.Initiator {
		info.Role = RoleClient
	}
	for t := range p.topics {
		info.Topics = append(info.Topics, t)
	}
	slices.SortFunc(info.Topics, func(a, b Topic) int { return slices.Compare(a[:], b[:]) })
	c.info = info
	s.stats.opened[info.Role]++
	s.queueEventLocked(event{conn: c, info: info})
	s.applyLocked() // the hello to the new neighbour, after its open event
	s.notifyLocked()
	s.mu.Unlock()
	if replaced != nil {
		s.log.Debug("swarm: connection replaced", "peer", shortKey(remote))
		go replaced.Conn.Close()
	}
	s.log.Debug("swarm: connected", "peer", shortKey(remote), "role", info.Role, "path", info.Path, "why", why.Kind)
	c.OnEnd(func() { s.ended(c) })
	s.startControl(c)
}

// ended records that c has closed. It runs when c's session ends (OnEnd),
// with no goroutine waiting for that meanwhile; after Close, which reports
// every connection itself, c is no longer in the table and nothing happens.
func (s *Swarm) ended(c *Conn) {
	err := c.Err()
	if err == nil {
		err = ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	remote := c.RemotePublicKey()
	if s.conns[peerKey(remote)] != c {
		return // replaced or dropped: already reported
	}
	delete(s.conns, peerKey(remote))
	s.table.disconnected(remote, time.Now(), !s.closed)
	s.overlay.disconnected(remote, time.Now())
	s.stats.closed[c.info.Role]++
	s.queueEventLocked(event{conn: c, info: c.info, close: true, err: err})
	s.notifyLocked()
	s.kickLocked()
}

// queueEventLocked hands an event to the dispatcher.
func (s *Swarm) queueEventLocked(e event) {
	s.events = append(s.events, e)
	select {
	case s.evWake <- struct{}{}:
	default:
	}
}

// dispatch calls OnConnection, OnDisconnect and OnNATChange in order,
// without the lock. It exits after Close once every event is delivered.
func (s *Swarm) dispatch() {
	defer close(s.evDone)
	for {
		s.mu.Lock()
		evs := s.events
		s.events = nil
		closed := s.closed
		s.mu.Unlock()
		for _, e := range evs {
			switch {
			case e.nat != nil:
				s.cfg.OnNATChange(*e.nat) // queued only when set
			case e.close && s.cfg.OnDisconnect != nil:
				s.cfg.OnDisconnect(e.conn, e.info, e.err)
			case !e.close && s.cfg.OnConnection != nil:
				s.cfg.OnConnection(e.conn, e.info)
			}
		}
		if closed && len(evs) == 0 {
			return
		}
		if closed {
			continue
		}
		select {
		case <-s.evWake:
		case <-s.ctx.Done():
		}
	}
}

// notifyLocked wakes everyone waiting in Flush, and the dial loop: any
// change (a dial ending, a connection opening or closing) may let a queued
// peer through the limits.
func (s *Swarm) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
	s.kickLocked()
}

// kickLocked wakes the dial loop.
func (s *Swarm) kickLocked() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// topicsChangedLocked tells the membership the set of topics changed.
func (s *Swarm) topicsChangedLocked() {
	var joined, client []Topic
	for t, d := range s.topics {
		joined = append(joined, t)
		if d.client {
			client = append(client, t)
		}
	}
	s.overlay.setTopics(joined, client)
}

// lanChangedLocked tells LAN discovery the set of topics changed.
func (s *Swarm) lanChangedLocked() {
	if s.lan != nil {
		s.lan.changed() // non-blocking
	}
}

// found records peers a lookup or LAN discovery returned and wakes the
// dial loop.
func (s *Swarm) found(topic Topic, recs []dht.PeerRecord, lan map[peerKey][]netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.topics[topic]
	if s.closed || d == nil || !d.client {
		return
	}
	now := time.Now()
	for _, r := range recs {
		relays := r.AllRelays()
		if s.node != nil {
			relays = s.node.Usable(relays) // not the IPv6 relays of an IPv4-only node
		}
		s.table.found(r.PublicKey, topic, relays, lan[peerKey(r.PublicKey)], now)
	}
	s.overlay.trimPassive(nil)
	s.notifyLocked()
	s.kickLocked()
}

func shortKey(k []byte) string {
	if len(k) < 4 {
		return fmt.Sprintf("%x", k)
	}
	return fmt.Sprintf("%x", k[:4])
}
