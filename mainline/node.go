package mainline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	dht "github.com/anacrolix/dht/v2"
	"github.com/anacrolix/dht/v2/bep44"
	"github.com/anacrolix/dht/v2/krpc"
	"golang.org/x/time/rate"

	"github.com/swarmdb/swarmdb/internal/demux"
	"github.com/swarmdb/swarmdb/internal/udpopt"
)

// closeWait bounds how long Close and SetReachable wait for the library's
// goroutines to notice the server closed. They do within milliseconds; the
// bound keeps a stuck library from hanging the node's shutdown.
const closeWait = 5 * time.Second

// maxSamples is how many reflexive address reports are kept.
const maxSamples = 16

// Node is one mainline DHT node. Create it with New, Start it, then
// Lookup and Announce.
type Node struct {
	// Immutable after New.
	cfg     Config
	log     *slog.Logger
	store   *peerStore
	limiter *rate.Limiter

	// Guarded by mu.
	mu       sync.Mutex
	srv      *dht.Server
	conn     *packetConn
	maint    chan struct{} // closed when the server's table maintainer returns
	readOnly bool
	publicIP netip.Addr
	samples  []sample // reflexive addresses responders reported
	started  bool
	closed   bool

	wg sync.WaitGroup // the standalone read loop

	packetsIn   atomic.Uint64
	malformed   atomic.Uint64
	traversals  atomic.Uint64
	announces   atomic.Uint64
	rebuilds    atomic.Uint64
	peersFound  atomic.Uint64
	inboxFull   atomic.Uint64 // of conns retired by SetReachable
	lastStarted atomic.Int64  // unix nanos of the latest server start
}

type sample struct {
	by   netip.Addr
	addr netip.AddrPort
}

// New checks cfg and returns a node. It starts nothing.
func New(cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("%w: Write and LocalAddr, or Conn, are required", err)
	}
	return &Node{
		cfg:      cfg,
		log:      cfg.Logger,
		store:    newPeerStore(cfg.PeerTTL, cfg.MaxInfohashes, cfg.MaxPeersPerInfohash, cfg.MaxValues, cfg.now),
		limiter:  rate.NewLimiter(rate.Limit(cfg.SendRate), cfg.SendBurst),
		readOnly: cfg.ReadOnly,
		publicIP: cfg.PublicIP,
	}, nil
}

// Start starts the server and its table maintenance, which bootstraps from
// the routers in the background. With Conn set it also starts reading it.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return ErrClosed
	case n.started:
		return nil
	}
	if err := n.startServerLocked(nil); err != nil {
		return err
	}
	n.started = true
	if n.cfg.Conn != nil {
		n.wg.Add(1)
		go n.readLoop()
	}
	n.log.Info("mainline node started", "addr", n.cfg.LocalAddr, "routers", len(n.cfg.Routers), "read_only", n.readOnly)
	return nil
}

// startServerLocked makes a server on a fresh packetConn, seeds its table
// with nodes a previous server knew, and starts its maintenance.
func (n *Node) startServerLocked(seed []krpc.NodeInfo) error {
	conn := newPacketConn(n.cfg.LocalAddr, n.write)
	sc := dht.NewDefaultServerConfig()
	sc.Conn = conn
	sc.Passive = n.readOnly
	sc.StartingNodes = n.startingNodes
	sc.PeerStore = n.store
	sc.Store = noItems{}
	sc.SendLimiter = n.limiter
	sc.Logger = libraryLogger(n.log)
	sc.QueryResendDelay = func() time.Duration { return n.cfg.QueryTimeout }
	if n.publicIP.IsValid() {
		sc.PublicIP = net.IP(n.publicIP.AsSlice())
	}
	srv, err := dht.NewServer(sc)
	if err != nil {
		return fmt.Errorf("mainline: new server: %w", err)
	}
	for _, ni := range seed {
		_ = srv.AddNode(ni)
	}
	maint := make(chan struct{})
	go func() {
		defer close(maint)
		n.maintain(srv, conn.closed)
	}()
	n.srv, n.conn, n.maint = srv, conn, maint
	n.lastStarted.Store(time.Now().UnixNano())
	return nil
}

// maintain runs the library's table maintenance (bootstrap, pings of
// questionable nodes, bucket refresh) once it has somewhere to start from:
// routers, or a node that contacted us. Its bootstrap started with neither
// leaks a goroutine on every try (v2.24.0's BootstrapContext returns
// without stopping its traversal when there are no starting nodes, and the
// maintainer retries every minute), which a first node of a network, with
// no routers, would hit for as long as nobody talks to it.
func (n *Node) maintain(srv *dht.Server, stop <-chan struct{}) {
	if len(n.cfg.Routers) == 0 {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for srv.NumNodes() == 0 {
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}
	srv.TableMaintainer()
}

// stopServer closes a server and waits (bounded) until its read loop and
// table maintainer are done. It must not run under mu: the library's
// goroutines call back into the node.
func (n *Node) stopServer(srv *dht.Server, conn *packetConn, maint chan struct{}) {
	srv.Close() // closes conn, asynchronously
	t := time.NewTimer(closeWait)
	defer t.Stop()
	for _, done := range []chan struct{}{conn.readerGone, maint} {
		select {
		case <-done:
		case <-t.C:
			n.log.Warn("mainline server did not stop in time")
			return
		}
	}
	n.inboxFull.Add(conn.dropped.Load())
}

// write sends on the real socket: the standalone one or the owner's.
func (n *Node) write(b []byte, to netip.AddrPort) error {
	if n.cfg.Conn != nil {
		_, err := n.cfg.Conn.WriteTo(b, net.UDPAddrFromAddrPort(to))
		return err
	}
	return n.cfg.Write(b, to)
}

// startingNodes is the library's StartingNodes: the routers (and cached
// nodes) from the config.
func (n *Node) startingNodes() ([]dht.Addr, error) {
	if len(n.cfg.Routers) == 0 {
		return nil, ErrNoNodes
	}
	out := make([]dht.Addr, 0, len(n.cfg.Routers))
	for _, a := range n.cfg.Routers {
		out = append(out, dht.NewAddr(net.UDPAddrFromAddrPort(a)))
	}
	return out, nil
}

// readLoop reads a socket the node owns (Config.Conn).
func (n *Node) readLoop() {
	defer n.wg.Done()
	buf := make([]byte, maxKRPCSize+1) // longer datagrams are dropped anyway
	for {
		nr, from, err := n.cfg.Conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		if ap := udpopt.AddrPortOf(from); ap.IsValid() && demux.Classify(buf[:nr]) == demux.KRPC {
			n.HandlePacket(buf[:nr], ap)
		}
	}
}

// HandlePacket takes one KRPC datagram from the shared socket's read loop.
// It copies b and never blocks.
func (n *Node) HandlePacket(b []byte, from netip.AddrPort) {
	n.packetsIn.Add(1)
	m, err := parseKRPC(b)
	if err != nil {
		n.malformed.Add(1)
		return
	}
	n.mu.Lock()
	conn := n.conn
	if a, ok := reflexiveOf(&m); ok {
		n.samples = append(n.samples, sample{by: from.Addr(), addr: a})
		if len(n.samples) > maxSamples {
			n.samples = n.samples[1:]
		}
	}
	n.mu.Unlock()
	if conn != nil {
		conn.deliver(b, from)
	}
}

// SetReachable makes the node a full one (reachable true: it answers
// queries and enters routing tables) or read-only (false). public, when
// valid, gives it a BEP 42 id for that address. The library fixes both at
// construction, so a change restarts the server on the same socket; its
// routing table carries over.
func (n *Node) SetReachable(reachable bool, public netip.Addr) {
	n.mu.Lock()
	if n.closed || (n.readOnly == !reachable && (!public.IsValid() || public == n.publicIP)) {
		n.mu.Unlock()
		return
	}
	n.readOnly = !reachable
	if public.IsValid() {
		n.publicIP = public
	}
	if !n.started {
		n.mu.Unlock()
		return
	}
	old, oldConn, oldMaint := n.srv, n.conn, n.maint
	seed := old.Nodes()
	err := n.startServerLocked(seed)
	n.mu.Unlock()
	n.stopServer(old, oldConn, oldMaint)
	n.rebuilds.Add(1)
	if err != nil {
		n.log.Warn("mainline server restart failed", "err", err)
		return
	}
	n.log.Info("mainline node mode changed", "read_only", !reachable, "public", public)
}

// Close stops the node and waits for its goroutines. It closes Conn when
// the node owns it, never a shared socket. Idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	srv, conn, maint := n.srv, n.conn, n.maint
	n.mu.Unlock()
	if srv != nil {
		n.stopServer(srv, conn, maint)
	}
	if n.cfg.Conn != nil {
		_ = n.cfg.Conn.Close()
	}
	n.wg.Wait()
	return nil
}

// server returns the running server.
func (n *Node) server() (*dht.Server, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return nil, ErrClosed
	case n.srv == nil:
		return nil, ErrNotStarted
	}
	return n.srv, nil
}

// Result is what one traversal found.
type Result struct {
	// Peers are the distinct peer addresses the traversal found.
	Peers []netip.AddrPort
	// Responded is how many nodes answered.
	Responded int
}

// Lookup finds the peers announced under ih (a get_peers traversal). It
// returns when the traversal runs out of closer nodes or ctx ends; on ctx's
// end it returns what it found with ctx's error. found, when not nil, gets
// each new peer as soon as a node names it (on the caller's goroutine): a
// traversal ends only when its last query answered or timed out, seconds
// after the first peer where a node on the way is gone.
func (n *Node) Lookup(ctx context.Context, ih Infohash, found func(netip.AddrPort)) (Result, error) {
	return n.traverse(ctx, ih, nil, found)
}

// Announce finds the peers under ih like Lookup and then announces this
// node to the closest nodes that handed it a token: at port, or with
// implied true at the source port of its datagrams (the socket's port as
// the storing node sees it, which for a node behind NAT is its mapping).
func (n *Node) Announce(ctx context.Context, ih Infohash, port int, implied bool, found func(netip.AddrPort)) (Result, error) {
	n.announces.Add(1)
	return n.traverse(ctx, ih, &dht.AnnouncePeerOpts{Port: port, ImpliedPort: implied}, found)
}

func (n *Node) traverse(ctx context.Context, ih Infohash, announce *dht.AnnouncePeerOpts, found func(netip.AddrPort)) (Result, error) {
	srv, err := n.server()
	if err != nil {
		return Result{}, err
	}
	n.traversals.Add(1)
	var opts []dht.AnnounceOpt
	if announce != nil {
		opts = append(opts, dht.AnnouncePeer(*announce))
	}
	a, err := srv.AnnounceTraversal(ih, opts...)
	if err != nil {
		return Result{}, fmt.Errorf("mainline: traversal %x: %w: %v", ih[:4], ErrNoNodes, err)
	}
	defer a.Close()
	var res Result
	seen := make(map[netip.AddrPort]bool)
	add := func(ap netip.AddrPort) {
		if seen[ap] {
			return
		}
		seen[ap] = true
		res.Peers = append(res.Peers, ap)
		n.peersFound.Add(1)
		if found != nil {
			found(ap)
		}
	}
	// A traversal asks others, never this node, although this node may be
	// one of the closest to ih and hold announces for it (on a small
	// network it often is the only one).
	for _, ap := range n.store.get(ih, n.cfg.now()) {
		add(ap)
	}
	for {
		select {
		case pv, ok := <-a.Peers:
			if !ok {
				return res, nil
			}
			// One PeersValues per node that answered. (Counting them here:
			// the library's TraversalStats reads its counters unsynchronised
			// with the atomic adds of its own query goroutines.)
			res.Responded++
			for _, p := range pv.Peers {
				if ap, ok := peerAddr(p.IP, p.Port); ok {
					add(ap)
				}
			}
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
}

// Nodes returns the addresses in the routing table, worth caching for the
// next start.
func (n *Node) Nodes() []netip.AddrPort {
	srv, err := n.server()
	if err != nil {
		return nil
	}
	return nodeAddrs(srv.Nodes())
}

// PublicAddr returns the address most responders saw our queries come
// from (BEP 42's "ip" key; not every implementation sends it). Zero when
// none said.
func (n *Node) PublicAddr() netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	counts := make(map[netip.AddrPort]map[netip.Addr]bool)
	var best netip.AddrPort
	most := 0
	for _, s := range n.samples {
		if counts[s.addr] == nil {
			counts[s.addr] = make(map[netip.Addr]bool)
		}
		counts[s.addr][s.by] = true
		if c := len(counts[s.addr]); c > most || (c == most && s.addr.Compare(best) < 0) {
			best, most = s.addr, c
		}
	}
	return best
}

// LocalAddr returns the socket's address.
func (n *Node) LocalAddr() netip.AddrPort { return n.cfg.LocalAddr }

// Stats is a snapshot of a node's state and counters.
type Stats struct {
	ReadOnly   bool
	Nodes      int // in the routing table
	GoodNodes  int
	PublicAddr netip.AddrPort

	StoredInfohashes  int    // in the peer store
	StoredPeers       int    // in the peer store
	AnnouncesReceived uint64 // stored from others

	PacketsIn       uint64 // KRPC datagrams handed to the node
	DroppedBadKRPC  uint64 // not well-formed KRPC
	DroppedBusy     uint64 // the library's inbox was full
	Traversals      uint64 // lookups and announces started
	AnnouncesSent   uint64 // announces started (each to up to 8 nodes)
	AnnouncesStored int64  // announce_peer queries others accepted
	PeersFound      uint64 // distinct peers over all traversals
	ModeChanges     uint64 // SetReachable restarts
}

// Stats returns a snapshot.
func (n *Node) Stats() Stats {
	s := Stats{
		PacketsIn:      n.packetsIn.Load(),
		DroppedBadKRPC: n.malformed.Load(),
		Traversals:     n.traversals.Load(),
		AnnouncesSent:  n.announces.Load(),
		PeersFound:     n.peersFound.Load(),
		ModeChanges:    n.rebuilds.Load(),
		DroppedBusy:    n.inboxFull.Load(),
		PublicAddr:     n.PublicAddr(),
	}
	s.StoredInfohashes, s.StoredPeers, s.AnnouncesReceived = n.store.counts()
	n.mu.Lock()
	srv, conn := n.srv, n.conn
	s.ReadOnly = n.readOnly
	n.mu.Unlock()
	if srv != nil {
		ss := srv.Stats()
		s.Nodes, s.GoodNodes = ss.Nodes, ss.GoodNodes
		s.AnnouncesStored = ss.SuccessfulOutboundAnnouncePeerQueries
		s.DroppedBusy += conn.dropped.Load()
	}
	return s
}

// noItems is the BEP 44 store: swarmdb stores no items for others (the
// library's default keeps every item in memory, unbounded). A put is
// answered with an error; a get finds nothing and returns closer nodes.
type noItems struct{}

var errNoItems = errors.New("mainline: this node stores no BEP 44 items")

func (noItems) Put(*bep44.Item) error                 { return errNoItems }
func (noItems) Get(bep44.Target) (*bep44.Item, error) { return nil, bep44.ErrItemNotFound }
func (noItems) Del(bep44.Target) error                { return nil }
