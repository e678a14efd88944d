package node

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v2/stdnet"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/demux"
	"github.com/swarmdb/swarmdb/mainline"
	"github.com/swarmdb/swarmdb/natcheck/dhtprobe"
)

// The mainline part of a node: a mainline DHT node on the node's socket
// (package mainline), and the three jobs it does there.
//
//  1. discovery-channel's topic: look up SHA-1(topic) on a schedule and hand
//     every ToolDb server found to the server dialer; in server mode, when
//     the WebSocket is reachable where the DHT sees us, announce its port
//     there, as a ToolDb server's DC().join(topic, port) does.
//  2. The bootstrap name, as a publicly reachable node: announce the DHT
//     socket (implied port, so its public mapping) under
//     mainline.BootstrapInfohash.
//  3. The bootstrap name, as a node with no DHT to join: look the name up,
//     keep the candidates that answer a swarmdb DHT ping as persistent nodes
//     at their address (anyone can announce anything), and join through
//     them.

// Schedules. The lookups follow discovery-channel's pace once settled
// (10-15 min between rounds) but start fast, so that a ToolDb server that
// starts a minute after us is found within about a minute.
var topicLookupDelays = []time.Duration{
	5 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute,
}

const (
	// topicRefresh and topicJitter: the settled wait between topic rounds
	// is topicRefresh plus up to topicJitter (discovery-channel: 10-15 min).
	topicRefresh = 10 * time.Minute
	topicJitter  = 5 * time.Minute
	// reannounceAfter: once an announce reached a node, the next one waits
	// this long; rounds in between only look up. Stored peers live 30 min
	// on our nodes and forever on bittorrent-dht's by default.
	reannounceAfter = 10 * time.Minute
	// bootstrapNameRefresh is the wait between announces under the
	// bootstrap name (plus up to the same again as jitter).
	bootstrapNameRefresh = 15 * time.Minute
	// maxCandidates bounds the bootstrap candidates verified per round, and
	// verifyParallel the pings in flight.
	maxCandidates  = 64
	verifyParallel = 8
	// verifyTimeout bounds one candidate's verification.
	verifyTimeout = 3 * time.Second
	// joinCheckMin and joinCheckMax bound the wait between checks of
	// whether the DHT needs a bootstrap found by name (the wait doubles
	// while it keeps failing) and between checks of reachability.
	joinCheckMin = 2 * time.Second
	joinCheckMax = 2 * time.Minute
	// roundTimeout bounds one traversal: a mainline lookup on the internet
	// takes a few seconds; a stuck one must not stop the schedule.
	roundTimeout = 30 * time.Second
)

// topicDelay is the wait before topic round i+1: the fast start, then the
// settled pace with jitter (rnd in [0,1)).
func topicDelay(round int, rnd float64) time.Duration {
	if round < len(topicLookupDelays) {
		return topicLookupDelays[round]
	}
	return topicRefresh + time.Duration(rnd*float64(topicJitter))
}

// wsReachable decides whether the WebSocket server at ws can be announced
// under the topic, and at which port: a ToolDb client that finds the
// announce connects to the address the storing DHT node saw our announce
// come from (seen) at the announced port. That works when seen is an
// address of this host (no NAT in between) and the server listens there
// (on it, or on every interface), at ws's port; or when the router forwards
// a TCP port to the WebSocket (mapped, the external address of a port
// mapping) and seen is that mapping's address, at the mapped port. The
// reason says why not, for the log.
func wsReachable(ws netip.AddrPort, seen netip.Addr, local []netip.Addr, mapped netip.AddrPort) (uint16, string) {
	switch {
	case !ws.IsValid():
		return 0, "no websocket server"
	case !seen.IsValid():
		return 0, "the address the DHT sees is not known yet"
	case mapped.IsValid() && mapped.Addr() == seen:
		return mapped.Port(), ""
	case !slices.Contains(local, seen):
		return 0, fmt.Sprintf("behind NAT: the DHT sees %s, which is no address of this host, and no port mapping forwards to the websocket", seen)
	case !ws.Addr().IsUnspecified() && ws.Addr() != seen:
		return 0, fmt.Sprintf("the websocket listens on %s, not on %s where the DHT sees this node", ws.Addr(), seen)
	}
	return ws.Port(), ""
}

// MainlinePeer is a peer found on the mainline DHT or by discovery-channel's
// multicast DNS.
type MainlinePeer struct {
	Addr netip.AddrPort
	// Source is "dht" (the mainline DHT) or "mdns" (dns-discovery's
	// multicast DNS).
	Source string
	// Kind is "tooldb" (a ToolDb server's WebSocket, found under the topic)
	// or "swarmdb" (a swarmdb DHT node found under the bootstrap name and
	// verified).
	Kind string
}

// mainlineConfig is what the mainline part needs from its node.
type mainlineConfig struct {
	// Routers are the mainline nodes to start from (resolved), cached
	// mainline nodes included.
	Routers []netip.AddrPort
	// Topic is discovery-channel's topic; "" for none (a bootstrap node).
	Topic string
	// Server announces the WebSocket under the topic when reachable.
	Server bool
	// WebSocket is the WebSocket server's bound address; invalid for none.
	WebSocket netip.AddrPort
	// WebSocketMapped returns the external address of a router port
	// mapping to the WebSocket, or the zero value. Nil means none.
	WebSocketMapped func() netip.AddrPort
	// LocalIPs lists this host's addresses, for the reachability check.
	LocalIPs func() []netip.Addr
	// FoundServer receives every ToolDb server address found under the
	// topic (source "dht").
	FoundServer func(addr netip.AddrPort, source string)
	// OnPeer reports each newly verified bootstrap node (kind "swarmdb").
	OnPeer func(MainlinePeer)
	// Joining is called when nodes found under the bootstrap name were
	// added to the DHT's bootstrap nodes, before the join; Joined after
	// the DHT was joined through them.
	Joining func(ctx context.Context)
	Joined  func()
	Logger  *slog.Logger
}

// mainlinePart is a node's mainline DHT node and its loops.
type mainlinePart struct {
	// Immutable after newMainlinePart.
	cfg    mainlineConfig
	dn     *dht.Node
	ml     *mainline.Node
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// Guarded by mu.
	mu          sync.Mutex
	seen        map[MainlinePeer]bool // reported through OnPeer
	verified    []netip.AddrPort      // bootstrap nodes found by name that passed
	wsReason    string                // why the WebSocket is not announced; "" when it is
	announcedWS bool
	wsPort      uint16 // the port announced (the mapped one behind a router)

	topicRounds   atomic.Uint64
	candidates    atomic.Uint64 // found under the bootstrap name
	rejected      atomic.Uint64 // of them, failed verification
	joinsByName   atomic.Uint64 // DHT joins through nodes found by name
	nameAnnounces atomic.Uint64 // announces under the bootstrap name
}

// newMainlinePart builds the mainline node on dn's socket. start registers
// it for dn's KRPC datagrams; close removes it.
func newMainlinePart(dn *dht.Node, cfg mainlineConfig) (*mainlinePart, error) {
	ml, err := mainline.New(mainline.Config{
		Write:     dn.WritePacket,
		LocalAddr: dn.LocalAddr(),
		Routers:   cfg.Routers,
		ReadOnly:  !dn.Persistent(),
		Logger:    cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &mainlinePart{cfg: cfg, dn: dn, ml: ml, log: cfg.Logger, ctx: ctx, cancel: cancel,
		seen: make(map[MainlinePeer]bool)}, nil
}

func (m *mainlinePart) start() error {
	// mainline.Node.HandlePacket copies and never blocks, as a handler on
	// the DHT socket's read loop must.
	m.dn.Handle(demux.KRPC, m.ml.HandlePacket)
	if err := m.ml.Start(); err != nil {
		m.dn.Handle(demux.KRPC, nil)
		return err
	}
	m.wg.Add(1)
	go m.joinLoop()
	if m.cfg.Topic != "" {
		m.wg.Add(1)
		go m.topicLoop()
	}
	return nil
}

func (m *mainlinePart) close() {
	m.dn.Handle(demux.KRPC, nil)
	m.cancel()
	m.wg.Wait()
	_ = m.ml.Close()
}

// report tells OnPeer about p the first time it is found.
func (m *mainlinePart) report(p MainlinePeer) {
	m.mu.Lock()
	isNew := !m.seen[p]
	if isNew && len(m.seen) < 4096 {
		m.seen[p] = true
	}
	m.mu.Unlock()
	if isNew && m.cfg.OnPeer != nil {
		m.cfg.OnPeer(p)
	}
}

// sleep waits d or until the part closes; it reports whether to go on.
func (m *mainlinePart) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-m.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// topicLoop looks up (and, as a reachable server, announces) the topic's
// infohash on its schedule.
func (m *mainlinePart) topicLoop() {
	defer m.wg.Done()
	ih := mainline.TopicInfohash(m.cfg.Topic)
	var lastAnnounce time.Time
	for round := 0; ; round++ {
		var port uint16
		if m.cfg.Server {
			port = m.checkWebSocket()
		}
		announce := port != 0 && time.Since(lastAnnounce) >= reannounceAfter
		ctx, cancel := context.WithTimeout(m.ctx, roundTimeout)
		var res mainline.Result
		var err error
		if announce {
			res, err = m.ml.Announce(ctx, ih, int(port), false, m.foundServer)
			if err == nil && res.Responded > 0 {
				lastAnnounce = time.Now()
			}
		} else {
			_, err = m.ml.Lookup(ctx, ih, m.foundServer)
		}
		cancel()
		m.topicRounds.Add(1)
		if err != nil && m.ctx.Err() == nil {
			m.log.Debug("mainline topic round failed", "round", round, "err", err)
		}
		if !m.sleep(topicDelay(round, rand.Float64())) {
			return
		}
	}
}

// foundServer hands a peer found under the topic to FoundServer at once,
// unless it is our own announce.
func (m *mainlinePart) foundServer(p netip.AddrPort) {
	if !m.isSelf(p) && m.cfg.FoundServer != nil {
		m.cfg.FoundServer(p, "dht")
	}
}

// isSelf reports whether a peer found under the topic is our own announce.
func (m *mainlinePart) isSelf(p netip.AddrPort) bool {
	if mp := m.wsMapped(); mp.IsValid() && p == mp {
		return true
	}
	if !m.cfg.WebSocket.IsValid() || p.Port() != m.cfg.WebSocket.Port() {
		return false
	}
	return p.Addr() == m.seenAddr() || slices.Contains(m.cfg.LocalIPs(), p.Addr())
}

// seenAddr is the address the DHTs see this node at: what mainline nodes
// report, else what swarmdb DHT nodes report, else the socket's own
// address when it is bound to one.
func (m *mainlinePart) seenAddr() netip.Addr {
	if a := m.ml.PublicAddr(); a.IsValid() {
		return a.Addr()
	}
	if a := m.dn.PublicAddr(); a.IsValid() {
		return a.Addr()
	}
	if a := m.dn.LocalAddr().Addr(); a.IsValid() && !a.IsUnspecified() {
		return a
	}
	return netip.Addr{}
}

// checkWebSocket decides whether the WebSocket can be announced, returns
// the port to announce (0: not) and logs a change of the answer (with the
// reason when it cannot).
func (m *mainlinePart) checkWebSocket() uint16 {
	port, reason := wsReachable(m.cfg.WebSocket, m.seenAddr(), m.cfg.LocalIPs(), m.wsMapped())
	ok := port != 0
	m.mu.Lock()
	changed := ok != m.announcedWS || reason != m.wsReason || port != m.wsPort
	m.announcedWS, m.wsReason, m.wsPort = ok, reason, port
	m.mu.Unlock()
	if changed {
		if ok {
			m.log.Info("announcing the websocket on the mainline dht", "topic", m.cfg.Topic, "port", port)
		} else {
			m.log.Info("not announcing the websocket on the mainline dht", "reason", reason)
		}
	}
	return port
}

// wsMapped is the WebSocket's port-mapped address, or the zero value.
func (m *mainlinePart) wsMapped() netip.AddrPort {
	if m.cfg.WebSocketMapped == nil {
		return netip.AddrPort{}
	}
	return m.cfg.WebSocketMapped()
}

// joinLoop keeps the DHT joined and, once the node is publicly reachable,
// announces it under the bootstrap name.
func (m *mainlinePart) joinLoop() {
	defer m.wg.Done()
	wait := joinCheckMin
	var nextNameAnnounce time.Time
	for {
		if m.dn.Persistent() {
			m.ml.SetReachable(true, m.dn.PublicAddr().Addr())
			if time.Now().After(nextNameAnnounce) {
				if m.announceName() {
					nextNameAnnounce = time.Now().Add(bootstrapNameRefresh + rand.N(bootstrapNameRefresh))
				}
			}
		}
		switch {
		case m.dn.Stats().RoutingTable > 0:
			wait = joinCheckMin
		case m.joinByName():
			m.joinsByName.Add(1)
			if m.cfg.Joined != nil {
				m.cfg.Joined()
			}
			wait = joinCheckMin
		default:
			wait = min(2*wait, joinCheckMax)
		}
		if !m.sleep(wait) {
			return
		}
	}
}

// announceName announces the DHT socket under the bootstrap name with the
// implied port, so the stored address is the public mapping of the very
// socket the swarmdb DHT answers on.
func (m *mainlinePart) announceName() bool {
	ctx, cancel := context.WithTimeout(m.ctx, roundTimeout)
	defer cancel()
	res, err := m.ml.Announce(ctx, mainline.BootstrapInfohash, 0, true, nil)
	m.nameAnnounces.Add(1)
	if err != nil || res.Responded == 0 {
		m.log.Debug("announce under the bootstrap name failed", "err", err)
		return false
	}
	m.log.Info("announced as a swarmdb bootstrap node on the mainline dht", "name", mainline.BootstrapName)
	m.verifyAndKeep(ctx, res.Peers) // other bootstrap nodes: join them too
	return true
}

// joinByName looks up the bootstrap name, verifies the candidates and joins
// the DHT through those that pass. It reports whether the join worked.
func (m *mainlinePart) joinByName() bool {
	ctx, cancel := context.WithTimeout(m.ctx, roundTimeout)
	defer cancel()
	res, err := m.ml.Lookup(ctx, mainline.BootstrapInfohash, nil)
	if err != nil && len(res.Peers) == 0 {
		m.log.Debug("lookup of the bootstrap name failed", "err", err)
		return false
	}
	good := m.verifyAndKeep(ctx, res.Peers)
	if len(good) == 0 {
		return false
	}
	if m.cfg.Joining != nil {
		m.cfg.Joining(ctx)
	}
	if err := m.dn.Bootstrap(ctx); err != nil {
		m.log.Warn("joining the dht through nodes found on mainline failed", "nodes", len(good), "err", err)
		return false
	}
	m.log.Info("joined the dht through nodes found on the mainline dht", "nodes", len(good))
	return true
}

// verifyAndKeep verifies candidates (at most maxCandidates, verifyParallel
// at a time), adds those that pass to the DHT's bootstrap nodes and
// returns them.
func (m *mainlinePart) verifyAndKeep(ctx context.Context, candidates []netip.AddrPort) []netip.AddrPort {
	self := []netip.AddrPort{m.dn.LocalAddr(), m.dn.PublicAddr(), m.dn.LocalAddrIn(dht.IPv6), m.dn.PublicAddrIn(dht.IPv6)}
	var todo []netip.AddrPort
	for _, c := range candidates {
		if !slices.Contains(self, c) && len(todo) < maxCandidates {
			todo = append(todo, c)
		}
	}
	m.candidates.Add(uint64(len(todo)))
	var mu sync.Mutex
	var good []netip.AddrPort
	sem := make(chan struct{}, verifyParallel)
	var wg sync.WaitGroup
	for _, c := range todo {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			vctx, cancel := context.WithTimeout(ctx, verifyTimeout)
			err := m.dn.VerifyNode(vctx, c)
			cancel()
			if err != nil {
				m.rejected.Add(1)
				m.log.Debug("bootstrap candidate rejected", "addr", c, "err", err)
				return
			}
			mu.Lock()
			good = append(good, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(good) > 0 {
		m.dn.AddBootstrap(good...)
		m.mu.Lock()
		for _, g := range good {
			if !slices.Contains(m.verified, g) {
				m.verified = append(m.verified, g)
			}
		}
		m.mu.Unlock()
		for _, g := range good {
			m.report(MainlinePeer{Addr: g, Source: "dht", Kind: "swarmdb"})
		}
	}
	return good
}

// MainlineStats is the state of a node's mainline part.
type MainlineStats struct {
	mainline.Stats
	// Routers counts the nodes it starts from: the routers that resolved
	// and the mainline nodes cached by the last run.
	Routers int
	// TopicRounds counts lookups and announces of the topic's infohash.
	TopicRounds uint64
	// WebSocketAnnounced says whether the WebSocket is announced under the
	// topic; WebSocketReason says why not.
	WebSocketAnnounced bool
	WebSocketReason    string
	// Candidates found under the bootstrap name, Rejected of them.
	Candidates, Rejected uint64
	// JoinsByName counts DHT joins through nodes found by name;
	// NameAnnounces the announces under it.
	JoinsByName, NameAnnounces uint64
	// ServersLinked counts live links to ToolDb servers found by discovery.
	ServersLinked int
}

func (m *mainlinePart) stats() MainlineStats {
	m.mu.Lock()
	s := MainlineStats{Routers: len(m.cfg.Routers), WebSocketAnnounced: m.announcedWS, WebSocketReason: m.wsReason}
	m.mu.Unlock()
	s.Stats = m.ml.Stats()
	s.TopicRounds = m.topicRounds.Load()
	s.Candidates, s.Rejected = m.candidates.Load(), m.rejected.Load()
	s.JoinsByName, s.NameAnnounces = m.joinsByName.Load(), m.nameAnnounces.Load()
	return s
}

// resolveTimeout bounds the name resolution of the mainline routers.
const resolveTimeout = 10 * time.Second

// resolveRouters turns host:port strings into addresses: literals as they
// are, host names through the resolver, for the families dn has sockets
// of (AAAA records too with an IPv6 socket: the mainline node speaks BEP 32
// over both sockets). A name that does not resolve is logged and skipped;
// the cache may still hold enough nodes.
func resolveRouters(ctx context.Context, hostports []string, dn *dht.Node, log *slog.Logger) []netip.AddrPort {
	network := "ip4"
	if dn.LocalAddrIn(dht.IPv6).IsValid() {
		network = "ip"
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	var out []netip.AddrPort
	for _, hp := range hostports {
		if ap, err := netip.ParseAddrPort(hp); err == nil {
			out = append(out, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
			continue
		}
		host, portStr, err := net.SplitHostPort(hp)
		port, perr := strconv.ParseUint(portStr, 10, 16)
		if err != nil || perr != nil || port == 0 {
			log.Warn("mainline router ignored: want host:port", "router", hp)
			continue
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, network, host)
		if err != nil {
			log.Warn("mainline router does not resolve", "router", hp, "err", err)
			continue
		}
		for _, ip := range ips {
			out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(port)))
		}
	}
	return out
}

// startMainline starts the mainline part when Config.Mainline names
// routers, and the dialer of the ToolDb servers it finds.
func (n *Node) startMainline(ctx context.Context) error {
	dn := n.swarm.Node()
	if len(n.cfg.Mainline) == 0 || dn == nil {
		return nil
	}
	routers := resolveRouters(ctx, n.cfg.Mainline, dn, n.log)
	routers = validAddrs(append(routers, n.cache.Mainline...))
	if len(routers) == 0 {
		n.log.Warn("mainline dht: no router resolves and none is cached; the node only answers others")
	}
	n.startDialer()
	ws := n.wsAddrPort()
	tn := n.cfg.Net
	if tn == nil {
		tn, _ = stdnet.NewNet()
	}
	part, err := newMainlinePart(dn, mainlineConfig{
		Routers:         routers,
		Topic:           n.cfg.Topic,
		Server:          n.cfg.Server,
		WebSocket:       ws,
		WebSocketMapped: n.mappedWebSocket,
		LocalIPs:        func() []netip.Addr { return dhtprobe.LocalIPs(tn) },
		FoundServer:     n.serverFound,
		OnPeer:          n.cfg.OnMainlinePeer,
		Joining:         n.joiningByName,
		Joined:          n.joinedByName,
		Logger:          n.log.With("component", "mainline"),
	})
	if err != nil {
		return fmt.Errorf("node: mainline: %w", err)
	}
	if err := part.start(); err != nil {
		return fmt.Errorf("node: mainline: %w", err)
	}
	n.mainline = part
	return nil
}

// joiningByName measures the NAT against the nodes just found under the
// bootstrap name (the measurement joins the DHT through them). The one at
// the start had no DHT nodes to ask, and without a NAT type the punching
// that needs one (birthday punching) stays off and a symmetric NAT falls
// back to the relay; dials that start meanwhile wait for this one.
func (n *Node) joiningByName(ctx context.Context) {
	r, err := n.swarm.RemeasureNAT(ctx)
	if err != nil {
		n.log.Debug("nat measurement after joining by name failed", "err", err)
		return
	}
	n.log.Info("nat measured after joining the dht", "nat", r.Class, "public", r.PublicAddr)
}

// joinedByName follows a DHT join through nodes found under the bootstrap
// name: the swarm's NAT monitor learns the new measurement and the topic is
// announced and looked up at once.
func (n *Node) joinedByName() {
	n.swarm.WakeNATMonitor()
	if n.disc != nil {
		n.disc.Refresh()
	}
}

// MainlineStats is the state of the mainline part; ok is false when it is
// off or the node is not started.
func (n *Node) MainlineStats() (MainlineStats, bool) {
	if n.ready() != nil || n.mainline == nil {
		return MainlineStats{}, false
	}
	s := n.mainline.stats()
	if n.dialer != nil {
		s.ServersLinked = n.dialer.linked()
	}
	return s, true
}
