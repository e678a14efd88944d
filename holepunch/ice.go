package holepunch

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/logging"
	"github.com/pion/stun" // ice/v2's config types use stun v0.6.1; keep it in this file
	"github.com/pion/transport/v2"

	"github.com/swarmdb/swarmdb/internal/demux"
)

// ICE tuning, measured in go-deps.md §2.5–2.6.
const (
	// iceCheckInterval: a connectivity check round every 10 ms. A check
	// that goes out before the peer has installed our candidates is only
	// answered in the next round, and pion's controlled agent connects on
	// its own check of a pair the peer nominated, at its next round: so the
	// interval is added to many connects. pion's default 200 ms, and 50 ms
	// made our median connect twice Hyperswarm's (bench/results/REPORT.md);
	// 20 ms left join→connected 2–3 ms behind it at RTT ≈0 and 20 ms (24
	// against 21, 85 against 82), 10 ms put it ahead (14 against 26, 75
	// against 81). RFC 8445 §14.2 allows a pace down to 5 ms.
	iceCheckInterval = 10 * time.Millisecond
	// iceMaxBindingRequests: keep checking a pair for 500 rounds (5 s)
	// before calling it failed. pion's default of 7 fails when the peer
	// starts its checks late (pitfall P2).
	iceMaxBindingRequests = 500
	// iceKeepalive, iceDisconnected, iceFailed: ICE's own liveness. The
	// secure session above has its own dead-peer detection (15 s); these
	// only need to keep the selected pair's NAT mappings warm and let a
	// dead agent go.
	iceKeepalive    = 2 * time.Second
	iceDisconnected = 5 * time.Second
	iceFailed       = 10 * time.Second
	// relayAcceptanceWait: in ModeRelay the relay pair may be nominated at
	// once, but a direct pair that succeeds within this long still wins.
	relayAcceptanceWait = 300 * time.Millisecond
	// gatherTimeout bounds local candidate gathering. Host candidates on a
	// mux are immediate; a TURN allocation takes a few round trips.
	gatherTimeout = 3 * time.Second
	// socketQueue is how many datagrams wait between the node's read loop
	// and the ICE mux before new ones are dropped (and counted).
	socketQueue = 4096
)

// Link is what the endpoint needs from the DHT node it runs on. It is
// implemented over *dht.Node by holepunch/dhtlink and by fakes in tests.
// Every method uses the node's UDP sockets (one per address family), so
// the addresses a peer learns through the DHT are the ones ICE punches.
type Link interface {
	// Register makes priv's key reachable: the DHT relays forward signaling
	// for it to this node. It returns the relays.
	Register(ctx context.Context, priv []byte) ([]netip.AddrPort, error)
	// FindRelays returns the relays of a key, looked up in the DHT.
	FindRelays(ctx context.Context, pub []byte) ([]netip.AddrPort, error)
	// Signal sends payload for the key pub through relay and returns the
	// answer.
	Signal(ctx context.Context, relay netip.AddrPort, pub []byte, payload []byte) ([]byte, error)
	// SetSignalHandler installs the endpoint's answer to signaling relayed
	// to us (h returns nil for no answer); nil removes it.
	SetSignalHandler(h func(from netip.AddrPort, payload []byte) []byte)
	// Handle makes h the handler of the datagrams of class c arriving on
	// the node's socket (demux.Birthday, demux.Sealed or demux.STUN); nil
	// removes it. The STUN handler gets what the node and the link's NAT
	// measurement leave: ICE checks and their responses. h runs on the
	// node's read loop and must not block or keep b.
	Handle(c demux.Class, h demux.Handler)
	// WritePacket sends a datagram from the node's socket.
	WritePacket(b []byte, to netip.AddrPort) error
	// LocalAddr is the bound address of the node's socket of its primary
	// family (IPv4, unless the node is IPv6-only); it may be unspecified.
	LocalAddr() netip.AddrPort
	// PublicAddr is the reflexive address peers report for that socket,
	// or the zero value.
	PublicAddr() netip.AddrPort
	// IPv6 is the node's IPv6 socket, if it has one besides LocalAddr's.
	IPv6() IPv6State
	// TURN returns a TURN server and credentials from a public node, or an
	// error when none offers one.
	TURN(ctx context.Context) (TURNServerInfo, error)
}

// FragmentFree is what a Link may also implement: DontFragment reports that
// its socket sends with the IP Don't Fragment bit, so a datagram too large for
// the path is lost, never fragmented. Sessions over such a link find the path
// MTU (secure.Config.PathMTUDiscovery); over any other they keep to 1200-byte
// packets.
type FragmentFree interface {
	DontFragment() bool
}

// SegmentLink is what a Link may also implement: WriteSegments sends b to
// `to` as datagrams of segSize bytes (the last one possibly shorter) with
// one system call where the kernel can (UDP segmentation offload). Sessions
// on routed paths then send their bursts that way (secure.SegmentWriter).
type SegmentLink interface {
	WriteSegments(b []byte, segSize int, to netip.AddrPort) error
}

// TURNServerInfo is a TURN server and short-lived credentials for it.
type TURNServerInfo struct {
	Addr     netip.AddrPort
	Username string
	Password string
}

// muxSocket is the net.PacketConn the ICE UDP mux reads from: datagrams
// come from the node's read loop through deliver, and writes go out through
// Link.WritePacket. It hands the mux *net.UDPAddr, which the mux requires.
type muxSocket struct {
	link  Link
	local *net.UDPAddr
	in    chan muxPacket
	done  chan struct{}
	once  sync.Once

	dropped atomic.Uint64 // datagrams lost to a full queue
}

type muxPacket struct {
	b    []byte
	from *net.UDPAddr
}

var _ net.PacketConn = (*muxSocket)(nil)

func newMuxSocket(link Link, local netip.AddrPort) *muxSocket {
	return &muxSocket{
		link:  link,
		local: net.UDPAddrFromAddrPort(local),
		in:    make(chan muxPacket, socketQueue),
		done:  make(chan struct{}),
	}
}

// deliver queues a copy of b. It never blocks: the node's read loop must
// keep serving the DHT when ICE falls behind.
func (s *muxSocket) deliver(b []byte, from netip.AddrPort) {
	p := muxPacket{b: append([]byte(nil), b...), from: net.UDPAddrFromAddrPort(from)}
	select {
	case s.in <- p:
	default:
		s.dropped.Add(1)
	}
}

func (s *muxSocket) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case pkt := <-s.in:
		return copy(p, pkt.b), pkt.from, nil
	case <-s.done:
		return 0, nil, net.ErrClosed
	}
}

func (s *muxSocket) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, net.InvalidAddrError("holepunch: not a UDP address")
	}
	ap := ua.AddrPort()
	if err := s.link.WritePacket(p, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *muxSocket) Close() error {
	s.once.Do(func() { close(s.done) })
	return nil
}

func (s *muxSocket) LocalAddr() net.Addr { return s.local }

// The mux never sets deadlines on its socket; these exist for the interface.
func (s *muxSocket) SetDeadline(time.Time) error      { return nil }
func (s *muxSocket) SetReadDeadline(time.Time) error  { return nil }
func (s *muxSocket) SetWriteDeadline(time.Time) error { return nil }

// agentConfig holds what newAgent needs beyond the shared mux.
type agentConfig struct {
	mux          ice.UDPMux
	networks     []ice.NetworkType // the families of the node's sockets
	net          transport.Net
	turn         *TURNServerInfo // non-nil: gather a relay candidate
	keepLoopback bool            // the node itself lives on loopback (tests)
	log          logging.LoggerFactory
}

// newAgent makes an ICE agent with the tuning above. Host candidates come
// from the shared mux; the server-reflexive address is not gathered by ICE
// (the DHT already knows it) but sent in the signaling, see localCandidates.
func newAgent(cfg agentConfig) (*ice.Agent, error) {
	types := []ice.CandidateType{ice.CandidateTypeHost}
	var urls []*stun.URI
	if cfg.turn != nil {
		types = append(types, ice.CandidateTypeRelay)
		urls = append(urls, &stun.URI{
			Scheme:   stun.SchemeTypeTURN,
			Host:     cfg.turn.Addr.Addr().String(),
			Port:     int(cfg.turn.Addr.Port()),
			Proto:    stun.ProtoTypeUDP,
			Username: cfg.turn.Username,
			Password: cfg.turn.Password,
		})
	}
	return ice.NewAgent(&ice.AgentConfig{
		Urls:                   urls,
		NetworkTypes:           cfg.networks,
		CandidateTypes:         types,
		UDPMux:                 cfg.mux,
		Net:                    cfg.net,
		MulticastDNSMode:       ice.MulticastDNSModeDisabled,
		CheckInterval:          dur(iceCheckInterval),
		MaxBindingRequests:     u16(iceMaxBindingRequests),
		KeepaliveInterval:      dur(iceKeepalive),
		DisconnectedTimeout:    dur(iceDisconnected),
		FailedTimeout:          dur(iceFailed),
		HostAcceptanceMinWait:  dur(0),
		SrflxAcceptanceMinWait: dur(0),
		PrflxAcceptanceMinWait: dur(0),
		RelayAcceptanceMinWait: dur(relayAcceptanceWait),
		IncludeLoopback:        cfg.keepLoopback,
		LoggerFactory:          cfg.log,
	})
}

func dur(d time.Duration) *time.Duration { return &d }
func u16(v uint16) *uint16               { return &v }

// gather collects the agent's local candidates (host, and relay when
// configured) and returns them in signaling form. Loopback and link-local
// addresses are dropped unless keepLoopback: a 0.0.0.0-bound mux advertises
// 127.0.0.1, which a remote peer must never try. IPv6 candidates are
// dropped unless ipv6 (the node has joined the IPv6 overlay).
func gather(ctx context.Context, a *ice.Agent, keepLoopback, ipv6 bool) ([]candidate, error) {
	var mu sync.Mutex
	var out []candidate
	complete := make(chan struct{})
	var once sync.Once
	err := a.OnCandidate(func(c ice.Candidate) {
		if c == nil {
			once.Do(func() { close(complete) })
			return
		}
		ip, err := netip.ParseAddr(c.Address())
		if err != nil || c.Port() <= 0 || c.Port() > 0xffff {
			return
		}
		ip = ip.Unmap()
		if !keepLoopback && (ip.IsLoopback() || ip.IsLinkLocalUnicast()) || ip.Is6() && !ipv6 {
			return
		}
		kind := candHost
		if c.Type() == ice.CandidateTypeRelay {
			kind = candRelay
		}
		mu.Lock()
		out = append(out, candidate{Kind: kind, Addr: netip.AddrPortFrom(ip, uint16(c.Port()))})
		mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	if err := a.GatherCandidates(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, gatherTimeout)
	defer cancel()
	select {
	case <-complete:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	mu.Lock()
	defer mu.Unlock()
	return out, nil
}

// addRemote hands the peer's candidates to the agent; IPv6 ones only when
// ipv6 (see gather).
func addRemote(a *ice.Agent, cands []candidate, ipv6 bool, log *slog.Logger) {
	for i, c := range cands {
		var (
			rc  ice.Candidate
			err error
		)
		if c.Addr.Addr().Is6() && !ipv6 {
			continue
		}
		ip, port := c.Addr.Addr().String(), int(c.Addr.Port())
		switch c.Kind {
		case candHost:
			rc, err = ice.NewCandidateHost(&ice.CandidateHostConfig{Network: "udp", Address: ip, Port: port, Component: ice.ComponentRTP, Foundation: foundation(i)})
		case candSrflx:
			rc, err = ice.NewCandidateServerReflexive(&ice.CandidateServerReflexiveConfig{Network: "udp", Address: ip, Port: port, Component: ice.ComponentRTP, Foundation: foundation(i)})
		case candRelay:
			rc, err = ice.NewCandidateRelay(&ice.CandidateRelayConfig{Network: "udp", Address: ip, Port: port, Component: ice.ComponentRTP, Foundation: foundation(i)})
		default:
			continue
		}
		if err == nil {
			err = a.AddRemoteCandidate(rc)
		}
		if err != nil {
			log.Debug("remote candidate refused", "addr", c.Addr, "err", err)
		}
	}
}

// foundation gives each remote candidate its own ICE foundation, so the
// agent checks every pair (RFC 8445 §5.1.1.3 freezes pairs that share one).
func foundation(i int) string { return "r" + string(rune('a'+i)) }

// selectedPath reports the path of the agent's selected pair.
func selectedPath(a *ice.Agent) (Path, netip.AddrPort) {
	pair, err := a.GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return PathDirect, netip.AddrPort{}
	}
	remote := netip.AddrPort{}
	if ip, err := netip.ParseAddr(pair.Remote.Address()); err == nil {
		remote = netip.AddrPortFrom(ip.Unmap(), uint16(pair.Remote.Port()))
	}
	switch {
	case pair.Local.Type() == ice.CandidateTypeRelay || pair.Remote.Type() == ice.CandidateTypeRelay:
		return PathRelay, remote
	case isPrivate(remote.Addr()), sameSubnet6(pair.Local.Address(), remote.Addr()):
		// By address, not candidate type: a check that arrives before the
		// peer's host candidate is added makes it peer-reflexive, though
		// it is the same LAN address.
		return PathLAN, remote
	}
	return PathDirect, remote
}

// isPrivate reports addresses that are only reachable inside a site:
// RFC 1918, loopback, link-local, RFC 6598 shared space and IPv6 ULA.
func isPrivate(ip netip.Addr) bool {
	return ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || cgnat.Contains(ip)
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// errAgentFailed is what a dial sees when ICE gave up on every pair.
var errAgentFailed = errors.New("ice: every candidate pair failed")
