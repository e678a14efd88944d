package holepunch

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

var testSecret = [BirthdaySecretSize]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}

func TestBirthdayGolden(t *testing.T) {
	for _, c := range []struct {
		kind BirthdayKind
		hex  string
	}{
		{BirthdayProbe, "b1" + "000102030405060708090a0b0c0d0e0f" + "01"},
		{BirthdayAck, "b1" + "000102030405060708090a0b0c0d0e0f" + "02"},
	} {
		t.Run(c.kind.String(), func(t *testing.T) {
			p := BirthdayPacket{Kind: c.kind, Secret: testSecret}
			got := hex.EncodeToString(p.Append([]byte{}))
			if got != c.hex {
				t.Fatalf("Append = %s, want %s", got, c.hex)
			}
			b, _ := hex.DecodeString(c.hex)
			if !IsBirthday(b) {
				t.Fatalf("IsBirthday(%s) = false", c.hex)
			}
			back, err := ParseBirthday(b)
			if err != nil || back != p {
				t.Fatalf("ParseBirthday = %+v, %v; want %+v", back, err, p)
			}
			if !back.Matches(testSecret) || back.Matches([BirthdaySecretSize]byte{1}) {
				t.Fatal("Matches does not compare the secret")
			}
		})
	}
}

func TestParseBirthdayRejects(t *testing.T) {
	good := BirthdayPacket{Kind: BirthdayProbe, Secret: testSecret}.Append(nil)
	with := func(i int, v byte) []byte { b := slices.Clone(good); b[i] = v; return b }
	for name, b := range map[string][]byte{
		"empty":      nil,
		"short":      good[:BirthdayPacketSize-1],
		"long":       append(slices.Clone(good), 0),
		"stun tag":   with(0, 0x00),
		"dht tag":    with(0, 0x5A),
		"sealed tag": with(0, 0xE5),
		"kind 0":     with(BirthdayPacketSize-1, 0),
		"kind 3":     with(BirthdayPacketSize-1, 3),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseBirthday(b); !errors.Is(err, ErrBirthdayPacket) {
				t.Fatalf("ParseBirthday(%x) error = %v, want ErrBirthdayPacket", b, err)
			}
		})
	}
}

func FuzzParseBirthday(f *testing.F) {
	f.Add(BirthdayPacket{Kind: BirthdayProbe, Secret: testSecret}.Append(nil))
	f.Add(BirthdayPacket{Kind: BirthdayAck}.Append(nil))
	f.Add([]byte{0xB1})
	f.Add([]byte{0x5A, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseBirthday(b)
		if err != nil {
			if !errors.Is(err, ErrBirthdayPacket) {
				t.Fatalf("error %v is not ErrBirthdayPacket", err)
			}
			return
		}
		if !IsBirthday(b) {
			t.Fatalf("parsed %x but IsBirthday is false", b)
		}
		if enc := p.Append(nil); string(enc) != string(b) {
			t.Fatalf("round trip %x -> %+v -> %x", b, p, enc)
		}
	})
}

func TestPortSamplerDrawsEveryPortOncePerRound(t *testing.T) {
	r := PortRange{Lo: 40000, Hi: 40099}
	s := newPortSampler(r, mrand.New(mrand.NewPCG(1, 2)))
	for round := range 3 {
		seen := make(map[uint16]bool)
		for range r.size() {
			p := s.next()
			if p < r.Lo || p > r.Hi {
				t.Fatalf("round %d: port %d outside %d-%d", round, p, r.Lo, r.Hi)
			}
			if seen[p] {
				t.Fatalf("round %d: port %d drawn twice", round, p)
			}
			seen[p] = true
		}
		if len(s.swap) > r.size() {
			t.Fatalf("swap map holds %d entries for %d ports", len(s.swap), r.size())
		}
	}
	one := newPortSampler(PortRange{Lo: 7, Hi: 7}, mrand.New(mrand.NewPCG(1, 2)))
	if a, b := one.next(), one.next(); a != 7 || b != 7 {
		t.Fatalf("one-port range drew %d, %d", a, b)
	}
	full := newPortSampler(PortRange{Lo: 1, Hi: 65535}, mrand.New(mrand.NewPCG(3, 4)))
	if full.n != 65535 {
		t.Fatalf("full range has %d ports", full.n)
	}
	for range 1000 {
		if p := full.next(); p == 0 {
			t.Fatal("drew port 0")
		}
	}
}

func TestProbeTick(t *testing.T) {
	for _, c := range []struct {
		rate int
		tick time.Duration
	}{
		{1, time.Second},
		{100, 10 * time.Millisecond},
		{200, 5 * time.Millisecond},
		{1000, 5 * time.Millisecond},
	} {
		if tick := probeTick(c.rate); tick != c.tick {
			t.Errorf("probeTick(%d) = %v, want %v", c.rate, tick, c.tick)
		}
	}
}

func TestProbesDue(t *testing.T) {
	for _, c := range []struct {
		elapsed      time.Duration
		rate, issued int
		want         int
	}{
		{0, 200, 0, 0},
		{5 * time.Millisecond, 200, 0, 1},
		{5 * time.Millisecond, 1000, 0, 5},
		{5 * time.Millisecond, 333, 0, 1},               // 1.665 due: the rest comes at the next tick
		{10 * time.Millisecond, 333, 1, 2},              // 3.33 due
		{100 * time.Millisecond, 200, 15, 5},            // late ticks: catch up
		{time.Second, 200, 20, maxProbeBurst},           // a long stall: at most a burst per tick
		{time.Second, 200, 200, 0},                      // on time
		{10 * time.Millisecond, 200, 5, 0},              // ahead
		{15 * time.Second, 1_000_000, 0, maxProbeBurst}, // no overflow at absurd rates
	} {
		if got := probesDue(c.elapsed, c.rate, c.issued); got != c.want {
			t.Errorf("probesDue(%v, %d/s, %d issued) = %d, want %d", c.elapsed, c.rate, c.issued, got, c.want)
		}
	}
}

// TestPunchEasyKeepsRateThroughStalls: when the easy side's goroutine is
// held back (here its first send blocks for 400 ms, and the ticks it misses
// are dropped), it makes the probes up afterwards, so the budget is spent
// in budget/rate, not later.
func TestPunchEasyKeepsRateThroughStalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var sends int
		start := time.Now()
		_, err := PunchEasy(t.Context(), EasyConfig{
			Send: func([]byte, netip.AddrPort) error {
				if sends++; sends == 1 {
					time.Sleep(400 * time.Millisecond)
				}
				return nil
			},
			Packets:   make(chan Datagram),
			HardIP:    netip.MustParseAddr("203.0.113.9"),
			Secret:    testSecret,
			Rate:      200,
			MaxProbes: 200,
		})
		if !errors.Is(err, ErrPunchBudget) || sends != 200 {
			t.Fatalf("err = %v after %d probes, want ErrPunchBudget after 200", err, sends)
		}
		// 200 probes at 200/s take 1 s, then the ack grace.
		if took, want := time.Since(start), time.Second+birthdayAckGrace; took > want+10*time.Millisecond {
			t.Errorf("budget spent and grace over after %v, want %v", took, want)
		}
	})
}

func TestBirthdayConfigErrors(t *testing.T) {
	ctx := context.Background()
	packets := make(chan Datagram)
	okEasy := EasyConfig{Send: func([]byte, netip.AddrPort) error { return nil }, Packets: packets,
		HardIP: netip.MustParseAddr("203.0.113.5"), Secret: testSecret}
	for name, mod := range map[string]func(*EasyConfig){
		"no send":     func(c *EasyConfig) { c.Send = nil },
		"no packets":  func(c *EasyConfig) { c.Packets = nil },
		"no hard ip":  func(c *EasyConfig) { c.HardIP = netip.Addr{} },
		"zero secret": func(c *EasyConfig) { c.Secret = [BirthdaySecretSize]byte{} },
		"bad range":   func(c *EasyConfig) { c.PortRange = PortRange{Lo: 9, Hi: 8} },
		"port 0":      func(c *EasyConfig) { c.PortRange = PortRange{Lo: 0, Hi: 8} },
		"neg rate":    func(c *EasyConfig) { c.Rate = -1 },
	} {
		t.Run("easy/"+name, func(t *testing.T) {
			c := okEasy
			mod(&c)
			if _, err := PunchEasy(ctx, c); !errors.Is(err, ErrBirthdayConfig) {
				t.Fatalf("err = %v, want ErrBirthdayConfig", err)
			}
		})
	}
	okHard := HardConfig{Easy: netip.MustParseAddrPort("203.0.113.5:4000"), Secret: testSecret}
	for name, mod := range map[string]func(*HardConfig){
		"no easy":      func(c *HardConfig) { c.Easy = netip.AddrPort{} },
		"zero secret":  func(c *HardConfig) { c.Secret = [BirthdaySecretSize]byte{} },
		"too many":     func(c *HardConfig) { c.Sockets = MaxHardSockets + 1 },
		"neg sockets":  func(c *HardConfig) { c.Sockets = -1 },
		"neg interval": func(c *HardConfig) { c.Interval = -time.Second },
		"mixed family": func(c *HardConfig) { c.LocalIP = netip.MustParseAddr("::1") },
		"v4 local, v6": func(c *HardConfig) {
			c.Easy = netip.MustParseAddrPort("[2001:db8::1]:4000")
			c.LocalIP = netip.MustParseAddr("192.0.2.1")
		},
	} {
		t.Run("hard/"+name, func(t *testing.T) {
			c := okHard
			mod(&c)
			if _, _, err := PunchHard(ctx, c); !errors.Is(err, ErrBirthdayConfig) {
				t.Fatalf("err = %v, want ErrBirthdayConfig", err)
			}
		})
	}
}

// TestEasyPunchCore drives the easy side's pure core: the search stays in
// the range and the budget, a probe from a hard socket is answered once
// (and costs budget), foreign and malformed datagrams do nothing, and an
// ack with the secret wins.
func TestEasyPunchCore(t *testing.T) {
	hardIP := netip.MustParseAddr("203.0.113.9")
	p := newEasyPunch(EasyConfig{HardIP: hardIP, Secret: testSecret, MaxProbes: 10,
		PortRange: PortRange{Lo: 2000, Hi: 2099}}, mrand.New(mrand.NewPCG(7, 8)))
	got := p.next(nil, 4)
	if len(got) != 4 || p.sent != 4 || p.spent() {
		t.Fatalf("next(4) = %v, sent %d", got, p.sent)
	}
	for _, a := range got {
		if a.Addr() != hardIP || a.Port() < 2000 || a.Port() > 2099 {
			t.Fatalf("probe to %v", a)
		}
	}
	hardSock := netip.MustParseAddrPort("203.0.113.9:555")
	probe := BirthdayPacket{Kind: BirthdayProbe, Secret: testSecret}.Append(nil)
	ack := BirthdayPacket{Kind: BirthdayAck, Secret: testSecret}.Append(nil)
	foreign := BirthdayPacket{Kind: BirthdayAck, Secret: [BirthdaySecretSize]byte{1}}.Append(nil)
	for _, c := range []struct {
		name        string
		d           Datagram
		won, answer netip.AddrPort
	}{
		{"foreign ack", Datagram{B: foreign, From: hardSock}, netip.AddrPort{}, netip.AddrPort{}},
		{"garbage", Datagram{B: []byte{BirthdayTag, 1}, From: hardSock}, netip.AddrPort{}, netip.AddrPort{}},
		{"hard probe", Datagram{B: probe, From: hardSock}, netip.AddrPort{}, hardSock},
		{"hard probe again", Datagram{B: probe, From: hardSock}, netip.AddrPort{}, netip.AddrPort{}},
		{"ack", Datagram{B: ack, From: hardSock}, hardSock, netip.AddrPort{}},
	} {
		won, answer := p.receive(c.d)
		if won != c.won || answer != c.answer {
			t.Fatalf("%s: receive = %v, %v; want %v, %v", c.name, won, answer, c.won, c.answer)
		}
	}
	if p.sent != 5 {
		t.Fatalf("sent = %d after one answer, want 5", p.sent)
	}
	if rest := p.next(nil, 100); len(rest) != 5 || !p.spent() {
		t.Fatalf("next(100) gave %d probes (budget left 5), spent %t", len(rest), p.spent())
	}
	if more := p.next(nil, 1); len(more) != 0 {
		t.Fatalf("probes beyond the budget: %v", more)
	}
}

// TestHardConfigLocalIP: an unspecified bind address of either family
// (a shared socket on "::") becomes "any" of Easy's family.
func TestHardConfigLocalIP(t *testing.T) {
	for _, c := range []struct{ local, easy, want string }{
		{"", "203.0.113.5:4000", "0.0.0.0"},
		{"::", "203.0.113.5:4000", "0.0.0.0"},
		{"0.0.0.0", "[2001:db8::1]:4000", "::"},
		{"::ffff:10.0.0.2", "203.0.113.5:4000", "10.0.0.2"},
		{"2001:db8::2", "[2001:db8::1]:4000", "2001:db8::2"},
	} {
		var local netip.Addr
		if c.local != "" {
			local = netip.MustParseAddr(c.local)
		}
		got, err := HardConfig{LocalIP: local, Easy: netip.MustParseAddrPort(c.easy), Secret: testSecret}.withDefaults()
		if err != nil || got.LocalIP.String() != c.want {
			t.Errorf("LocalIP %q, Easy %s: got %v, %v; want %s", c.local, c.easy, got.LocalIP, err, c.want)
		}
	}
}

// TestPunchEasyBudget: with nobody answering, the easy side sends exactly
// MaxProbes probes, each to a distinct port of HardIP in the range, and
// then gives up with ErrPunchBudget.
func TestPunchEasyBudget(t *testing.T) {
	hard := netip.MustParseAddr("203.0.113.9")
	var mu sync.Mutex
	var to []netip.AddrPort
	_, err := PunchEasy(context.Background(), EasyConfig{
		Send: func(b []byte, a netip.AddrPort) error {
			if p, ok := parseMine(b, testSecret); !ok || p.Kind != BirthdayProbe {
				t.Errorf("sent %x, want a probe with the secret", b)
			}
			mu.Lock()
			to = append(to, a)
			mu.Unlock()
			return nil
		},
		Packets:   make(chan Datagram),
		HardIP:    hard,
		Secret:    testSecret,
		Rate:      2000,
		MaxProbes: 40,
		PortRange: PortRange{Lo: 5000, Hi: 5999},
	})
	if !errors.Is(err, ErrPunchBudget) {
		t.Fatalf("err = %v, want ErrPunchBudget", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(to) != 40 {
		t.Fatalf("sent %d probes, want 40", len(to))
	}
	seen := make(map[netip.AddrPort]bool)
	for _, a := range to {
		if a.Addr() != hard || a.Port() < 5000 || a.Port() > 5999 || seen[a] {
			t.Fatalf("probe to %v: wrong IP, out of range or repeated", a)
		}
		seen[a] = true
	}
}

// TestPunchEasyTimeout: the deadline ends a punch whose budget would last
// far longer, with ErrPunchTimeout (and DeadlineExceeded); cancellation
// returns context.Canceled instead.
func TestPunchEasyTimeout(t *testing.T) {
	cfg := EasyConfig{
		Send:    func([]byte, netip.AddrPort) error { return nil },
		Packets: make(chan Datagram),
		HardIP:  netip.MustParseAddr("203.0.113.9"),
		Secret:  testSecret,
		Rate:    10,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := PunchEasy(ctx, cfg)
	if !errors.Is(err, ErrPunchTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrPunchTimeout wrapping DeadlineExceeded", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := PunchEasy(ctx, cfg); !errors.Is(err, context.Canceled) || errors.Is(err, ErrPunchTimeout) {
		t.Fatalf("canceled: err = %v, want context.Canceled only", err)
	}
}

// TestPunchEasyPackets drives the easy side with hand-made datagrams: a
// wrong secret and garbage are ignored, a probe from the hard side is
// answered with one probe to its source (and only one), and the first ack
// with the secret ends the punch with the acking address.
func TestPunchEasyPackets(t *testing.T) {
	packets := make(chan Datagram)
	answers := make(chan netip.AddrPort, 16)
	hardSock := netip.MustParseAddrPort("203.0.113.9:31337")
	ackFrom := netip.MustParseAddrPort("203.0.113.9:40404")
	done := make(chan struct{})
	var got netip.AddrPort
	var err error
	go func() {
		defer close(done)
		got, err = PunchEasy(context.Background(), EasyConfig{
			Send: func(b []byte, to netip.AddrPort) error {
				if to.Port() == hardSock.Port() {
					answers <- to
				}
				return nil
			},
			Packets:   packets,
			HardIP:    hardSock.Addr(),
			Secret:    testSecret,
			Rate:      1,                                 // the search itself stays out of the way
			PortRange: PortRange{Lo: 1024, Hi: 1024 + 1}, // and never hits hardSock's port
		})
	}()
	wrong := [BirthdaySecretSize]byte{9}
	packets <- Datagram{B: BirthdayPacket{Kind: BirthdayAck, Secret: wrong}.Append(nil), From: netip.MustParseAddrPort("203.0.113.66:1")}
	packets <- Datagram{B: []byte("not a birthday packet"), From: netip.MustParseAddrPort("203.0.113.66:2")}
	probe := BirthdayPacket{Kind: BirthdayProbe, Secret: testSecret}.Append(nil)
	// A v4-mapped v6 source is the same peer.
	packets <- Datagram{B: probe, From: netip.AddrPortFrom(netip.AddrFrom16(hardSock.Addr().As16()), hardSock.Port())}
	if a := <-answers; a != hardSock {
		t.Fatalf("answered the hard probe to %v, want %v", a, hardSock)
	}
	packets <- Datagram{B: probe, From: hardSock} // a keepalive: not answered again
	packets <- Datagram{B: BirthdayPacket{Kind: BirthdayAck, Secret: testSecret}.Append(nil), From: ackFrom}
	<-done
	if err != nil || got != ackFrom {
		t.Fatalf("PunchEasy = %v, %v; want %v", got, err, ackFrom)
	}
	if len(answers) != 0 {
		t.Fatalf("a repeated hard probe was answered again")
	}
}

// windowNet is a transport.Net whose UDP sockets bind to random free ports
// in [lo, hi] instead of kernel-chosen ones, so a test knows the range the
// easy side must search.
type windowNet struct {
	transport.Net
	lo, hi int
}

func (w windowNet) ListenPacket(network, address string) (net.PacketConn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 64 {
		port := w.lo + mrand.IntN(w.hi-w.lo+1)
		c, err := w.Net.ListenPacket(network, netip.AddrPortFrom(ap.Addr(), uint16(port)).String())
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("no free port in %d-%d: %w", w.lo, w.hi, lastErr)
}

// easySocket is the test's easy node: one shared socket, a reader that
// feeds birthday datagrams to Packets (the caller's demux), and a Send
// that counts probes. With filter set it emulates a port-restricted NAT
// (APDF): only datagrams from an ip:port the socket has sent to are let
// through.
type easySocket struct {
	conn    net.PacketConn
	filter  bool
	packets chan Datagram
	data    chan Datagram // everything that is not a birthday packet
	sends   atomic.Int64

	mu     sync.Mutex
	sentTo map[netip.AddrPort]bool

	wg sync.WaitGroup
}

func newEasySocket(t *testing.T, conn net.PacketConn, filter bool) *easySocket {
	e := &easySocket{conn: conn, filter: filter, packets: make(chan Datagram, 256), data: make(chan Datagram, 16), sentTo: make(map[netip.AddrPort]bool)}
	e.wg.Go(e.readLoop)
	t.Cleanup(func() {
		_ = conn.Close()
		e.wg.Wait()
	})
	return e
}

func (e *easySocket) addr() netip.AddrPort {
	return e.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (e *easySocket) send(b []byte, to netip.AddrPort) error {
	e.sends.Add(1)
	e.mu.Lock()
	e.sentTo[to] = true
	e.mu.Unlock()
	_, err := e.conn.WriteTo(b, net.UDPAddrFromAddrPort(to))
	return err
}

func (e *easySocket) readLoop() {
	buf := make([]byte, 1500)
	for {
		n, a, err := e.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		ap := a.(*net.UDPAddr).AddrPort()
		from := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		e.mu.Lock()
		pass := !e.filter || e.sentTo[from]
		e.mu.Unlock()
		if !pass {
			continue
		}
		d := Datagram{B: slices.Clone(buf[:n]), From: from}
		ch := e.data
		if IsBirthday(d.B) {
			ch = e.packets
		}
		select {
		case ch <- d:
		default: // a full queue drops, like a socket buffer
		}
	}
}

type punchResult struct {
	easyGot  netip.AddrPort
	easyErr  error
	hardConn net.PacketConn
	hardGot  netip.AddrPort
	hardErr  error
	took     time.Duration
}

// runPunch runs both sides at once, like the signaling would start them.
func runPunch(ctx context.Context, e *easySocket, easyCfg EasyConfig, hardCfg HardConfig) punchResult {
	easyCfg.Send, easyCfg.Packets = e.send, e.packets
	var r punchResult
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() { r.hardConn, r.hardGot, r.hardErr = PunchHard(ctx, hardCfg) })
	wg.Go(func() { r.easyGot, r.easyErr = PunchEasy(ctx, easyCfg) })
	wg.Wait()
	r.took = time.Since(start)
	return r
}

// checkPath asserts that the punched path carries data both ways: from the
// hard side's returned socket to the easy side's address it confirmed, and
// back to the address the easy side found.
func checkPath(t *testing.T, e *easySocket, r punchResult) {
	t.Helper()
	msg := []byte("hello over the punched path")
	if _, err := r.hardConn.WriteTo(msg, net.UDPAddrFromAddrPort(r.hardGot)); err != nil {
		t.Fatalf("hard -> easy: %v", err)
	}
	select {
	case d := <-e.data:
		if string(d.B) != string(msg) || d.From != r.easyGot {
			t.Fatalf("easy got %q from %v, want %q from %v", d.B, d.From, msg, r.easyGot)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("hard -> easy: nothing arrived")
	}
	if err := e.send([]byte("and back"), r.easyGot); err != nil {
		t.Fatalf("easy -> hard: %v", err)
	}
	buf := make([]byte, 64)
	_ = r.hardConn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, _, err := r.hardConn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("easy -> hard: %v", err)
		}
		if IsBirthday(buf[:n]) {
			continue // a late probe or ack copy, as documented
		}
		if string(buf[:n]) != "and back" {
			t.Fatalf("hard got %q", buf[:n])
		}
		return
	}
}

// TestPunchLoopbackSearch: hard sockets bound at random ports of a
// 1024-port window on loopback, an easy side that lets in only what it has
// sent to (port-restricted), so the only way through is for the random
// search to hit one of the hard ports. Sampling without replacement makes
// a budget of the window size a certain hit.
func TestPunchLoopbackSearch(t *testing.T) {
	testutil.CheckLeaks(t) // first registered, so it runs after the other cleanups
	sn, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	lo := 20000 + mrand.IntN(9)*1024 // below Linux's ephemeral range
	window := PortRange{Lo: uint16(lo), Hi: uint16(lo + 1023)}
	lc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := newEasySocket(t, lc, true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	secret := NewBirthdaySecret()
	r := runPunch(ctx, e,
		EasyConfig{HardIP: netip.MustParseAddr("127.0.0.1"), Secret: secret, Rate: 2000, MaxProbes: window.size(), PortRange: window},
		HardConfig{Net: windowNet{sn, lo, lo + 1023}, LocalIP: netip.MustParseAddr("127.0.0.1"), Easy: e.addr(), Secret: secret, Sockets: 16})
	if r.easyErr != nil || r.hardErr != nil {
		t.Fatalf("easy: %v; hard: %v", r.easyErr, r.hardErr)
	}
	defer r.hardConn.Close()
	hardPort := r.hardConn.LocalAddr().(*net.UDPAddr).AddrPort()
	if r.easyGot != hardPort {
		t.Fatalf("easy side found %v, hard side kept socket %v", r.easyGot, hardPort)
	}
	if r.hardGot != e.addr() {
		t.Fatalf("hard side confirmed %v, easy socket is %v", r.hardGot, e.addr())
	}
	if n := e.sends.Load(); n > int64(window.size()) {
		t.Fatalf("%d probes, budget %d", n, window.size())
	}
	t.Logf("found hard port %d in %d-%d after %d probes in %v", hardPort.Port(), window.Lo, window.Hi, e.sends.Load(), r.took)
	checkPath(t, e, r)
}

// TestPunchLoopbackHardProbeAnswered: when the easy side's filter lets the
// hard side's own probes in (a cone NAT or none), the easy side answers the
// first one and the punch completes without a search: its range here does
// not even contain the hard ports, and the budget is a handful of probes.
func TestPunchLoopbackHardProbeAnswered(t *testing.T) {
	testutil.CheckLeaks(t) // first registered, so it runs after the other cleanups
	lc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := newEasySocket(t, lc, false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	secret := NewBirthdaySecret()
	r := runPunch(ctx, e,
		EasyConfig{HardIP: netip.MustParseAddr("127.0.0.1"), Secret: secret, Rate: 10, MaxProbes: 10, PortRange: PortRange{Lo: 1, Hi: 1}},
		HardConfig{LocalIP: netip.MustParseAddr("127.0.0.1"), Easy: e.addr(), Secret: secret, Sockets: 8})
	if r.easyErr != nil || r.hardErr != nil {
		t.Fatalf("easy: %v; hard: %v", r.easyErr, r.hardErr)
	}
	defer r.hardConn.Close()
	if got := r.hardConn.LocalAddr().(*net.UDPAddr).AddrPort(); r.easyGot != got {
		t.Fatalf("easy side found %v, hard side kept %v", r.easyGot, got)
	}
	checkPath(t, e, r)
}

// TestPunchHardSendsFirstAndTimesOut: every hard socket sends a probe
// before anything arrives (opening its mapping), each from its own port;
// with nobody answering, the deadline ends the punch with ErrPunchTimeout
// and every socket is closed.
func TestPunchHardSendsFirstAndTimesOut(t *testing.T) {
	testutil.CheckLeaks(t) // first registered, so it runs after the other cleanups
	sink, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	const sockets = 12
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	secret := NewBirthdaySecret()
	_, _, err = PunchHard(ctx, HardConfig{LocalIP: netip.MustParseAddr("127.0.0.1"),
		Easy: sink.LocalAddr().(*net.UDPAddr).AddrPort(), Secret: secret, Sockets: sockets, Interval: time.Hour})
	if !errors.Is(err, ErrPunchTimeout) {
		t.Fatalf("err = %v, want ErrPunchTimeout", err)
	}
	srcs := make(map[netip.AddrPort]bool)
	buf := make([]byte, 64)
	_ = sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(srcs) < sockets {
		n, a, err := sink.ReadFrom(buf)
		if err != nil {
			t.Fatalf("got probes from %d sockets, want %d: %v", len(srcs), sockets, err)
		}
		if p, ok := parseMine(buf[:n], secret); !ok || p.Kind != BirthdayProbe {
			t.Fatalf("sink got %x, want a probe", buf[:n])
		}
		srcs[a.(*net.UDPAddr).AddrPort()] = true
	}
	// Every socket is closed: its port can be bound again.
	for a := range srcs {
		c, err := net.ListenPacket("udp4", a.String())
		if err != nil {
			t.Fatalf("hard socket %v still bound after PunchHard returned: %v", a, err)
		}
		c.Close()
	}
}

// TestPunchHardIgnoresWrongSecret: a probe with another secret, sent
// first, does not win; the right probe from another address does, and the
// socket that got it is the one returned.
func TestPunchHardIgnoresWrongSecret(t *testing.T) {
	testutil.CheckLeaks(t) // first registered, so it runs after the other cleanups
	easy, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer easy.Close()
	intruder, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	secret := NewBirthdaySecret()
	type result struct {
		c    net.PacketConn
		from netip.AddrPort
		err  error
	}
	res := make(chan result, 1)
	go func() {
		c, from, err := PunchHard(ctx, HardConfig{LocalIP: netip.MustParseAddr("127.0.0.1"),
			Easy: easy.LocalAddr().(*net.UDPAddr).AddrPort(), Secret: secret, Sockets: 4})
		res <- result{c, from, err}
	}()
	buf := make([]byte, 64)
	_ = easy.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, target, err := easy.ReadFrom(buf) // the first hard socket's probe
	if err != nil {
		t.Fatal(err)
	}
	wrong := BirthdayPacket{Kind: BirthdayProbe, Secret: NewBirthdaySecret()}.Append(nil)
	if _, err := intruder.WriteTo(wrong, target); err != nil {
		t.Fatal(err)
	}
	if _, err := easy.WriteTo(BirthdayPacket{Kind: BirthdayProbe, Secret: secret}.Append(nil), target); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.c.Close()
	if want := easy.LocalAddr().(*net.UDPAddr).AddrPort(); r.from != want {
		t.Fatalf("won by %v, want the easy socket %v", r.from, want)
	}
	if got := r.c.LocalAddr().(*net.UDPAddr).AddrPort(); got != target.(*net.UDPAddr).AddrPort() {
		t.Fatalf("returned socket %v, probe went to %v", got, target)
	}
	// The easy socket gets the acks (after any other sockets' probes).
	for {
		n, from, err := easy.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no ack: %v", err)
		}
		if p, ok := parseMine(buf[:n], secret); ok && p.Kind == BirthdayAck {
			if from.String() != target.String() {
				t.Fatalf("ack from %v, want %v", from, target)
			}
			break
		}
	}
	_ = intruder.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _, err := intruder.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("intruder got %x (%v), want nothing", buf[:n], err)
	}
}

// BenchmarkBirthdaySearch simulates the search against a symmetric NAT
// that put 256 mappings at random ports of 1024-65535, and reports the
// mean probes per punch. Theory (with replacement): mean ~252, median ~174
// (shared/reference/nat.md, B5.5); without replacement it is
// (64512+1)/(256+1) ~ 251.
func BenchmarkBirthdaySearch(b *testing.B) {
	rng := mrand.New(mrand.NewPCG(5, 6))
	total := 0
	for b.Loop() {
		hard := make(map[uint16]bool, DefaultHardSockets)
		for len(hard) < DefaultHardSockets {
			hard[uint16(1024+rng.IntN(DefaultPortRange.size()))] = true
		}
		s := newPortSampler(DefaultPortRange, rng)
		for n := 1; ; n++ {
			if hard[s.next()] {
				total += n
				break
			}
		}
	}
	b.ReportMetric(float64(total)/float64(b.N), "probes/punch")
}
