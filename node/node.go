package node

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swarmdb/swarmdb/bridge"
	"github.com/swarmdb/swarmdb/db"
	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/dnsdisc"
	"github.com/swarmdb/swarmdb/portmap"
	"github.com/swarmdb/swarmdb/swarm"
)

// Node is a running swarmdb node. See the package documentation.
type Node struct {
	// Immutable after New.
	cfg    Config
	log    *slog.Logger
	id     identity
	idSave bool // the identity is new: Start writes it

	// Set by Start, immutable after it.
	dir       *dataDir
	store     *db.Store
	bridge    *bridge.Bridge
	swarm     *swarm.Swarm
	disc      *swarm.Discovery
	http      *http.Server
	wsLn      net.Listener
	wsAddr    net.Addr
	tlsConfig *tls.Config
	peers     *peerDirectory
	startedAt time.Time
	mainline  *mainlinePart // nil when Config.Mainline is empty
	dnsdisc   *dnsdisc.Node // nil with DisableLAN or when mDNS failed
	dialer    *serverDialer // nil when nothing finds ToolDb servers
	cache     *nodeCache    // nil for a LAN-only node, which keeps none
	stop      chan struct{} // closed by shutdown, for Start's loops
	wg        sync.WaitGroup

	// portmap is set during Start (the swarm's OnListen), nil when the
	// node maps no ports; portmapChange wakes portMapLoop (portmap.go).
	portmap       atomic.Pointer[portmap.Client]
	portmapChange chan struct{}

	// Guarded by foundMu: ToolDb servers already reported.
	foundMu  sync.Mutex
	reported map[MainlinePeer]bool

	// Guarded by mu.
	mu      sync.Mutex
	started bool
	closed  bool
	// connectedAt is when each open swarm connection opened, for Status.
	connectedAt map[*swarm.Conn]time.Time
}

// New checks cfg and loads the identity in DataDir, or makes a new one that
// Start writes there. It starts nothing and creates no file.
func New(cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	id, onDisk, err := loadIdentity(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	return &Node{cfg: cfg, log: cfg.Logger, id: id, idSave: !onDisk, portmapChange: make(chan struct{}, 1)}, nil
}

// PublicKey is the node's swarm identity (its peer id).
func (n *Node) PublicKey() ed25519.PublicKey { return n.id.swarm.Public().(ed25519.PublicKey) }

// Address is the node's ToolDb address (the author of records it writes).
func (n *Node) Address() string { return n.id.user.Address() }

// Start locks the data directory (ErrDataDirInUse when another node holds
// it), writes a new identity, opens the store, starts the message layer,
// joins the swarm and, when configured, serves WebSocket clients. On error
// everything started so far is closed again, and the files and directories
// this Start created are removed.
func (n *Node) Start(ctx context.Context) (err error) {
	n.mu.Lock()
	if n.started || n.closed {
		n.mu.Unlock()
		return fmt.Errorf("%w: Start called twice or after Close", ErrConfig)
	}
	n.started = true
	n.mu.Unlock()
	n.dir, err = claimDataDir(n.cfg.DataDir)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			n.shutdown()
			n.dir.undo() // still holding the lock, so no other node's files go
			n.dir.release()
			n.dir = nil
		}
	}()
	n.startedAt = time.Now()
	if n.idSave {
		path := filepath.Join(n.cfg.DataDir, identityFile)
		if exists(path) {
			return fmt.Errorf("%w: %s appeared after New; start again to use it", ErrIdentity, path)
		}
		if err := n.id.save(n.cfg.DataDir); err != nil {
			return err
		}
		n.dir.track(path)
	}
	storePath := filepath.Join(n.cfg.DataDir, storeDir)
	if !exists(storePath) {
		n.dir.track(storePath)
	}
	if n.cfg.WebSocketAddr != "" {
		if err := n.listenWebSocket(); err != nil {
			return err
		}
	}
	host, port := advertisedHostPort(n.cfg.PublicWebSocketURL, n.wsAddr, n.cfg.TLSCertFile != "")
	n.store, err = db.Open(db.Config{Dir: storePath, Repair: n.cfg.RepairStore, Logger: n.log.With("component", "db")})
	if err != nil {
		return fmt.Errorf("node: open store: %w", err)
	}
	n.bridge, err = bridge.New(bridge.Config{
		Store: n.store, Identity: n.id.user, Topic: n.cfg.Topic, Server: true, Host: host, Port: port,
		AllowedOrigins: n.cfg.AllowedOrigins, Limits: n.cfg.Limits, Functions: n.cfg.Functions,
		DisablePlumtree: n.cfg.DisablePlumtree, Logger: n.log.With("component", "bridge"),
	})
	if err != nil {
		return fmt.Errorf("node: message layer: %w", err)
	}
	if err := n.bridge.Start(ctx); err != nil {
		return fmt.Errorf("node: message layer: %w", err)
	}
	if err := n.startSwarm(ctx); err != nil {
		return err
	}
	if err := n.startMainline(ctx); err != nil {
		return err
	}
	n.startDNSDiscovery()
	n.startPeerDirectory()
	if n.wsLn != nil {
		n.serveWebSocket()
	}
	n.stop = make(chan struct{})
	if n.cache != nil {
		n.wg.Add(1)
		go n.saveCacheLoop()
	}
	if c := n.portmap.Load(); c != nil {
		n.wg.Add(1)
		go n.portMapLoop(c)
	}
	return nil
}

// internetNode says whether the node takes part in a DHT beyond its LAN:
// it was given bootstrap nodes or the mainline DHT. Only such a node keeps
// a node cache; a LAN-only node stays LAN-only across restarts.
func (n *Node) internetNode() bool { return len(n.cfg.Bootstrap) > 0 || len(n.cfg.Mainline) > 0 }

// startSwarm joins the topic through the configured bootstrap nodes and
// those cached by the last run.
func (n *Node) startSwarm(ctx context.Context) error {
	boot := n.cfg.Bootstrap
	if n.internetNode() {
		c, err := loadNodeCache(n.cfg.DataDir)
		if err != nil {
			n.log.Warn("node cache ignored", "err", err)
		}
		n.cache = &c
		boot = validAddrs(append(slices.Clone(boot), c.DHT...))
	}
	var err error
	// The swarm names its own log lines ("swarm: …") and gives its DHT and
	// hole punching their component: a component here would repeat the key.
	n.swarm, err = swarm.New(swarm.Config{
		Key: n.id.swarm, Net: n.cfg.Net, ListenAddr: n.cfg.ListenAddr, Bootstrap: boot,
		DHT:      dht.Config{WebSocketURL: n.cfg.PublicWebSocketURL, ListenAddr6: n.cfg.ListenAddr6},
		MaxPeers: n.cfg.MaxPeers, Firewall: n.cfg.Firewall, DisableLAN: n.cfg.DisableLAN,
		KeepLoopback: n.cfg.KeepLoopback, KeepFreedMemory: n.cfg.KeepFreedMemory,
		Session: n.cfg.Session, StaleAfter: n.cfg.StaleAfter,
		OnConnection: n.onConnection, OnDisconnect: n.onDisconnect,
		OnListen: n.startPortMap, Mapped: n.mappedUDP,
		// A LAN-only node has no DHT nodes to measure its NAT against.
		MonitorNAT: n.internetNode(), NATInterval: n.cfg.MonitorInterval, OnNATChange: n.cfg.OnNATChange,
		Logger: n.log,
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := n.swarm.Start(ctx); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.disc, err = n.swarm.Join(n.cfg.Topic, swarm.JoinOptions{Server: n.cfg.Server, Client: n.cfg.Client})
	if err != nil {
		return fmt.Errorf("node: join %q: %w", n.cfg.Topic, err)
	}
	return nil
}

// onConnection attaches a new swarm connection's stream 0 to the message
// layer. The dialling side pings first, as ToolDb's dialer does.
func (n *Node) onConnection(c *swarm.Conn, info swarm.PeerInfo) {
	remote := hex.EncodeToString(info.PublicKey)
	sc := bridge.NewStreamConn(c.Stream0(), remote, n.cfg.Limits.MaxMessageSize)
	peer, err := n.bridge.Attach(sc, bridge.AttachOptions{Initiator: info.Role == swarm.RoleClient, Kind: bridge.KindSwarm})
	if err != nil {
		n.log.Warn("attach swarm connection", "peer", remote[:8], "err", err)
		_ = c.Close()
		return
	}
	// When the message layer drops the peer (slow consumer, abuse, a
	// broken stream), close the whole connection: the swarm then
	// reconnects and the new connection starts with an anti-entropy
	// catch-up. Left open, the session would live on with no message
	// layer on it and nothing would flow over it again.
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		select {
		case <-peer.Done():
			n.log.Debug("message layer dropped a swarm peer; closing the connection", "peer", remote[:8], "err", peer.Err())
			_ = c.Close()
		case <-c.Done():
		}
	}()
	n.mu.Lock()
	if n.connectedAt == nil {
		n.connectedAt = make(map[*swarm.Conn]time.Time)
	}
	n.connectedAt[c] = time.Now()
	n.mu.Unlock()
	if f := n.cfg.OnPeerConnect; f != nil {
		f(PeerEvent{PublicKey: info.PublicKey, Path: info.Path, Remote: info.Remote, Role: string(info.Role), ConnectTime: info.ConnectTime})
	}
}

func (n *Node) onDisconnect(c *swarm.Conn, info swarm.PeerInfo, err error) {
	n.mu.Lock()
	delete(n.connectedAt, c)
	n.mu.Unlock()
	if f := n.cfg.OnPeerDisconnect; f != nil {
		f(PeerEvent{PublicKey: info.PublicKey, Path: info.Path, Remote: info.Remote, Role: string(info.Role), ConnectTime: info.ConnectTime, Err: err})
	}
}

// WebSocketAddr is the address the WebSocket server listens on (nil when
// it does not run).
func (n *Node) WebSocketAddr() net.Addr { return n.wsAddr }

// Close stops everything Start started, in reverse order. It is safe to
// call more than once.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	err := n.shutdown()
	if n.dir != nil {
		n.dir.release() // last: the store is closed
	}
	return err
}

func (n *Node) shutdown() error {
	var errs []error
	if n.stop != nil {
		close(n.stop)
	}
	if n.dnsdisc != nil {
		_ = n.dnsdisc.Close()
	}
	if n.dialer != nil {
		n.dialer.close()
	}
	if n.cache != nil && n.stop != nil { // a failed start leaves no file behind
		n.saveCache()
	}
	if n.mainline != nil {
		n.mainline.close()
	}
	n.closeHTTP()
	if n.peers != nil {
		n.peers.close()
	}
	if n.swarm != nil {
		errs = append(errs, n.swarm.Close())
	}
	n.closePortMap()
	if n.bridge != nil {
		errs = append(errs, n.bridge.Close())
	}
	n.wg.Wait()
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}

func (n *Node) ready() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return ErrClosed
	case !n.started || n.bridge == nil:
		return ErrNotStarted
	}
	return nil
}

// Put writes value (any JSON) under key as a record signed by the node's
// ToolDb account, stores it durably and replicates it to the peers. The
// outcome says whether it was stored or lost to a newer record.
func (n *Node) Put(ctx context.Context, key string, value []byte) (db.Outcome, error) {
	if err := n.ready(); err != nil {
		return 0, err
	}
	rec, err := n.id.user.NewRecord(key, value, "", time.Now(), 0)
	if err != nil {
		return 0, fmt.Errorf("node: put %q: %w", key, err)
	}
	return n.bridge.Put(ctx, rec)
}

// Get returns the record under key, asking the peers when it is not
// stored here.
func (n *Node) Get(ctx context.Context, key string) (db.Record, error) {
	if err := n.ready(); err != nil {
		return db.Record{}, err
	}
	return n.bridge.Get(ctx, key)
}

// Subscribe watches key (a ToolDb key; see db.Store.Watch for prefixes).
// Close the watcher when done.
func (n *Node) Subscribe(key string) (*db.Watcher, error) {
	if err := n.ready(); err != nil {
		return nil, err
	}
	return n.bridge.Subscribe(key), nil
}

// Query returns the stored keys that start with prefix.
func (n *Node) Query(prefix string) ([]string, error) {
	if err := n.ready(); err != nil {
		return nil, err
	}
	return n.bridge.Query(prefix)
}

// ConnectTo connects to an existing ToolDb (or swarmdb) WebSocket server
// and replicates with it.
func (n *Node) ConnectTo(ctx context.Context, host string, port int) error {
	if err := n.ready(); err != nil {
		return err
	}
	_, err := n.bridge.ConnectTo(ctx, host, port)
	return err
}

// Flush waits until the first announce and lookup of the topic are done and
// every peer found was tried.
func (n *Node) Flush(ctx context.Context) error {
	if err := n.ready(); err != nil {
		return err
	}
	return n.swarm.Flush(ctx)
}

// Stats is a snapshot of every component's counters.
type Stats struct {
	PublicKey string
	Address   string
	Swarm     swarm.Stats
	Bridge    bridge.Stats
	Store     db.Stats
}

// Stats returns a snapshot.
func (n *Node) Stats() Stats {
	s := Stats{PublicKey: hex.EncodeToString(n.PublicKey()), Address: n.Address()}
	if n.ready() != nil {
		return s
	}
	s.Swarm = n.swarm.Stats()
	s.Bridge = n.bridge.Stats()
	s.Store = n.store.Stats()
	return s
}
