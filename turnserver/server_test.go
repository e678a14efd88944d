package turnserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/stun"
	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"
	"github.com/pion/turn/v2"

	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/testutil"
)

// turnTestWait bounds every wait of these tests: pion answers on loopback
// in well under a millisecond, so seconds mean something is stuck.
const turnTestWait = 10 * time.Second

func TestTURNCredentialsGolden(t *testing.T) {
	secret := []byte("north")
	now := time.Unix(1700000000, 0)
	user, pass, exp := Credentials(secret, "203.0.113.9", now, 10*time.Minute)
	// Reference values computed independently:
	//   printf '1700000600:203.0.113.9' | openssl dgst -sha1 -hmac north -binary | base64
	if user != "1700000600:203.0.113.9" || !exp.Equal(time.Unix(1700000600, 0)) {
		t.Fatalf("user %q expires %v", user, exp)
	}
	if pass != "4zMjSrstHwVtdBQ5cwNs5iewo4s=" {
		t.Fatalf("password %q", pass)
	}
	// A fractional expiry rounds up, so the credential never dies early.
	u2, _, exp2 := Credentials(secret, "x", now.Add(300*time.Millisecond), time.Second)
	if u2 != "1700000002:x" || exp2.Unix() != 1700000002 {
		t.Fatalf("rounding: %q %v", u2, exp2)
	}
}

func TestVerifyTURNCredentials(t *testing.T) {
	secret := []byte("secret")
	now := time.Unix(1700000000, 0)
	user, pass, _ := Credentials(secret, "tag:with:colons", now, time.Minute)
	cases := []struct {
		name       string
		user, pass string
		now        time.Time
		want       error
	}{
		{"valid", user, pass, now, nil},
		{"valid until the last second", user, pass, now.Add(59 * time.Second), nil},
		{"expired at expiry", user, pass, now.Add(time.Minute), ErrExpired},
		{"wrong password", user, pass[:len(pass)-2] + "A=", now, ErrCredentials},
		{"other secret", user, turnPassword([]byte("other"), user), now, ErrCredentials},
		{"tag changed", user + "x", pass, now, ErrCredentials},
		{"expiry changed", "1800000000:tag:with:colons", pass, now, ErrCredentials},
		{"no expiry", "alice", pass, now, ErrCredentials},
		{"negative expiry", "-5:x", pass, now, ErrCredentials},
		{"empty", "", "", now, ErrCredentials},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyCredentials(secret, tc.user, tc.pass, tc.now)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	exp, tag, err := ParseUsername(user)
	if err != nil || tag != "tag:with:colons" || exp.Unix() != now.Unix()+60 {
		t.Fatalf("parse: %v %q %v", exp, tag, err)
	}
}

// startTURN starts a loopback server and stops it (checking that Close
// returns) at the end of the test.
func startTURN(t *testing.T, cfg Config, setup ...func(*Server)) *Server {
	t.Helper()
	// Registered first, so it runs after every other cleanup of the test.
	testutil.CheckLeaks(t)
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	s := New(cfg)
	for _, f := range setup {
		f(s)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if st := s.Stats(); st.Allocations != 0 {
			t.Errorf("%d allocations live after Close", st.Allocations)
		}
	})
	return s
}

// turnClient is a pion TURN client on its own socket.
type turnClient struct {
	*turn.Client
	conn net.PacketConn
}

func newTURNClient(t *testing.T, nw transport.Net, local string, server netip.AddrPort, user, pass string) *turnClient {
	t.Helper()
	if nw == nil {
		var err error
		if nw, err = stdnet.NewNet(); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := nw.ListenPacket("udp4", local)
	if err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: server.String(),
		STUNServerAddr: server.String(),
		Conn:           conn,
		Net:            nw,
		Username:       user,
		Password:       pass,
		Realm:          DefaultRealm,
		RTO:            200 * time.Millisecond,
	})
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		conn.Close()
	})
	return &turnClient{Client: c, conn: conn}
}

// relayPair allocates on both clients, grants each the other's relay and
// checks that a datagram crosses the relay both ways.
func relayPair(t *testing.T, a, b *turnClient) (net.PacketConn, net.PacketConn) {
	t.Helper()
	ra, err := a.Allocate()
	if err != nil {
		t.Fatalf("allocate a: %v", err)
	}
	t.Cleanup(func() { ra.Close() })
	rb, err := b.Allocate()
	if err != nil {
		t.Fatalf("allocate b: %v", err)
	}
	t.Cleanup(func() { rb.Close() })
	if err := a.CreatePermission(rb.LocalAddr()); err != nil {
		t.Fatalf("permission a->b: %v", err)
	}
	if err := b.CreatePermission(ra.LocalAddr()); err != nil {
		t.Fatalf("permission b->a: %v", err)
	}
	exchange(t, ra, rb)
	exchange(t, rb, ra)
	return ra, rb
}

// exchange sends a datagram from one relay to the other and checks that it
// arrives intact from the sender's relayed address.
func exchange(t *testing.T, from, to net.PacketConn) {
	t.Helper()
	msg := []byte(fmt.Sprintf("sealed bytes from %s", from.LocalAddr()))
	buf := make([]byte, 1500)
	deadline := time.Now().Add(turnTestWait)
	for time.Now().Before(deadline) {
		if _, err := from.WriteTo(msg, to.LocalAddr()); err != nil {
			t.Fatalf("write: %v", err)
		}
		// UDP through a relay may drop a datagram; resend until one arrives.
		_ = to.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, src, err := to.ReadFrom(buf)
		if err != nil {
			continue
		}
		if !bytes.Equal(buf[:n], msg) || src.String() != from.LocalAddr().String() {
			t.Fatalf("got %q from %s, want %q from %s", buf[:n], src, msg, from.LocalAddr())
		}
		_ = to.SetReadDeadline(time.Time{})
		return
	}
	t.Fatalf("nothing crossed the relay from %s to %s", from.LocalAddr(), to.LocalAddr())
}

func TestTURNRelayLoopback(t *testing.T) {
	s := startTURN(t, Config{AllowPrivatePeers: true})
	if s.URL() != "turn:"+s.Addr().String()+"?transport=udp" || s.Addr() != s.LocalAddr() {
		t.Fatalf("addr %s url %s", s.Addr(), s.URL())
	}
	user, pass, _ := s.Credentials("a")
	a := newTURNClient(t, nil, "127.0.0.1:0", s.Addr(), user, pass)
	user, pass, _ = s.Credentials("b")
	b := newTURNClient(t, nil, "127.0.0.1:0", s.Addr(), user, pass)
	ra, _ := relayPair(t, a, b)
	if ip := ra.LocalAddr().(*net.UDPAddr).IP.String(); ip != "127.0.0.1" {
		t.Fatalf("relay address %s", ra.LocalAddr())
	}
	if st := s.Stats(); st.Allocations != 2 || st.Allocated != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTURNPublicIPAdvertised(t *testing.T) {
	// The relay binds on loopback but advertises the configured public IP,
	// as a node behind a 1:1 NAT (cloud VM) must.
	s := startTURN(t, Config{PublicIP: netip.MustParseAddr("198.51.100.7"), AllowPrivatePeers: true})
	if s.Addr().Addr().String() != "198.51.100.7" || s.Addr().Port() != s.LocalAddr().Port() {
		t.Fatalf("addr %s local %s", s.Addr(), s.LocalAddr())
	}
	user, pass, _ := s.Credentials("a")
	a := newTURNClient(t, nil, "127.0.0.1:0", s.LocalAddr(), user, pass)
	r, err := a.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if ip := r.LocalAddr().(*net.UDPAddr).IP.String(); ip != "198.51.100.7" {
		t.Fatalf("relayed address %s", r.LocalAddr())
	}

	if err := New(Config{ListenAddr: "0.0.0.0:0"}).Start(); !errors.Is(err, ErrNoPublicIP) {
		t.Fatalf("unspecified listen IP without PublicIP: %v", err)
	}
}

func TestTURNRefusesBadCredentials(t *testing.T) {
	s := startTURN(t, Config{AllowPrivatePeers: true})
	now := time.Now()
	user, pass, _ := s.Credentials("ok")
	expUser, expPass, _ := Credentials(s.cfg.Secret, "old", now.Add(-time.Hour), 10*time.Minute)
	otherUser, otherPass, _ := Credentials([]byte("not the secret"), "x", now, time.Minute)
	cases := []struct {
		name, user, pass string
	}{
		{"wrong password", user, wrongPassword(pass)},
		{"expired", expUser, expPass},
		{"other secret", otherUser, otherPass},
		{"not a REST username", "alice", "password"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newTURNClient(t, nil, "127.0.0.1:0", s.Addr(), tc.user, tc.pass)
			if r, err := c.Allocate(); err == nil {
				r.Close()
				t.Fatal("allocation granted")
			}
		})
	}
	st := s.Stats()
	if st.Allocated != 0 || st.RefusedExpired < 1 || st.RefusedAuth < 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTURNExpiredCredentialKeepsItsAllocation(t *testing.T) {
	var mu sync.Mutex
	clock := time.Now()
	s := startTURN(t, Config{AllowPrivatePeers: true, CredentialTTL: time.Minute}, func(s *Server) {
		s.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	})
	user, pass, _ := s.Credentials("a")
	a := newTURNClient(t, nil, "127.0.0.1:0", s.Addr(), user, pass)
	ra, err := a.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()

	mu.Lock()
	clock = clock.Add(2 * time.Minute) // the credential has expired
	mu.Unlock()
	// The allocating client may still refresh its permissions...
	if err := a.CreatePermission(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}); err != nil {
		t.Fatalf("refresh with an expired credential from its allocation: %v", err)
	}
	// ...but nobody may allocate with it.
	b := newTURNClient(t, nil, "127.0.0.1:0", s.Addr(), user, pass)
	if r, err := b.Allocate(); err == nil {
		r.Close()
		t.Fatal("new allocation with an expired credential")
	}
	if st := s.Stats(); st.Allocated != 1 || st.RefusedExpired < 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTURNLimits(t *testing.T) {
	t.Run("per IP", func(t *testing.T) {
		s := startTURN(t, Config{AllowPrivatePeers: true, MaxAllocationsPerIP: 2})
		user, pass, _ := s.Credentials("x")
		var relays []net.PacketConn
		for range 2 {
			r, err := newTURNClient(t, nil, "127.0.0.1:0", s.Addr(), user, pass).Allocate()
			if err != nil {
				t.Fatal(err)
			}
			relays = append(relays, r)
		}
		if r, err := newTURNClient(t, nil, "127.0.0.1:0", s.Addr(), user, pass).Allocate(); err == nil {
			r.Close()
			t.Fatal("third allocation from one IP granted")
		}
		// Another IP is not affected by the first IP's quota.
		r, err := newTURNClient(t, nil, "127.0.0.2:0", s.Addr(), user, pass).Allocate()
		if err != nil {
			t.Fatalf("other IP: %v", err)
		}
		defer r.Close()
		// Releasing an allocation (refresh with lifetime 0) frees its slot.
		relays[0].Close()
		testutil.Eventually(t, turnTestWait, func() bool { return s.Stats().Allocations == 2 }, "slot released") // pion's state: no event to wait on
		r2, err := newTURNClient(t, nil, "127.0.0.1:0", s.Addr(), user, pass).Allocate()
		if err != nil {
			t.Fatalf("after release: %v", err)
		}
		r2.Close()
		relays[1].Close()
		if st := s.Stats(); st.RefusedLimit != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("total", func(t *testing.T) {
		s := startTURN(t, Config{AllowPrivatePeers: true, MaxAllocations: 1})
		user, pass, _ := s.Credentials("x")
		r, err := newTURNClient(t, nil, "127.0.0.1:0", s.Addr(), user, pass).Allocate()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if r, err := newTURNClient(t, nil, "127.0.0.3:0", s.Addr(), user, pass).Allocate(); err == nil {
			r.Close()
			t.Fatal("allocation past MaxAllocations granted")
		}
		if st := s.Stats(); st.RefusedLimit != 1 || st.Allocations != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("lifetime cap", func(t *testing.T) {
		s := startTURN(t, Config{AllowPrivatePeers: true, MaxAllocationLifetime: 200 * time.Millisecond})
		user, pass, _ := s.Credentials("x")
		r, err := newTURNClient(t, nil, "127.0.0.1:0", s.Addr(), user, pass).Allocate()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		testutil.Eventually(t, turnTestWait, func() bool {
			st := s.Stats()
			return st.LifetimeCapped == 1 && st.Allocations == 0
		}, "allocation capped")
	})
	t.Run("private peers", func(t *testing.T) {
		s := startTURN(t, Config{})
		user, pass, _ := s.Credentials("x")
		c := newTURNClient(t, nil, "127.0.0.1:0", s.Addr(), user, pass)
		r, err := c.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for _, peer := range []string{"127.0.0.1", "10.1.2.3", "192.168.1.1", "169.254.1.1", "0.0.0.0"} {
			if err := c.CreatePermission(&net.UDPAddr{IP: net.ParseIP(peer), Port: 1}); err == nil {
				t.Errorf("permission for %s granted", peer)
			}
		}
		if err := c.CreatePermission(&net.UDPAddr{IP: net.ParseIP("198.51.100.1"), Port: 1}); err != nil {
			t.Errorf("public peer refused: %v", err)
		}
		if st := s.Stats(); st.RefusedPeer != 5 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestTURNCloseIdempotent(t *testing.T) {
	s := New(Config{ListenAddr: "127.0.0.1:0"})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); !errors.Is(err, ErrState) {
		t.Fatalf("start after close: %v", err)
	}
	s = New(Config{ListenAddr: "127.0.0.1:0"})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); !errors.Is(err, ErrState) {
		t.Fatalf("second start: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestTURNNATLabSymmetric: two hosts, each behind its own symmetric NAT
// (no direct path exists between them), exchange datagrams through a TURN
// server on a public lab host, with production settings (private peers
// refused). Every socket is opened inside its host's namespace through
// Host.Net, as the netcheck grid does. Root only.
func TestTURNNATLabSymmetric(t *testing.T) {
	lab := natlab.New(t)
	pub := lab.AddPublicHost("turn")
	a := lab.AddRouter(natlab.RouterConfig{Type: natlab.Symmetric}).AddHost("a")
	b := lab.AddRouter(natlab.RouterConfig{Type: natlab.Symmetric}).AddHost("b")

	s := startTURN(t, Config{Net: pub.Net(), ListenAddr: pub.IP().String() + ":3478"})
	if s.Addr().Addr() != pub.IP() || !pub.IP().Is4() || !netip.MustParsePrefix("203.0.113.0/24").Contains(pub.IP()) {
		t.Fatalf("server address %s, host %s", s.Addr(), pub.IP())
	}
	user, pass, _ := s.Credentials(a.Name())
	ca := newTURNClient(t, a.Net(), a.IP().String()+":0", s.Addr(), user, pass)
	user, pass, _ = s.Credentials(b.Name())
	cb := newTURNClient(t, b.Net(), b.IP().String()+":0", s.Addr(), user, pass)

	// The server sees each client at its NAT's public address.
	mapped, err := ca.SendBindingRequest()
	if err != nil {
		t.Fatal(err)
	}
	if ip := mapped.(*net.UDPAddr).IP.String(); ip != a.Router().PublicIP().String() {
		t.Fatalf("a seen at %s, NAT public IP %s", mapped, a.Router().PublicIP())
	}
	ra, rb := relayPair(t, ca, cb)
	for _, r := range []net.PacketConn{ra, rb} {
		if ip := r.LocalAddr().(*net.UDPAddr).IP.String(); ip != pub.IP().String() {
			t.Fatalf("relayed address %s, want the public host's IP %s", r.LocalAddr(), pub.IP())
		}
	}
	// A burst, to see the relay carry more than one datagram each way.
	for range 20 {
		exchange(t, ra, rb)
		exchange(t, rb, ra)
	}
	if st := s.Stats(); st.Allocations != 2 || st.RefusedPeer != 0 {
		t.Fatalf("stats %+v", st)
	}
	// The lead's path: relay-only ICE agents inside the two hosts.
	iceRelayConnect(t, s, a.Net(), b.Net())
}

// TestTURNICERelayOnly is the lead's use of the relay: two pion/ice agents
// restricted to relay candidates, with the server given as a
// "turn:IP:PORT?transport=udp" URL and a REST credential each, connect
// through it and carry data. It proves the server speaks what ice/v2's
// TURN client expects (allocation, permissions, channel binds).
func TestTURNICERelayOnly(t *testing.T) {
	s := startTURN(t, Config{AllowPrivatePeers: true})
	iceRelayConnect(t, s, nil, nil)
}

// iceRelayConnect connects two relay-only ICE agents (sockets from netA and
// netB; nil is the real network) through s and checks that data flows.
func iceRelayConnect(t *testing.T, s *Server, netA, netB transport.Net) {
	t.Helper()
	newAgent := func(tag string, nw transport.Net) *ice.Agent {
		url, err := stun.ParseURI(s.URL())
		if err != nil {
			t.Fatal(err)
		}
		url.Username, url.Password, _ = s.Credentials(tag)
		a, err := ice.NewAgent(&ice.AgentConfig{
			Urls:           []*stun.URI{url},
			NetworkTypes:   []ice.NetworkType{ice.NetworkTypeUDP4},
			CandidateTypes: []ice.CandidateType{ice.CandidateTypeRelay},
			Net:            nw,
		})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a, b := newAgent("a", netA), newAgent("b", netB)
	defer a.Close()
	defer b.Close()
	// Trickle each agent's candidates to the other.
	for _, pair := range [][2]*ice.Agent{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		if err := from.OnCandidate(func(c ice.Candidate) {
			if c == nil {
				return
			}
			if c.Type() != ice.CandidateTypeRelay || c.Address() != s.Addr().Addr().String() {
				t.Errorf("candidate %s", c)
			}
			if err := to.AddRemoteCandidate(c); err != nil {
				t.Errorf("add remote: %v", err)
			}
		}); err != nil {
			t.Fatal(err)
		}
		if err := from.GatherCandidates(); err != nil {
			t.Fatal(err)
		}
	}
	aUfrag, aPwd, _ := a.GetLocalUserCredentials()
	bUfrag, bPwd, _ := b.GetLocalUserCredentials()
	ctx, cancel := context.WithTimeout(context.Background(), turnTestWait)
	defer cancel()
	accepted := make(chan *ice.Conn, 1)
	go func() {
		c, err := b.Accept(ctx, aUfrag, aPwd)
		if err != nil {
			t.Errorf("accept: %v", err)
		}
		accepted <- c
	}()
	ca, err := a.Dial(ctx, bUfrag, bPwd)
	if err != nil {
		t.Fatal(err)
	}
	cb := <-accepted
	if cb == nil {
		t.FailNow()
	}
	pair, err := a.GetSelectedCandidatePair()
	if err != nil || pair.Local.Type() != ice.CandidateTypeRelay || pair.Remote.Type() != ice.CandidateTypeRelay {
		t.Fatalf("selected pair %v %v", pair, err)
	}
	msg := []byte("sealed datagram")
	// ice/v2's Read ignores deadlines: keep sending until one arrives, so a
	// lost datagram cannot hang the test.
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := ca.Write(msg); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { close(stop); <-sent }()
	buf := make([]byte, 1500)
	n, err := cb.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], msg) {
		t.Fatalf("read %q %v", buf[:n], err)
	}
	if st := s.Stats(); st.Allocations < 2 {
		t.Fatalf("stats %+v", st)
	}
}

// BenchmarkTURNRelayRoundTrip measures one 1200-byte datagram relayed A->B
// and back B->A through the server on loopback (two allocations, channel
// binds as pion's client makes them).
func BenchmarkTURNRelayRoundTrip(b *testing.B) {
	s := New(Config{ListenAddr: "127.0.0.1:0", AllowPrivatePeers: true})
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	relays := make([]net.PacketConn, 2)
	for i := range relays {
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		user, pass, _ := s.Credentials("bench")
		c, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: s.Addr().String(), STUNServerAddr: s.Addr().String(),
			Conn: conn, Username: user, Password: pass, Realm: DefaultRealm})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if err := c.Listen(); err != nil {
			b.Fatal(err)
		}
		if relays[i], err = c.Allocate(); err != nil {
			b.Fatal(err)
		}
		defer relays[i].Close()
	}
	ra, rb := relays[0], relays[1]
	msg := make([]byte, 1200)
	buf := make([]byte, 1500)
	// Each side's first write creates its permission for the other; then
	// retry a datagram each way until it lands.
	_, _ = ra.WriteTo(msg, rb.LocalAddr())
	_, _ = rb.WriteTo(msg, ra.LocalAddr())
	for _, p := range [][2]net.PacketConn{{ra, rb}, {rb, ra}} {
		for {
			_, _ = p[0].WriteTo(msg, p[1].LocalAddr())
			_ = p[1].SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if _, _, err := p[1].ReadFrom(buf); err == nil {
				break
			}
		}
	}
	// A datagram lost on loopback fails the run rather than hanging it.
	_ = ra.SetReadDeadline(time.Now().Add(time.Minute))
	_ = rb.SetReadDeadline(time.Now().Add(time.Minute))
	b.SetBytes(int64(2 * len(msg)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ra.WriteTo(msg, rb.LocalAddr()); err != nil {
			b.Fatal(err)
		}
		if _, _, err := rb.ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := rb.WriteTo(msg, ra.LocalAddr()); err != nil {
			b.Fatal(err)
		}
		if _, _, err := ra.ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// wrongPassword changes the first character of pass. (Changing the last
// character before the "=" padding can give back pass itself: for a 20-byte
// HMAC that character only has 16 possible values.)
func wrongPassword(pass string) string {
	c := byte('A')
	if pass[0] == 'A' {
		c = 'B'
	}
	return string(c) + pass[1:]
}
