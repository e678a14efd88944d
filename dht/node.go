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
	"time"
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

	// Set by Start, then immutable.
	conn  net.PacketConn
	local netip.AddrPort

	ctr counters
	rto rttEstimator // its own lock

	// Guarded by mu.
	mu           sync.Mutex
	started      bool
	isClosed     bool
	persistent   bool
	id           ID // meaningful when persistent; a random id otherwise
	table        *routingTable
	store        *recordStore
	tokens       *tokens
	limiter      *rateLimiter
	pending      map[uint32]*pendingRequest
	tokenCache   map[netip.AddrPort]cachedToken
	sentIPs      map[netip.Addr]struct{}    // IPs we sent to, for unsolicited-probe checks
	sentOverflow bool                       // sentIPs filled up: nothing is provably unsolicited
	lastSent     atomic.Pointer[netip.Addr] // last IP noteSent saw; not guarded by mu
	samples      []addrSample               // reflexive addresses seen by others
	probeWaits   map[uint64]chan netip.AddrPort
	announced    map[[ed25519.PublicKeySize]byte]*relaySet
	verifying    map[netip.AddrPort]bool // addresses being pinged before entering the table
	bootstrap    []netip.AddrPort        // cfg.Bootstrap, then AddBootstrap's, deduplicated
	bootstrapped bool

	wg sync.WaitGroup
}

type pendingRequest struct {
	to netip.AddrPort
	ch chan *Message // buffered, 1
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
	var random ID
	fillRandom(random[:])
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:        cfg,
		ctx:        ctx,
		cancel:     cancel,
		log:        cfg.Logger,
		closed:     make(chan struct{}),
		relaySem:   make(chan struct{}, cfg.MaxRelayInflight),
		id:         random,
		table:      newRoutingTable(random, cfg.K),
		store:      newRecordStore(cfg.RecordTTL, cfg.MaxRecordsPerTopic, cfg.MaxRecords),
		tokens:     newTokens(cfg.TokenInterval, now),
		limiter:    newRateLimiter(cfg.RateLimit, cfg.RateBurst, 65536),
		pending:    make(map[uint32]*pendingRequest),
		tokenCache: make(map[netip.AddrPort]cachedToken),
		sentIPs:    make(map[netip.Addr]struct{}),
		probeWaits: make(map[uint64]chan netip.AddrPort),
		announced:  make(map[[ed25519.PublicKeySize]byte]*relaySet),
		verifying:  make(map[netip.AddrPort]bool),
	}
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

// Start opens the socket and starts the read and maintenance loops. It does
// not contact the network; call Bootstrap for that.
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
	conn, err := n.cfg.Net.ListenPacket("udp4", n.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("dht: listen %s: %w", n.cfg.ListenAddr, err)
	}
	// Large socket buffers: the same socket carries ICE and bulk transport.
	if b, ok := conn.(interface{ SetReadBuffer(int) error }); ok {
		_ = b.SetReadBuffer(4 << 20)
	}
	if b, ok := conn.(interface{ SetWriteBuffer(int) error }); ok {
		_ = b.SetWriteBuffer(4 << 20)
	}
	n.conn = conn
	n.local = addrPortOf(conn.LocalAddr())
	n.started = true
	if n.cfg.Mode == ModePersistent {
		switch {
		case n.cfg.PublicAddr.IsValid():
			n.becomePersistentLocked(n.cfg.PublicAddr)
		case !n.local.Addr().IsUnspecified():
			n.becomePersistentLocked(n.local)
		}
	}
	n.wg.Add(2)
	go n.readLoop()
	go n.maintainLoop()
	n.log.Info("dht node started", "addr", n.local, "mode", n.cfg.Mode.String())
	return nil
}

// Close stops the node, closes its socket and waits for its goroutines.
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
	conn := n.conn
	n.mu.Unlock()
	var err error
	if conn != nil {
		err = conn.Close()
	}
	n.wg.Wait()
	return err
}

// LocalAddr returns the bound address of the node's socket.
func (n *Node) LocalAddr() netip.AddrPort { return n.local }

// ID returns the node id (random while the node is ephemeral).
func (n *Node) ID() ID {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.id
}

// Persistent reports whether the node stores records and is routable.
func (n *Node) Persistent() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.persistent
}

// PublicAddr returns the node's public address: the configured one, or the
// address most nodes saw its packets come from. Zero when unknown.
func (n *Node) PublicAddr() netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.publicAddrLocked()
}

func (n *Node) publicAddrLocked() netip.AddrPort {
	if n.cfg.PublicAddr.IsValid() {
		return n.cfg.PublicAddr
	}
	a, _ := majority(n.samples)
	return a
}

// Stats returns a snapshot of the node's state and counters.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	s := Stats{
		ID:           n.id,
		Persistent:   n.persistent,
		LocalAddr:    n.local,
		PublicAddr:   n.publicAddrLocked(),
		RoutingTable: n.table.len(),
	}
	s.Records, s.Topics = n.store.count()
	n.mu.Unlock()
	n.ctr.fill(&s)
	return s
}

// becomePersistentLocked makes the node persistent at public address addr:
// its id becomes NodeID(addr) and the routing table is re-keyed.
func (n *Node) becomePersistentLocked(addr netip.AddrPort) {
	id := NodeID(addr)
	if n.persistent && id == n.id {
		return
	}
	old := n.table
	n.id = id
	n.persistent = true
	n.table = newRoutingTable(id, n.cfg.K)
	now := time.Now()
	for _, c := range old.closest(id, old.len()) {
		n.table.seen(c.id, c.addr, now)
	}
	n.log.Info("dht node is persistent", "id", id.Short(), "addr", addr)
}

// send writes one DHT message to addr.
func (n *Node) send(addr netip.AddrPort, m *Message) {
	b := AppendMessage(make([]byte, 0, 256), m)
	n.writeTo(b, addr)
}

func (n *Node) writeTo(b []byte, addr netip.AddrPort) {
	if _, err := n.conn.WriteTo(b, net.UDPAddrFromAddrPort(addr)); err != nil {
		n.log.Debug("dht write failed", "addr", addr, "err", err)
		return
	}
	n.ctr.packetsOut.Add(1)
	n.noteSent(addr.Addr())
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

// contactedLocked reports whether we may have sent to ip.
func (n *Node) contactedLocked(ip netip.Addr) bool {
	_, ok := n.sentIPs[ip]
	return ok || n.sentOverflow
}

// WritePacket sends a raw datagram on the node's socket. Other protocols
// sharing the socket (ICE, transport) send through it.
func (n *Node) WritePacket(b []byte, addr netip.AddrPort) error {
	if n.conn == nil {
		return ErrNotStarted
	}
	_, err := n.conn.WriteTo(b, net.UDPAddrFromAddrPort(addr))
	if err == nil {
		n.noteSent(addr.Addr())
	}
	return err
}

// request sends m to addr and waits for the matching response, resending
// after each timeout up to the configured retries.
func (n *Node) request(ctx context.Context, addr netip.AddrPort, m *Message) (*Message, error) {
	return n.requestTries(ctx, addr, m, n.cfg.Retries+1)
}

func (n *Node) requestTries(ctx context.Context, addr netip.AddrPort, m *Message, tries int) (*Message, error) {
	if n.conn == nil {
		return nil, ErrNotStarted
	}
	addr = unmapAddrPort(addr)
	m.Addr = addr
	for try := 0; try < tries; try++ {
		p := &pendingRequest{to: addr, ch: make(chan *Message, 1)}
		n.mu.Lock()
		if n.isClosed {
			n.mu.Unlock()
			return nil, ErrClosed
		}
		if n.persistent {
			id := n.id
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
		n.pending[m.TID] = p
		n.mu.Unlock()

		sent := time.Now()
		n.send(addr, m)
		wait := n.cfg.RequestTimeout
		if answeredAtOnce(m.Command) {
			wait = n.rto.wait(try, wait)
		}
		timer := time.NewTimer(wait)
		var reply *Message
		var err error
		select {
		case reply = <-p.ch:
		case <-timer.C:
			err = ErrTimeout
			n.ctr.timeouts.Add(1)
		case <-ctx.Done():
			err = ctx.Err()
		case <-n.closed:
			err = ErrClosed
		}
		timer.Stop()
		n.mu.Lock()
		delete(n.pending, m.TID)
		n.mu.Unlock()
		if reply != nil {
			if answeredAtOnce(m.Command) {
				n.rto.sample(time.Since(sent))
			}
			return reply, nil
		}
		if !errors.Is(err, ErrTimeout) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("dht: %s to %s: %w", m.Command, addr, ErrTimeout)
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

func addrPortOf(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		return unmapAddrPort(u.AddrPort())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return unmapAddrPort(ap)
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
