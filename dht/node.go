package dht

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/swarmdb/swarmdb/internal/demux"
	"github.com/swarmdb/swarmdb/internal/udpopt"
)

// Node is one DHT node: a UDP socket, a routing table, a record store and
// the request machinery. Create it with New, then Start it.
type Node struct {
	// Immutable after New.
	cfg      Config
	log      *slog.Logger
	closed   chan struct{}
	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	relaySem chan struct{} // bounds forwarded signaling exchanges

	// stacks holds the node's presence in each family (family.go); the
	// stack of a family the node has no socket for has a nil conn. The
	// structs are made by New; their conn and local are set by Start, the
	// rest is guarded by mu.
	stacks  [numFamilies]*stack
	primary Family // the family of ListenAddr: LocalAddr, PublicAddr, ID

	ctr      counters
	rto      rttEstimator   // its own lock
	handlers demux.Handlers // the other protocols' handlers (Handle); its own sync

	// Probe helpers nothing is sent to (hold), with the number of probes
	// waiting on each. heldMu is a leaf lock: writeTo takes it, and writeTo
	// may run under mu; holding (len(held)) spares it when nothing is held.
	heldMu  sync.Mutex
	held    map[netip.Addr]heldHelper
	holding atomic.Int32

	// Guarded by mu.
	mu           sync.Mutex
	started      bool
	isClosed     bool
	store        *recordStore
	tokens       *tokens
	limiter      *rateLimiter
	pending      map[uint32]pendingTry
	tokenCache   map[netip.AddrPort]cachedToken
	sentIPs      map[netip.Addr]struct{}    // IPs we sent to, for unsolicited-probe checks
	sentOverflow bool                       // sentIPs filled up: nothing is provably unsolicited
	lastSent     atomic.Pointer[netip.Addr] // last IP noteSent saw; not guarded by mu
	probeWaits   map[uint64]chan netip.AddrPort
	announced    map[[ed25519.PublicKeySize]byte]*relaySet
	verifying    map[netip.AddrPort]bool // addresses being pinged before entering the table
	bootstrap    []netip.AddrPort        // cfg.Bootstrap, then AddBootstrap's, deduplicated
	joined       chan struct{}           // closed by the first Bootstrap that succeeds

	wg sync.WaitGroup
}

// pendingRequest is a request waiting for its reply; pendingTry is one
// of its tries, under that try's transaction ID in Node.pending.
type pendingRequest struct {
	to netip.AddrPort
	ch chan answered // buffered, 1: the first reply; later ones are dropped
}

type pendingTry struct {
	req  *pendingRequest
	sent time.Time
}

// answered is a reply with the send time of the try it answers and its
// round trip.
type answered struct {
	msg  *Message
	sent time.Time
	rtt  time.Duration
}

type cachedToken struct {
	tok ID
	at  time.Time
}

// addrSample is one reflexive address observation, by the node that saw it.
type addrSample struct {
	by   netip.Addr
	addr netip.AddrPort
}

// relaySet is what an announcer keeps for one of its keys: the relays that
// forward signaling to it, whose pinholes it keeps open.
type relaySet struct {
	priv   ed25519.PrivateKey
	relays []netip.AddrPort
	// seen is our address as each relay saw our registration come from:
	// where it forwards signaling to (see reregisterIfMoved).
	seen map[netip.AddrPort]netip.AddrPort
	// flight is the registration in progress, which overlapping calls share
	// (see ensureRelays); nil when none is.
	flight *relayFlight
	// dropped counts the relays keepRelays dropped from the set.
	dropped int
}

// relayFlight is one registration round; relays and err are set before done
// is closed.
type relayFlight struct {
	done           chan struct{}
	droppedAtStart int // relaySet.dropped when the round began
	relays         []netip.AddrPort
	err            error
}

const (
	maxTokenCache = 4096
	maxSentIPs    = 4096
	maxSamples    = 16
	// maxVerifying bounds concurrent pings of new nodes before they enter
	// the routing table, so a flood of fake ids costs us little.
	maxVerifying = 16
	// requestPadTo is the size a request without a token pads itself to
	// when it expects a large answer: unverified sources get replies no
	// larger than their requests (no reflection amplification), and 512
	// bytes fit the closest 20 nodes plus a token.
	requestPadTo = 512
)

// New returns a node configured by cfg. It opens nothing; Start does.
func New(cfg Config) *Node {
	cfg = cfg.withDefaults()
	now := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:        cfg,
		ctx:        ctx,
		cancel:     cancel,
		log:        cfg.Logger,
		closed:     make(chan struct{}),
		relaySem:   make(chan struct{}, cfg.MaxRelayInflight),
		store:      newRecordStore(cfg.RecordTTL, cfg.MaxRecordsPerTopic, cfg.MaxRecords),
		tokens:     newTokens(cfg.TokenInterval, now),
		limiter:    newRateLimiter(cfg.RateLimit, cfg.RateBurst, 65536),
		pending:    make(map[uint32]pendingTry),
		tokenCache: make(map[netip.AddrPort]cachedToken),
		sentIPs:    make(map[netip.Addr]struct{}),
		probeWaits: make(map[uint64]chan netip.AddrPort),
		held:       make(map[netip.Addr]heldHelper),
		joined:     make(chan struct{}),
		announced:  make(map[[ed25519.PublicKeySize]byte]*relaySet),
		verifying:  make(map[netip.AddrPort]bool),
	}
	for _, f := range Families {
		n.stacks[f] = newStack(f, cfg.K)
	}
	n.primary, _, _ = cfg.plan() // Start reports a bad address
	n.addBootstrapLocked(cfg.Bootstrap)
	return n
}

func fillRandom(b []byte) {
	for i := 0; i < len(b); i += 8 {
		var v [8]byte
		binary.LittleEndian.PutUint64(v[:], rand.Uint64())
		copy(b[i:], v[:])
	}
}

// Start opens the sockets (one per family, see Config.ListenAddr6) and
// starts the read and maintenance loops. It does not contact the network;
// call Bootstrap for that.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.isClosed {
		return ErrClosed
	}
	if n.started {
		return nil
	}
	if n.cfg.Net == nil {
		return fmt.Errorf("dht: no network available")
	}
	primary, plans, err := n.cfg.plan()
	if err != nil {
		return err
	}
	n.primary = primary
	if err := n.openLocked(plans); err != nil {
		return err
	}
	n.started = true
	if n.cfg.Mode == ModePersistent {
		for _, st := range n.stacks {
			switch pub := n.configuredPublic(st.fam); {
			case st.conn == nil:
			case pub.IsValid():
				n.becomePersistentLocked(pub)
			case !st.local.Addr().IsUnspecified():
				n.becomePersistentLocked(st.local)
			}
		}
	}
	n.wg.Add(1)
	go n.maintainLoop()
	for _, st := range n.stacks {
		if st.conn != nil {
			n.wg.Add(1)
			go n.readLoop(st)
			n.log.Info("dht node started", "addr", st.local, "mode", n.cfg.Mode.String())
		}
	}
	return nil
}

// openAttempts bounds the tries at one port for both families when the
// IPv4 port was random and the same IPv6 port turned out to be taken.
const openAttempts = 3

// openLocked opens the planned sockets. A socket whose plan does not
// require it and that fails to open is left out (no IPv6 on this host or
// network, as on pion's vnet).
func (n *Node) openLocked(plans []listenPlan) error {
	randomPort := plans[0].fam == IPv4 && withPort(plans[0].addr, 0) == plans[0].addr
	for attempt := 1; ; attempt++ {
		var opened []net.PacketConn
		retry := false
		for _, p := range plans {
			addr := p.addr
			v4 := n.stacks[IPv4]
			if p.samePort && v4.conn != nil {
				addr = withPort(addr, v4.local.Port())
			}
			conn, err := n.cfg.Net.ListenPacket(p.fam.network(), addr)
			if err != nil {
				if p.required {
					for _, c := range opened {
						_ = c.Close()
					}
					n.stacks[IPv4].conn, n.stacks[IPv6].conn = nil, nil
					return fmt.Errorf("dht: listen %s: %w", addr, err)
				}
				// The same port is taken on IPv6 although it was free on
				// IPv4: with a random IPv4 port, try both again elsewhere.
				if p.samePort && randomPort && attempt < openAttempts && errors.Is(err, syscall.EADDRINUSE) {
					retry = true
				} else {
					n.log.Info("no socket for this family", "family", p.fam.String(), "addr", addr, "err", err)
				}
				continue
			}
			// Large socket buffers: the same socket carries ICE and bulk
			// transport.
			if b, ok := conn.(interface{ SetReadBuffer(int) error }); ok {
				_ = b.SetReadBuffer(4 << 20)
			}
			if b, ok := conn.(interface{ SetWriteBuffer(int) error }); ok {
				_ = b.SetWriteBuffer(4 << 20)
			}
			opened = append(opened, conn)
			st := n.stacks[p.fam]
			st.conn, st.local = conn, udpopt.AddrPortOf(conn.LocalAddr())
			// Don't Fragment, so that the sessions above can find the path MTU: DHT
			// messages stay far below any MTU and never notice.
			st.noFrag = udpopt.SetDontFragment(conn)
			st.segments = udpopt.NewSegmentWriter(conn)
			// Receive offload: a peer's burst, sent with one system call, is
			// read with one too (readLoop reads through a SegmentReader).
			st.gro = udpopt.SetGRO(conn)
		}
		if !retry {
			return nil
		}
		for _, c := range opened {
			_ = c.Close()
		}
		n.stacks[IPv4].conn, n.stacks[IPv6].conn = nil, nil
	}
}

// configuredPublic is the public address the config names for fam.
func (n *Node) configuredPublic(fam Family) netip.AddrPort {
	if fam == IPv6 {
		return n.cfg.PublicAddr6
	}
	return n.cfg.PublicAddr
}

// Close stops the node, closes its sockets and waits for its goroutines.
// It is safe to call more than once.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.isClosed {
		n.mu.Unlock()
		return nil
	}
	n.isClosed = true
	close(n.closed)
	n.cancel()
	n.mu.Unlock()
	var err error
	for _, st := range n.stacks {
		if st.conn != nil {
			if cerr := st.conn.Close(); err == nil {
				err = cerr
			}
		}
	}
	n.wg.Wait()
	return err
}

// LocalAddr returns the bound address of the node's socket of its primary
// family (the family of Config.ListenAddr; IPv4 unless that is an IPv6
// address).
func (n *Node) LocalAddr() netip.AddrPort { return n.stacks[n.primary].local }

// DontFragment reports whether every socket of the node sends with the IP Don't
// Fragment bit set, so that a datagram too large for the path is lost rather than
// fragmented: the condition for path MTU discovery above it (secure.Config).
func (n *Node) DontFragment() bool {
	found := false
	for _, st := range n.stacks {
		if st.conn == nil {
			continue
		}
		if !st.noFrag {
			return false
		}
		found = true
	}
	return found
}

// LocalAddrIn returns the bound address of the node's socket of fam, or the
// zero value when it has none.
func (n *Node) LocalAddrIn(fam Family) netip.AddrPort {
	if fam >= numFamilies {
		return netip.AddrPort{}
	}
	return n.stacks[fam].local
}

// ID returns the node id in the primary family (random while the node is
// ephemeral there).
func (n *Node) ID() ID {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stacks[n.primary].id
}

// Persistent reports whether the node stores records and is routable in
// its primary family.
func (n *Node) Persistent() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stacks[n.primary].persistent
}

// PublicAddr returns the node's public address in its primary family: the
// configured one, or the address most nodes saw its packets come from.
// Zero when unknown.
func (n *Node) PublicAddr() netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.publicAddrLocked(n.stacks[n.primary])
}

// PublicAddrIn is PublicAddr in family fam.
func (n *Node) PublicAddrIn(fam Family) netip.AddrPort {
	if fam >= numFamilies {
		return netip.AddrPort{}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.publicAddrLocked(n.stacks[fam])
}

func (n *Node) publicAddrLocked(st *stack) netip.AddrPort {
	if pub := n.configuredPublic(st.fam); pub.IsValid() {
		return pub
	}
	a, _ := majority(st.samples)
	return a
}

// FamilyState is the node's state in one address family.
type FamilyState struct {
	Family     Family
	LocalAddr  netip.AddrPort // the socket's bound address
	PublicAddr netip.AddrPort // zero when unknown
	Persistent bool
	ID         ID  // random while not persistent
	Contacts   int // routing table size
	// Joined: a node of the family answered (or the node is persistent
	// there); only then does the node use the family.
	Joined bool
}

// Families returns the node's state in each family it has a socket for,
// IPv4 first.
func (n *Node) Families() []FamilyState {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []FamilyState
	for _, st := range n.stacks {
		if st.conn == nil {
			continue
		}
		out = append(out, FamilyState{Family: st.fam, LocalAddr: st.local, PublicAddr: n.publicAddrLocked(st),
			Persistent: st.persistent, ID: st.id, Contacts: st.table.len(), Joined: st.joinedLocked()})
	}
	return out
}

// Speaks reports whether the node takes part in fam's overlay: it has a
// socket of the family and a node of the family answered it, or it is
// persistent there. Addresses of other families are useless to it.
func (n *Node) Speaks(fam Family) bool {
	if fam >= numFamilies {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stacks[fam].joinedLocked()
}

// Stats returns a snapshot of the node's state and counters. ID,
// Persistent, LocalAddr, PublicAddr and RoutingTable describe the primary
// family; Families every family.
func (n *Node) Stats() Stats {
	fams := n.Families()
	n.mu.Lock()
	p := n.stacks[n.primary]
	s := Stats{
		ID:           p.id,
		Persistent:   p.persistent,
		LocalAddr:    p.local,
		PublicAddr:   n.publicAddrLocked(p),
		RoutingTable: p.table.len(),
		Families:     fams,
	}
	s.Records, s.Topics = n.store.count()
	n.mu.Unlock()
	n.ctr.fill(&s)
	return s
}

// becomePersistentLocked makes the node persistent at public address addr
// in addr's family: its id there becomes NodeID(addr) and that family's
// routing table is re-keyed.
func (n *Node) becomePersistentLocked(addr netip.AddrPort) {
	st := n.stackFor(addr)
	id := NodeID(addr)
	if st.persistent && id == st.id {
		return
	}
	old := st.table
	st.id, st.at = id, addr
	st.persistent = true
	st.table = newRoutingTable(id, n.cfg.K)
	now := time.Now()
	for _, c := range old.closest(id, old.len()) {
		st.table.seen(c.id, c.addr, now)
	}
	n.log.Info("dht node is persistent", "id", id.Short(), "addr", addr)
}

// send writes one DHT message to addr.
func (n *Node) send(addr netip.AddrPort, m *Message) error {
	b := AppendMessage(make([]byte, 0, 256), m)
	return n.writeTo(b, addr)
}

// writeTo sends b from the socket of addr's family.
func (n *Node) writeTo(b []byte, addr netip.AddrPort) error {
	conn := n.stackFor(addr).conn
	if conn == nil {
		return fmt.Errorf("dht: send to %s: %w", addr, ErrNoFamily)
	}
	if n.holding.Load() > 0 && n.isHeld(addr.Addr()) {
		return fmt.Errorf("dht: send to %s: %w", addr, ErrHeldForProbe)
	}
	if _, err := conn.WriteTo(b, net.UDPAddrFromAddrPort(addr)); err != nil {
		n.log.Debug("dht write failed", "addr", addr, "err", err)
		return err
	}
	n.ctr.packetsOut.Add(1)
	n.noteSent(addr.Addr())
	return nil
}

// noteSent records that we sent to ip, for the NAT probe's "unsolicited"
// check. Consecutive sends to one IP (a data stream) skip the lock. When
// the set is full it is not cleared, which would make contacted IPs look
// like strangers and fake endpoint-independent filtering; it is marked
// overflowed instead, and no probe packet counts as unsolicited after that.
func (n *Node) noteSent(ip netip.Addr) {
	if last := n.lastSent.Load(); last != nil && *last == ip {
		return
	}
	n.lastSent.Store(&ip)
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.sentIPs[ip]; ok {
		return
	}
	if len(n.sentIPs) >= maxSentIPs {
		n.sentOverflow = true
		return
	}
	n.sentIPs[ip] = struct{}{}
}

// heldHelper is a probe helper the node sends nothing to (hold).
type heldHelper struct {
	addr    netip.AddrPort
	waiting int // probes waiting for its packet
}

// hold makes the node send nothing to helper's IP until release is called:
// helper sends the unsolicited packet of a NAT probe we wait for, and one
// packet of ours would open the very filter the probe measures. Holds nest.
func (n *Node) hold(helper netip.AddrPort) (release func()) {
	ip := helper.Addr()
	n.heldMu.Lock()
	h := n.held[ip]
	h.addr = helper
	h.waiting++
	n.held[ip] = h
	n.holding.Store(int32(len(n.held)))
	n.heldMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			n.heldMu.Lock()
			if h := n.held[ip]; h.waiting <= 1 {
				delete(n.held, ip)
			} else {
				h.waiting--
				n.held[ip] = h
			}
			n.holding.Store(int32(len(n.held)))
			n.heldMu.Unlock()
		})
	}
}

func (n *Node) isHeld(ip netip.Addr) bool {
	n.heldMu.Lock()
	defer n.heldMu.Unlock()
	return n.held[ip].waiting > 0
}

// HeldForProbes returns the nodes whose NAT probe packets the node is
// waiting for, which it sends nothing to until then (ErrHeldForProbe): a
// caller collecting DHT nodes while the probes wait (the NAT check's join)
// learns of them here, since it could not contact them.
func (n *Node) HeldForProbes() []netip.AddrPort {
	n.heldMu.Lock()
	defer n.heldMu.Unlock()
	out := make([]netip.AddrPort, 0, len(n.held))
	for _, h := range n.held {
		out = append(out, h.addr)
	}
	return out
}

// contactedLocked reports whether we may have sent to ip.
func (n *Node) contactedLocked(ip netip.Addr) bool {
	_, ok := n.sentIPs[ip]
	return ok || n.sentOverflow
}

// Handle makes h the handler of the datagrams of class c on the node's
// sockets (both families), replacing any before it; a nil h removes it.
// It serves the protocols that share the sockets without being the DHT
// (internal/demux lists who takes what): KRPC, Birthday, Sealed and STUN.
// The node keeps the DHT class and answers plain STUN Binding requests
// (no USERNAME) itself, so the STUN handler gets every other STUN message.
// A datagram of a class with no handler is dropped (DroppedMalformed).
//
// h runs on a socket's read loop, and the IPv4 and IPv6 loops may run it
// at once: it must not block, and must copy b to keep it. Handle may be
// called at any time, before Start or while the node runs. Registering
// for DHT or Unknown panics.
func (n *Node) Handle(c demux.Class, h demux.Handler) {
	if c == demux.DHT {
		panic("dht: the node handles DHT datagrams itself")
	}
	n.handlers.Handle(c, h)
}

// WritePacket sends a raw datagram from the node's socket of addr's
// family. Other protocols sharing the sockets (ICE, transport) send
// through it. ErrNoFamily: the node has no socket of that family.
func (n *Node) WritePacket(b []byte, addr netip.AddrPort) error {
	addr = unmapAddrPort(addr)
	conn := n.stackFor(addr).conn
	if conn == nil {
		if n.stacks[n.primary].conn == nil {
			return ErrNotStarted
		}
		return fmt.Errorf("dht: send to %s: %w", addr, ErrNoFamily)
	}
	_, err := conn.WriteTo(b, net.UDPAddrFromAddrPort(addr))
	if err == nil {
		n.noteSent(addr.Addr())
	}
	return err
}

// WriteSegments sends b to addr as datagrams of segSize bytes, the last one possibly
// shorter, with one system call where the kernel can segment (udpopt.SegmentWriter):
// a session's burst of equal-size packets. At most udpopt.MaxSegments datagrams.
func (n *Node) WriteSegments(b []byte, segSize int, addr netip.AddrPort) error {
	addr = unmapAddrPort(addr)
	st := n.stackFor(addr)
	if st.conn == nil {
		return n.WritePacket(b, addr) // the same errors
	}
	if err := st.segments.WriteSegments(b, segSize, addr); err != nil {
		return err
	}
	n.noteSent(addr.Addr())
	return nil
}

// request sends m to addr and waits for the matching response, resending
// after each timeout up to the configured retries.
func (n *Node) request(ctx context.Context, addr netip.AddrPort, m *Message) (*Message, error) {
	return n.requestTries(ctx, addr, m, n.cfg.Retries+1)
}

func (n *Node) requestTries(ctx context.Context, addr netip.AddrPort, m *Message, tries int) (*Message, error) {
	reply, _, err := n.requestLastSent(ctx, addr, m, tries)
	return reply, err
}

// requestLastSent is requestTries that also returns when the answered try
// was sent: what a caller timing the round trip needs, a lost try's wait
// left out.
//
// tries sets how long the request waits in all, from the first send: the
// waits of that many tries at wait's bounds (requestWait). Within that it
// is sent again whenever resendWait passes with no reply, doubling, so it
// may go out more than tries times: a lost datagram costs the resend wait,
// and two in a row no longer use up a request of two tries (a stall of
// 750 ms in a join at 5 % loss). Each send has a transaction ID of its
// own, and all stay open until the request ends, so a reply to an earlier
// send that comes after a resend still answers the request (and times its
// own send exactly).
func (n *Node) requestLastSent(ctx context.Context, addr netip.AddrPort, m *Message, tries int) (*Message, time.Time, error) {
	addr = unmapAddrPort(addr)
	st := n.stackFor(addr)
	if st.conn == nil {
		if n.stacks[n.primary].conn == nil {
			return nil, time.Time{}, ErrNotStarted
		}
		return nil, time.Time{}, fmt.Errorf("dht: %s to %s: %w", m.Command, addr, ErrNoFamily)
	}
	m.Addr = addr
	p := &pendingRequest{to: addr, ch: make(chan answered, 1)}
	tids := make([]uint32, 0, 4)
	defer func() {
		n.mu.Lock()
		for _, tid := range tids {
			delete(n.pending, tid)
		}
		n.mu.Unlock()
	}()
	budget := n.requestWait(m.Command, tries)
	giveUp := time.Now().Add(budget)
	timer := time.NewTimer(budget)
	defer timer.Stop()
	for try := 0; ; try++ {
		sent := time.Now()
		n.mu.Lock()
		if n.isClosed {
			n.mu.Unlock()
			return nil, time.Time{}, ErrClosed
		}
		if st.persistent {
			id := st.id
			m.ID = &id
		} else {
			m.ID = nil
		}
		for {
			m.TID = rand.Uint32()
			if _, dup := n.pending[m.TID]; !dup {
				break
			}
		}
		n.pending[m.TID] = pendingTry{req: p, sent: sent}
		tids = append(tids, m.TID)
		n.mu.Unlock()

		if err := n.send(addr, m); err != nil {
			// No route, no socket: a timeout would only hide it.
			return nil, time.Time{}, fmt.Errorf("dht: %s to %s: %w", m.Command, addr, err)
		}
		next := giveUp
		resend, _ := n.tryWaits(m.Command, try)
		if at := time.Now().Add(resend); at.Before(next) {
			next = at
		}
		timer.Reset(time.Until(next))
		select {
		case a := <-p.ch:
			if answeredAtOnce(m.Command) {
				n.rto.sample(a.rtt)
			}
			return a.msg, a.sent, nil
		case <-timer.C:
		case <-ctx.Done():
			return nil, time.Time{}, ctx.Err()
		case <-n.closed:
			return nil, time.Time{}, ErrClosed
		}
		if !time.Now().Before(giveUp) {
			break
		}
		n.ctr.resends.Add(1)
	}
	n.ctr.timeouts.Add(1)
	return nil, time.Time{}, fmt.Errorf("dht: %s to %s: %w", m.Command, addr, ErrTimeout)
}

// tryWaits is how long try of a request for c waits before the next try
// is sent (resend), and what it adds to the request's whole wait (giveUp):
// the estimator's resendWait and wait, times the round trips c's reply
// takes (roundTrips), at most RequestTimeout; the whole RequestTimeout for
// both when roundTrips is none.
func (n *Node) tryWaits(c Command, try int) (resend, giveUp time.Duration) {
	limit := n.cfg.RequestTimeout
	k := time.Duration(roundTrips(c))
	if k == 0 {
		return limit, limit
	}
	return min(k*n.rto.resendWait(try, limit), limit), min(k*n.rto.wait(try, limit), limit)
}

// requestWait is how long a request for c of tries tries waits in all
// before it gives up: the sum of its tries' giveUp waits (tryWaits).
func (n *Node) requestWait(c Command, tries int) time.Duration {
	var w time.Duration
	for try := range tries {
		_, giveUp := n.tryWaits(c, try)
		w += giveUp
	}
	return w
}

// cachedTokenFor returns a token addr handed us recently.
func (n *Node) cachedTokenFor(addr netip.AddrPort) *ID {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.tokenCache[addr]
	if !ok || time.Since(t.at) > n.cfg.TokenInterval {
		return nil
	}
	tok := t.tok
	return &tok
}

func (n *Node) rememberToken(addr netip.AddrPort, tok *ID) {
	if tok == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.tokenCache) >= maxTokenCache {
		now := time.Now()
		for a, t := range n.tokenCache {
			if now.Sub(t.at) > n.cfg.TokenInterval {
				delete(n.tokenCache, a)
			}
		}
		if len(n.tokenCache) >= maxTokenCache {
			clear(n.tokenCache)
		}
	}
	n.tokenCache[addr] = cachedToken{tok: *tok, at: time.Now()}
}

func unmapAddrPort(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// majority returns the address seen by the most distinct observers and how
// many saw it.
func majority(samples []addrSample) (netip.AddrPort, int) {
	counts := make(map[netip.AddrPort]map[netip.Addr]bool)
	for _, s := range samples {
		if counts[s.addr] == nil {
			counts[s.addr] = make(map[netip.Addr]bool)
		}
		counts[s.addr][s.by] = true
	}
	var best netip.AddrPort
	n := 0
	for a, by := range counts {
		if len(by) > n || (len(by) == n && a.Compare(best) < 0) {
			best, n = a, len(by)
		}
	}
	return best, n
}

// goTracked runs f on a goroutine that Close waits for.
func (n *Node) goTracked(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// closedCtx returns a context cancelled when the node closes, for work the
// node starts on its own behalf.
func (n *Node) closedCtx() context.Context { return n.ctx }

// tokenValid reports whether tok is a token this node would accept from ip
// now. For tests.
func (n *Node) tokenValid(tok ID, ip netip.Addr) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.tokens.valid(&tok, ip, time.Now())
}
