package dnsdisc

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
)

// Group is the mDNS multicast group and port (RFC 6762).
var Group = netip.MustParseAddrPort("224.0.0.251:5353")

// DefaultQueryDelays is the wait before each query after the first, then
// DefaultQueryInterval between the rest (dns-discovery asks every 60-70 s;
// the fast start finds a peer that starts a little after us soon).
var DefaultQueryDelays = []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second}

// DefaultQueryInterval is dns-discovery's pace once settled.
const DefaultQueryInterval = 60 * time.Second

// Config configures a Node. Topic is required.
type Config struct {
	// Topic is discovery-channel's topic string.
	Topic string
	// Serve is the address to answer with (a ToolDb server's WebSocket):
	// its port, and its IP, or 0.0.0.0 (the answer's sender) for a server
	// on every interface. Zero means ask only.
	Serve netip.AddrPort
	// OnPeer is called for every peer an answer names (repeatedly: every
	// answer to every query). It runs on the read loop: do not block.
	OnPeer func(netip.AddrPort)
	// QueryDelays and QueryInterval set the query schedule. Zero means the
	// defaults.
	QueryDelays   []time.Duration
	QueryInterval time.Duration
	// Logger receives the node's logs. Zero means discard.
	Logger *slog.Logger
}

// Node asks and answers dns-discovery's question for one topic.
type Node struct {
	// Immutable after New.
	cfg    Config
	name   string
	secret []byte
	log    *slog.Logger

	// Set by Start.
	conn   net.PacketConn
	pc     *ipv4.PacketConn
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closeOnce sync.Once
	queries   atomic.Uint64
	answers   atomic.Uint64 // we sent
	found     atomic.Uint64 // peers reported
	malformed atomic.Uint64
}

// New returns a node. It opens nothing.
func New(cfg Config) (*Node, error) {
	if cfg.Topic == "" {
		return nil, errors.New("dnsdisc: Topic is required")
	}
	if cfg.QueryDelays == nil {
		cfg.QueryDelays = DefaultQueryDelays
	}
	if cfg.QueryInterval <= 0 {
		cfg.QueryInterval = DefaultQueryInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	return &Node{cfg: cfg, name: Name(cfg.Topic), secret: secret, log: cfg.Logger}, nil
}

// Start binds the mDNS port (shared with other mDNS responders on the host:
// SO_REUSEADDR), joins the group on every up multicast interface and starts
// asking.
func (n *Node) Start() error {
	lc := net.ListenConfig{Control: reuseAddr}
	conn, err := lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("0.0.0.0:%d", Group.Port()))
	if err != nil {
		return fmt.Errorf("dnsdisc: listen: %w", err)
	}
	pc := ipv4.NewPacketConn(conn)
	joined := 0
	ifaces, _ := net.Interfaces()
	for i := range ifaces {
		ifi := &ifaces[i]
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagMulticast == 0 {
			continue
		}
		if pc.JoinGroup(ifi, &net.UDPAddr{IP: Group.Addr().AsSlice()}) == nil {
			joined++
		}
	}
	if joined == 0 {
		conn.Close()
		return fmt.Errorf("dnsdisc: no multicast interface joined %s", Group.Addr())
	}
	_ = pc.SetMulticastLoopback(true) // peers on this host answer too
	_ = pc.SetMulticastTTL(255)       // RFC 6762 §11
	ctx, cancel := context.WithCancel(context.Background())
	n.conn, n.pc, n.cancel = conn, pc, cancel
	n.wg.Add(2)
	go n.readLoop()
	go n.queryLoop(ctx)
	n.log.Info("dns-discovery started", "name", n.name, "serve", n.cfg.Serve, "interfaces", joined)
	return nil
}

// reuseAddr lets this socket share port 5353 with other mDNS responders
// (Avahi, multicast-dns with reuseAddr), as they share it with us.
func reuseAddr(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	})
	return errors.Join(err, serr)
}

// Close stops the node. Idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		if n.conn != nil {
			n.cancel()
			_ = n.conn.Close()
		}
	})
	n.wg.Wait()
	return nil
}

func (n *Node) queryLoop(ctx context.Context) {
	defer n.wg.Done()
	for i := 0; ; i++ {
		n.query()
		wait := n.cfg.QueryInterval
		if i < len(n.cfg.QueryDelays) {
			wait = n.cfg.QueryDelays[i]
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (n *Node) query() {
	b, err := AppendQuery(nil, n.name)
	if err != nil {
		return
	}
	if _, err := n.conn.WriteTo(b, net.UDPAddrFromAddrPort(Group)); err != nil {
		n.log.Debug("dns-discovery query not sent", "err", err)
		return
	}
	n.queries.Add(1)
}

func (n *Node) readLoop() {
	defer n.wg.Done()
	buf := make([]byte, 9000)
	for {
		nr, from, err := n.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		n.handle(buf[:nr], netip.AddrPortFrom(ua.AddrPort().Addr().Unmap(), ua.AddrPort().Port()))
	}
}

// handle answers a question for our name (in server mode) and reports the
// peers an answer names, except in our own answers.
func (n *Node) handle(b []byte, from netip.AddrPort) {
	m, err := Parse(b, n.name, from.Addr())
	switch {
	case errors.Is(err, ErrNotOurs):
		return
	case err != nil:
		n.malformed.Add(1)
		return
	}
	if m.Asked && n.cfg.Serve.IsValid() {
		n.answer(from)
	}
	if m.Token != "" && m.Token == Token(n.secret, from.Addr()) {
		return // our own answer, looped back
	}
	for _, p := range m.Peers {
		n.found.Add(1)
		if n.cfg.OnPeer != nil {
			n.cfg.OnPeer(p)
		}
	}
}

// answer sends our answer to the group at the querier's port, as
// dns-discovery does (the querier listens on the group at that port).
func (n *Node) answer(querier netip.AddrPort) {
	b, err := AppendAnswer(nil, n.name, Token(n.secret, querier.Addr()), n.cfg.Serve)
	if err != nil {
		return
	}
	to := netip.AddrPortFrom(Group.Addr(), querier.Port())
	if _, err := n.conn.WriteTo(b, net.UDPAddrFromAddrPort(to)); err == nil {
		n.answers.Add(1)
	}
}

// Stats counts the node's traffic.
type Stats struct {
	Queries, Answers, PeersFound, Malformed uint64
}

// Stats returns a snapshot.
func (n *Node) Stats() Stats {
	return Stats{Queries: n.queries.Load(), Answers: n.answers.Load(), PeersFound: n.found.Load(), Malformed: n.malformed.Load()}
}
