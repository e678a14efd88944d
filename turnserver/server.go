package turnserver

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is what the TURN REST API draft and every TURN client use
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"
	"github.com/pion/turn/v2"

	"github.com/swarmdb/swarmdb/internal/pionlog"
	"github.com/swarmdb/swarmdb/internal/udpopt"
)

// Defaults of Config.
const (
	// DefaultRealm is the realm of the long-term credential mechanism.
	DefaultRealm = "swarmdb"
	// DefaultListen is the standard STUN/TURN port (RFC 8656 §4).
	DefaultListen = "0.0.0.0:3478"
	// DefaultCredentialTTL is how long issued credentials stay valid
	// for new allocations. Ten minutes covers a connect attempt with many
	// retries; a connection in use keeps its allocation past the expiry
	// (see Config.MaxAllocationLifetime).
	DefaultCredentialTTL = 10 * time.Minute
	// DefaultMaxAllocations bounds live allocations on one server: each
	// holds a socket and a goroutine, and a small public node serves other
	// duties too.
	DefaultMaxAllocations = 1000
	// DefaultMaxAllocationsPerIP bounds live allocations per client IP.
	// An ICE agent allocates once per TURN server and local socket; a few
	// hosts behind one NAT share an IP, so 16 leaves room for them while a
	// single flooder cannot take the whole server.
	DefaultMaxAllocationsPerIP = 16
	// DefaultMaxAllocationLifetime is the hard cap on one allocation,
	// refreshes included. After it the relay closes and the peers must
	// reconnect (an ICE restart with fresh credentials).
	DefaultMaxAllocationLifetime = time.Hour
)

// turnCloseWait bounds how long Close waits for pion's goroutines to see
// their sockets closed; they exit at the next read, which returns at once.
const turnCloseWait = 5 * time.Second

// Config configures a Server. The zero value listens on
// DefaultListen with a random secret, and needs PublicIP only when the
// listen IP is unspecified.
type Config struct {
	// Net opens the listening and relay sockets. Zero means the real
	// network (pion stdnet); tests pass a vnet or a natlab host's Net.
	Net transport.Net
	// ListenAddr is the UDP address clients send to. Zero means
	// DefaultListen. Relay sockets bind to the same IP, port 0.
	ListenAddr string
	// PublicIP is the relay address advertised to clients (XOR-RELAYED-
	// ADDRESS) and the IP of Addr. Zero means the listen IP; Start fails
	// with ErrNoPublicIP when that is unspecified too.
	PublicIP netip.Addr
	// Secret is the HMAC key shared with whoever issues credentials. Zero
	// means 32 random bytes (then only this process can issue, through
	// Credentials).
	Secret []byte
	// Realm is the long-term credential realm. Zero means DefaultRealm.
	Realm string
	// CredentialTTL is the validity of credentials from Credentials. Zero
	// means DefaultCredentialTTL.
	CredentialTTL time.Duration
	// MaxAllocations bounds live allocations. Zero means
	// DefaultMaxAllocations.
	MaxAllocations int
	// MaxAllocationsPerIP bounds live allocations per client IP (the NAT's
	// public IP). Zero means DefaultMaxAllocationsPerIP.
	MaxAllocationsPerIP int
	// MaxAllocationLifetime caps one allocation however often it is
	// refreshed. Zero means DefaultMaxAllocationLifetime.
	MaxAllocationLifetime time.Duration
	// AllowPrivatePeers lets clients relay to loopback, private (RFC 1918,
	// RFC 4193), link-local, unspecified and multicast peer addresses.
	// False (the default) refuses them, so a public relay cannot be used
	// to reach the networks behind its own host. Loopback tests set it.
	AllowPrivatePeers bool
	// Logger receives the server's logs (pion's included, at debug).
	// Zero means discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Net == nil {
		if n, err := stdnet.NewNet(); err == nil {
			c.Net = n
		}
	}
	if c.ListenAddr == "" {
		c.ListenAddr = DefaultListen
	}
	if len(c.Secret) == 0 {
		c.Secret = make([]byte, 32)
		_, _ = rand.Read(c.Secret)
	}
	if c.Realm == "" {
		c.Realm = DefaultRealm
	}
	if c.CredentialTTL == 0 {
		c.CredentialTTL = DefaultCredentialTTL
	}
	if c.MaxAllocations == 0 {
		c.MaxAllocations = DefaultMaxAllocations
	}
	if c.MaxAllocationsPerIP == 0 {
		c.MaxAllocationsPerIP = DefaultMaxAllocationsPerIP
	}
	if c.MaxAllocationLifetime == 0 {
		c.MaxAllocationLifetime = DefaultMaxAllocationLifetime
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Credentials issues a credential for the TURN REST API scheme: the
// username "<unix expiry>:<tag>" with expiry now+ttl (whole seconds, rounded
// up), and its password base64(HMAC-SHA1(secret, username)). Tag names the
// holder for logs (the DHT hook uses the requester's IP); it may contain
// colons. Pure: the same inputs always give the same credential.
func Credentials(secret []byte, tag string, now time.Time, ttl time.Duration) (user, pass string, expires time.Time) {
	exp := now.Add(ttl)
	if exp.Nanosecond() != 0 {
		exp = exp.Truncate(time.Second).Add(time.Second)
	}
	user = strconv.FormatInt(exp.Unix(), 10) + ":" + tag
	return user, turnPassword(secret, user), time.Unix(exp.Unix(), 0)
}

// Password returns the password of username under secret, or
// ErrCredentials if the username is malformed, or ErrExpired if its
// expiry is not after now. The server uses it to derive the long-term key
// (the client proves the password through MESSAGE-INTEGRITY).
func Password(secret []byte, username string, now time.Time) (string, error) {
	exp, _, err := ParseUsername(username)
	if err != nil {
		return "", err
	}
	if !now.Before(exp) {
		return "", fmt.Errorf("%w: expired %s", ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	return turnPassword(secret, username), nil
}

// VerifyCredentials checks a username and password pair under secret at
// now: nil, ErrCredentials or ErrExpired.
func VerifyCredentials(secret []byte, username, password string, now time.Time) error {
	want, err := Password(secret, username, now)
	if err != nil {
		return err
	}
	if !hmac.Equal([]byte(want), []byte(password)) {
		return fmt.Errorf("%w: password mismatch", ErrCredentials)
	}
	return nil
}

// ParseUsername splits a REST API username into its expiry and tag.
func ParseUsername(username string) (expires time.Time, tag string, err error) {
	ts, tag, ok := strings.Cut(username, ":")
	if !ok {
		return time.Time{}, "", fmt.Errorf("%w: username %q has no expiry", ErrCredentials, username)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, "", fmt.Errorf("%w: username %q has no expiry", ErrCredentials, username)
	}
	return time.Unix(sec, 0), tag, nil
}

func turnPassword(secret []byte, username string) string {
	m := hmac.New(sha1.New, secret)
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Stats is a snapshot of a Server's counters.
type Stats struct {
	Allocations    int    // live allocations
	Allocated      uint64 // allocations created since Start
	RefusedAuth    uint64 // requests with an unknown or malformed username
	RefusedExpired uint64 // requests with an expired username
	RefusedLimit   uint64 // allocations refused by a limit
	RefusedPeer    uint64 // permissions refused for a private peer address
	LifetimeCapped uint64 // allocations closed by MaxAllocationLifetime
}

// Server is a TURN relay (pion/turn) with time-limited REST API
// credentials, allocation limits, and every socket opened through
// Config.Net. New starts nothing; Start binds and serves; Close stops
// and waits for every goroutine.
type Server struct {
	// Immutable after New.
	cfg Config
	log *slog.Logger

	// Set by Start, immutable afterwards.
	pion   *turn.Server
	listen *turnListenConn
	addr   netip.AddrPort // advertised: PublicIP, bound port
	local  netip.AddrPort // bound

	// Guarded by mu.
	mu     sync.Mutex
	state  int // 0 new, 1 started, 2 closed
	allocs map[*relayConn]struct{}
	bySrc  map[netip.AddrPort]*relayConn // allocating client -> its allocation
	perIP  map[netip.Addr]int

	readers sync.WaitGroup // one per relay socket, until pion's reader of it returns

	now func() time.Time // immutable; time.Now outside tests

	allocated, refusedAuth, refusedExpired, refusedLimit, refusedPeer, capped atomic.Uint64
}

// New returns a server for cfg. It opens nothing.
func New(cfg Config) *Server {
	cfg = cfg.withDefaults()
	return &Server{
		cfg:    cfg,
		log:    cfg.Logger,
		allocs: make(map[*relayConn]struct{}),
		bySrc:  make(map[netip.AddrPort]*relayConn),
		perIP:  make(map[netip.Addr]int),
		now:    time.Now,
	}
}

// Start binds the listening socket and starts serving.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != 0 {
		return ErrState
	}
	if s.cfg.Net == nil {
		return fmt.Errorf("turnserver: no network")
	}
	pc, err := s.cfg.Net.ListenPacket("udp4", s.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("turnserver: listen %s: %w", s.cfg.ListenAddr, err)
	}
	ua, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok {
		pc.Close()
		return fmt.Errorf("turnserver: listen %s: not a UDP socket", s.cfg.ListenAddr)
	}
	s.local = udpopt.AddrPortOf(ua)
	pub := s.cfg.PublicIP.Unmap()
	if !pub.IsValid() {
		pub = s.local.Addr()
	}
	if !pub.IsValid() || pub.IsUnspecified() {
		pc.Close()
		return ErrNoPublicIP
	}
	s.addr = netip.AddrPortFrom(pub, s.local.Port())
	s.listen = &turnListenConn{PacketConn: pc, done: make(chan struct{})}
	relayIP := s.local.Addr().String()
	s.pion, err = turn.NewServer(turn.ServerConfig{
		Realm:         s.cfg.Realm,
		AuthHandler:   s.authenticate,
		LoggerFactory: pionlog.Factory(s.log),
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn:            s.listen,
			RelayAddressGenerator: &relayGenerator{srv: s, bindIP: relayIP, publicIP: net.IP(pub.AsSlice())},
			PermissionHandler:     s.permit,
		}},
	})
	if err != nil {
		pc.Close()
		return fmt.Errorf("turnserver: %w", err)
	}
	s.state = 1
	s.log.Info("turn relay serving", "addr", s.addr, "local", s.local)
	return nil
}

// Addr is the address clients use: PublicIP (or the listen IP) and the
// bound port. Valid after Start.
func (s *Server) Addr() netip.AddrPort { return s.addr }

// LocalAddr is the bound address of the listening socket. Valid after Start.
func (s *Server) LocalAddr() netip.AddrPort { return s.local }

// URL is the ICE server URL of Addr: "turn:IP:PORT?transport=udp".
func (s *Server) URL() string {
	return "turn:" + s.addr.String() + "?transport=udp"
}

// Credentials issues a credential valid for CredentialTTL from now (see
// Credentials).
func (s *Server) Credentials(tag string) (user, pass string, expires time.Time) {
	return Credentials(s.cfg.Secret, tag, s.now(), s.cfg.CredentialTTL)
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	live := len(s.allocs)
	s.mu.Unlock()
	return Stats{
		Allocations:    live,
		Allocated:      s.allocated.Load(),
		RefusedAuth:    s.refusedAuth.Load(),
		RefusedExpired: s.refusedExpired.Load(),
		RefusedLimit:   s.refusedLimit.Load(),
		RefusedPeer:    s.refusedPeer.Load(),
		LifetimeCapped: s.capped.Load(),
	}
}

// Close stops serving, closes every allocation and waits for pion's
// goroutines. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	state := s.state
	s.state = 2
	s.mu.Unlock()
	if state != 1 {
		return nil
	}
	err := s.pion.Close() // closes the listening socket: pion's read loop exits
	timer := time.NewTimer(turnCloseWait)
	defer timer.Stop()
	select {
	case <-s.listen.done:
	case <-timer.C:
		s.log.Warn("turn read loop did not stop")
	}
	// pion closes the allocations after its read loop; close them here too
	// so the wait below does not depend on its order.
	s.mu.Lock()
	live := make([]*relayConn, 0, len(s.allocs))
	for c := range s.allocs {
		live = append(live, c)
	}
	s.mu.Unlock()
	for _, c := range live {
		_ = c.Close()
	}
	done := make(chan struct{})
	go func() { s.readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-timer.C:
		s.log.Warn("turn relay readers did not stop")
	}
	return err
}

// authenticate is pion's AuthHandler: it returns the long-term key of a
// valid, unexpired username. An expired username is still accepted from
// the client address that allocated with it, so an allocation in use can
// refresh itself and its permissions until MaxAllocationLifetime; new
// allocations always need an unexpired one. It runs on pion's read loop.
func (s *Server) authenticate(username, realm string, src net.Addr) ([]byte, bool) {
	from := udpopt.AddrPortOf(src)
	pass, err := Password(s.cfg.Secret, username, s.now())
	if errors.Is(err, ErrExpired) {
		s.mu.Lock()
		c := s.bySrc[from]
		s.mu.Unlock()
		if c == nil || c.user != username {
			s.refusedExpired.Add(1)
			s.log.Debug("turn credentials expired", "addr", from, "user", username)
			return nil, false
		}
		pass, err = turnPassword(s.cfg.Secret, username), nil
	}
	if err != nil {
		s.refusedAuth.Add(1)
		s.log.Debug("turn credentials refused", "addr", from, "err", err)
		return nil, false
	}
	s.listen.setUser(from, username)
	return turn.GenerateAuthKey(username, realm, pass), true
}

// permit is pion's PermissionHandler: peers on the relay host's own kinds
// of networks are refused unless AllowPrivatePeers.
func (s *Server) permit(client net.Addr, peer net.IP) bool {
	ip, ok := netip.AddrFromSlice(peer)
	if !ok {
		s.refusedPeer.Add(1)
		return false
	}
	ip = ip.Unmap()
	if !s.cfg.AllowPrivatePeers && (ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() || ip.IsInterfaceLocalMulticast()) {
		s.refusedPeer.Add(1)
		s.log.Debug("turn permission refused", "addr", udpopt.AddrPortOf(client), "peer", ip)
		return false
	}
	return true
}

// allocate opens a relay socket for the client whose request pion is
// handling (known from the listening socket's last read: pion handles a
// datagram on the read loop before reading the next). Limits are checked
// here because pion offers no other hook that sees the client.
func (s *Server) allocate(network, bindIP string, publicIP net.IP, port int) (net.PacketConn, net.Addr, error) {
	src, user := s.listen.current()
	s.mu.Lock()
	switch {
	case s.state != 1:
		s.mu.Unlock()
		return nil, nil, ErrState
	case len(s.allocs) >= s.cfg.MaxAllocations || s.perIP[src.Addr()] >= s.cfg.MaxAllocationsPerIP:
		s.mu.Unlock()
		s.refusedLimit.Add(1)
		s.log.Debug("turn allocation refused", "addr", src, "err", ErrLimit)
		return nil, nil, ErrLimit
	}
	// Reserve the slot before opening the socket, so concurrent allocations
	// (one read loop per listener, but still) cannot pass the limit.
	c := &relayConn{srv: s, src: src, user: user}
	s.allocs[c] = struct{}{}
	s.bySrc[src] = c
	s.perIP[src.Addr()]++
	s.readers.Add(1)
	s.mu.Unlock()

	pc, err := s.cfg.Net.ListenPacket(network, net.JoinHostPort(bindIP, strconv.Itoa(port)))
	if err != nil {
		c.release()
		c.readerDone()
		return nil, nil, err
	}
	ua, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok {
		pc.Close()
		c.release()
		c.readerDone()
		return nil, nil, fmt.Errorf("turnserver: relay: not a UDP socket")
	}
	c.PacketConn = pc
	c.mu.Lock()
	c.timer = time.AfterFunc(s.cfg.MaxAllocationLifetime, func() {
		s.capped.Add(1)
		s.log.Debug("turn allocation reached its lifetime cap", "addr", src)
		_ = c.Close()
	})
	c.mu.Unlock()
	s.allocated.Add(1)
	relay := &net.UDPAddr{IP: publicIP, Port: ua.Port}
	s.log.Debug("turn allocation", "addr", src, "relay", relay, "user", user)
	return c, relay, nil
}

// relayGenerator is pion's RelayAddressGenerator: relay sockets come from
// Config.Net (so the server works on vnet and inside network
// namespaces) and are advertised at PublicIP.
type relayGenerator struct {
	srv      *Server
	bindIP   string
	publicIP net.IP
}

var _ turn.RelayAddressGenerator = (*relayGenerator)(nil)

func (g *relayGenerator) Validate() error { return nil }

func (g *relayGenerator) AllocatePacketConn(network string, port int) (net.PacketConn, net.Addr, error) {
	return g.srv.allocate(network, g.bindIP, g.publicIP, port)
}

func (g *relayGenerator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, fmt.Errorf("turnserver: TCP relays are not served")
}

// turnListenConn wraps the listening socket to remember which client the
// datagram pion is handling came from, and the username it authenticated
// with. pion's UDP read loop reads, handles and only then reads again, so
// the fields describe the request under way when the generator runs.
type turnListenConn struct {
	net.PacketConn
	done     chan struct{} // closed when a read fails (the loop exits)
	doneOnce sync.Once

	mu   sync.Mutex
	src  netip.AddrPort
	user string
}

func (l *turnListenConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := l.PacketConn.ReadFrom(b)
	if err != nil {
		l.doneOnce.Do(func() { close(l.done) })
		return n, addr, err
	}
	l.mu.Lock()
	l.src, l.user = udpopt.AddrPortOf(addr), ""
	l.mu.Unlock()
	return n, addr, nil
}

func (l *turnListenConn) setUser(src netip.AddrPort, user string) {
	l.mu.Lock()
	if l.src == src {
		l.user = user
	}
	l.mu.Unlock()
}

func (l *turnListenConn) current() (netip.AddrPort, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.src, l.user
}

// relayConn is one allocation's relay socket. Closing it (by pion, by the
// lifetime cap or by Close) releases the allocation's limit slots; pion's
// reader sees the closed socket and deletes the allocation.
type relayConn struct {
	net.PacketConn
	// Immutable after allocate returns.
	srv  *Server
	src  netip.AddrPort
	user string

	mu    sync.Mutex
	timer *time.Timer // guarded by mu: the lifetime cap

	closeOnce, readerOnce sync.Once
}

func (c *relayConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(b)
	if err != nil {
		// pion's packetHandler returns on any read error.
		c.readerDone()
	}
	return n, addr, err
}

func (c *relayConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.mu.Lock()
		if c.timer != nil {
			c.timer.Stop()
		}
		c.mu.Unlock()
		c.release()
		if c.PacketConn != nil {
			err = c.PacketConn.Close()
		}
	})
	return err
}

func (c *relayConn) readerDone() { c.readerOnce.Do(c.srv.readers.Done) }

func (c *relayConn) release() {
	s := c.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.allocs[c]; !ok {
		return
	}
	delete(s.allocs, c)
	if s.bySrc[c.src] == c {
		delete(s.bySrc, c.src)
	}
	if s.perIP[c.src.Addr()]--; s.perIP[c.src.Addr()] <= 0 {
		delete(s.perIP, c.src.Addr())
	}
}

var _ io.Closer = (*Server)(nil)
