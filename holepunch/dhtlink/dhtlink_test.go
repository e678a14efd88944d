package dhtlink_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/holepunch/dhtlink"
	"github.com/swarmdb/swarmdb/internal/demux"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/natcheck"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// testWait bounds every network step of these tests (a lookup, a relayed
// exchange): each takes milliseconds on loopback; this is patience for a
// loaded machine.
var testWait = testutil.Scaled(20 * time.Second)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	t.Cleanup(cancel)
	return ctx
}

// startNet starts a loopback DHT of persistent nodes, the first two of
// them bootstrap nodes (a NAT measurement needs two servers). tweak, when
// set, adjusts each node's config by its index.
func startNet(t *testing.T, persistent int, tweak func(int, *dht.Config)) *testnet.Network {
	t.Helper()
	nw, err := testnet.Start(testContext(t), testnet.Config{Persistent: persistent, Bootstraps: 2, Tweak: tweak})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Close)
	return nw
}

// addLink starts an ephemeral node on nw wired to a new link, as swarm
// does: the link's signaling hook in the node's config, then Attach.
func addLink(t *testing.T, nw *testnet.Network, tweak func(*dht.Config)) (*dhtlink.Link, *dht.Node) {
	t.Helper()
	link := dhtlink.New()
	cfg := dht.Config{Mode: dht.ModeEphemeral, OnSignal: link.HandleSignal}
	if tweak != nil {
		tweak(&cfg)
	}
	node, err := nw.AddNode(testContext(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	link.Attach(node, nil)
	return link, node
}

// received is what an endpoint's handlers were given.
type received struct {
	from    netip.AddrPort
	payload []byte
}

// handlers are an endpoint's signal handler and packet handler (for each
// of its classes) that record their input; onSignal answers "re:" and the
// payload.
type handlers struct {
	signals chan received
	packets chan received
}

func newHandlers() *handlers {
	return &handlers{signals: make(chan received, 16), packets: make(chan received, 16)}
}

func (h *handlers) install(l *dhtlink.Link) {
	l.SetSignalHandler(h.onSignal)
	for _, c := range []demux.Class{demux.Birthday, demux.Sealed, demux.STUN} {
		l.Handle(c, h.onPacket)
	}
}

func (h *handlers) onSignal(from netip.AddrPort, payload []byte) []byte {
	h.signals <- received{from, bytes.Clone(payload)}
	return append([]byte("re:"), payload...)
}

func (h *handlers) onPacket(b []byte, from netip.AddrPort) {
	select {
	case h.packets <- received{from, bytes.Clone(b)}: // b is the read loop's buffer
	default:
	}
}

func next(t *testing.T, ch chan received, what string) received {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(testWait):
		t.Fatalf("no %s within %v", what, testWait)
		return received{}
	}
}

// TestNotAttached: before Attach every operation that needs the node fails
// with ErrNotAttached, the addresses are unknown, and the signaling hook,
// which the node may call before the endpoint installed its handler,
// answers nothing.
func TestNotAttached(t *testing.T) {
	l := dhtlink.New()
	ctx := testContext(t)
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	errs := map[string]error{}
	_, errs["Register"] = l.Register(ctx, priv)
	_, errs["FindRelays"] = l.FindRelays(ctx, pub)
	_, errs["Signal"] = l.Signal(ctx, netip.MustParseAddrPort("127.0.0.1:1"), pub, []byte("x"))
	errs["WritePacket"] = l.WritePacket([]byte{demux.TagSealed}, netip.MustParseAddrPort("127.0.0.1:1"))
	_, errs["TURN"] = l.TURN(ctx)
	_, errs["MeasureNAT"] = l.MeasureNAT(ctx, nil)
	for op, err := range errs {
		if !errors.Is(err, dhtlink.ErrNotAttached) {
			t.Errorf("%s: %v, want ErrNotAttached", op, err)
		}
	}
	if a := l.LocalAddr(); a.IsValid() {
		t.Errorf("LocalAddr %v before Attach", a)
	}
	if a := l.PublicAddr(); a.IsValid() {
		t.Errorf("PublicAddr %v before Attach", a)
	}
	if s := l.IPv6(); s != (holepunch.IPv6State{}) {
		t.Errorf("IPv6 %+v before Attach", s)
	}
	if ans := l.HandleSignal(pub, netip.MustParseAddrPort("127.0.0.1:1"), []byte("x")); ans != nil {
		t.Errorf("HandleSignal with no handler answered %q", ans)
	}
}

// TestHandlersRouting: the node's signaling hook and the datagrams on its
// socket reach the endpoint's handlers, installed before Attach as after;
// a STUN response that the NAT measurement did not ask for is the
// endpoint's too (ICE's connectivity checks are STUN), while the node
// answers a plain Binding request itself.
func TestHandlersRouting(t *testing.T) {
	l := dhtlink.New()
	h := newHandlers()
	h.install(l)
	n := dht.New(dht.Config{Mode: dht.ModeEphemeral, ListenAddr: "127.0.0.1:0", ListenAddr6: dht.ListenOff, OnSignal: l.HandleSignal})
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	l.Attach(n, nil)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	from := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if ans := l.HandleSignal(pub, from, []byte("offer")); string(ans) != "re:offer" {
		t.Fatalf("HandleSignal answered %q, want the handler's %q", ans, "re:offer")
	}
	if got := next(t, h.signals, "signal"); got.from != from || string(got.payload) != "offer" {
		t.Fatalf("onSignal got %q from %v, want %q from %v", got.payload, got.from, "offer", from)
	}
	resp, err := stun.Build(stun.TransactionID, stun.BindingSuccess, &stun.XORMappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())})
	if err != nil {
		t.Fatal(err)
	}
	birthday := holepunch.BirthdayPacket{Kind: holepunch.BirthdayProbe}.Append(nil)
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw // the node's to answer
	for _, b := range [][]byte{req, {demux.TagSealed, 1, 2, 3}, resp.Raw, birthday} {
		if _, err := conn.WriteToUDPAddrPort(b, n.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(b, req) {
			continue
		}
		if got := next(t, h.packets, "packet"); got.from != from || !bytes.Equal(got.payload, b) {
			t.Fatalf("the endpoint got %x from %v, want %x from %v", got.payload, got.from, b, from)
		}
	}
	// The read loop counts a datagram once its handler returns.
	if !testutil.Poll(testWait, 10*time.Millisecond, func() bool {
		st := n.Stats()
		return st.STUNAnswered == 1 && st.OtherPackets == 3
	}) {
		st := n.Stats()
		t.Fatalf("stats: STUN answered %d, handed off %d; want 1 and 3", st.STUNAnswered, st.OtherPackets)
	}
}

// TestSignalingOverDHT: what holepunch does through the link, on a
// loopback DHT: a registers its key, b finds a's relays by the key alone,
// signals a through one of them and gets a's answer, then sends a datagram
// from its socket straight to a's.
func TestSignalingOverDHT(t *testing.T) {
	nw := startNet(t, 4, nil)
	a, an := addLink(t, nw, nil)
	b, bn := addLink(t, nw, nil)
	ha := newHandlers()
	ha.install(a)
	ctx := testContext(t)

	if a.LocalAddr() != an.LocalAddr() || b.LocalAddr() != bn.LocalAddr() {
		t.Fatalf("LocalAddr %v, %v; the nodes' %v, %v", a.LocalAddr(), b.LocalAddr(), an.LocalAddr(), bn.LocalAddr())
	}
	if a.PublicAddr() != an.PublicAddr() {
		t.Fatalf("PublicAddr %v, the node's %v", a.PublicAddr(), an.PublicAddr())
	}

	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	relays, err := a.Register(ctx, priv)
	if err != nil || len(relays) == 0 {
		t.Fatalf("Register: %v relays, %v", relays, err)
	}
	found, err := b.FindRelays(ctx, pub)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range found {
		if !slices.Contains(relays, r) {
			t.Fatalf("found relays %v, registered at %v", found, relays)
		}
	}
	ans, err := b.Signal(ctx, found[0], pub, []byte("offer"))
	if err != nil {
		t.Fatal(err)
	}
	if string(ans) != "re:offer" {
		t.Fatalf("answer %q, want %q", ans, "re:offer")
	}
	// The relay passes on the address it saw b's request come from.
	if got := next(t, ha.signals, "signal"); got.from != b.LocalAddr() || string(got.payload) != "offer" {
		t.Fatalf("a's onSignal got %q from %v, want %q from %v", got.payload, got.from, "offer", b.LocalAddr())
	}

	other, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.FindRelays(ctx, other); !errors.Is(err, dht.ErrNotRegistered) {
		t.Fatalf("FindRelays of a key nobody registered: %v, want ErrNotRegistered", err)
	}

	dgram := []byte{demux.TagSealed, 'h', 'i'}
	if err := b.WritePacket(dgram, a.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if got := next(t, ha.packets, "datagram"); got.from != b.LocalAddr() || !bytes.Equal(got.payload, dgram) {
		t.Fatalf("a's Sealed handler got %x from %v, want %x from %v", got.payload, got.from, dgram, b.LocalAddr())
	}
}

// turnOffers is an OnTURN hook that counts requests and offers a fixed
// server with credentials valid for lifetime.
type turnOffers struct {
	mu       sync.Mutex
	asked    int
	lifetime time.Duration
}

var turnServer = netip.MustParseAddrPort("127.0.0.1:3478")

func (o *turnOffers) handle(requester netip.AddrPort) (dht.TURNOffer, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.asked++
	return dht.TURNOffer{Server: turnServer, Username: "user-" + requester.Addr().String(), Password: "pass",
		Expires: time.Now().Add(o.lifetime)}, true
}

func (o *turnOffers) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.asked
}

func (o *turnOffers) setLifetime(d time.Duration) {
	o.mu.Lock()
	o.lifetime = d
	o.mu.Unlock()
}

// TestTURN: the link gets an offer from a bootstrap node that runs a relay
// and reuses it while it has long to live; one about to expire is asked
// for again.
func TestTURN(t *testing.T) {
	offers := &turnOffers{lifetime: time.Hour}
	nw := startNet(t, 3, func(i int, c *dht.Config) {
		if i == 1 {
			c.OnTURN = offers.handle
		}
	})
	l, n := addLink(t, nw, nil)
	ctx := testContext(t)
	info, err := l.TURN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := holepunch.TURNServerInfo{Addr: turnServer, Username: "user-" + n.LocalAddr().Addr().String(), Password: "pass"}
	if info != want {
		t.Fatalf("TURN %+v, want %+v", info, want)
	}
	if _, err := l.TURN(ctx); err != nil {
		t.Fatal(err)
	}
	if c := offers.count(); c != 1 {
		t.Fatalf("asked for %d offers, want 1: an offer valid for an hour is reused", c)
	}

	// An offer with less than the reuse margin (5 min) left is not kept.
	offers.setLifetime(time.Minute)
	l2, _ := addLink(t, nw, nil)
	for i := range 2 {
		if _, err := l2.TURN(ctx); err != nil {
			t.Fatal(err)
		}
		if c := offers.count(); c != 2+i {
			t.Fatalf("after %d requests for short offers: %d offers in all, want %d", i+1, c, 2+i)
		}
	}
}

// TestTURNBeyondBootstrap: when no bootstrap node offers a relay, the link
// asks the nodes a lookup finds; when none does either, it fails with
// holepunch.ErrNoTURN.
func TestTURNBeyondBootstrap(t *testing.T) {
	offers := &turnOffers{lifetime: time.Hour}
	nw := startNet(t, 4, func(i int, c *dht.Config) {
		if i == 3 { // not a bootstrap node
			c.OnTURN = offers.handle
		}
	})
	l, _ := addLink(t, nw, nil)
	ctx := testContext(t)
	info, err := l.TURN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Addr != turnServer || offers.count() != 1 {
		t.Fatalf("TURN %+v after %d offers, want the one offer of node 3", info, offers.count())
	}

	none := startNet(t, 3, nil)
	l, _ = addLink(t, none, nil)
	if _, err := l.TURN(ctx); !errors.Is(err, holepunch.ErrNoTURN) {
		t.Fatalf("TURN with no relay anywhere: %v, want ErrNoTURN", err)
	}
}

// TestMeasureNAT: the NAT measurement runs through the link, whose STUN
// handler hands the STUN answers to the measurement and not to the endpoint.
// On loopback there is no NAT: the public address is the socket's own. An
// early report (the mapping, while the filtering probes still wait) comes
// only if the probes' packets take longer than the Bindings; here they
// rarely do, as nothing filters them.
func TestMeasureNAT(t *testing.T) {
	nw := startNet(t, 4, nil)
	l, n := addLink(t, nw, nil)
	h := newHandlers()
	h.install(l)
	var early []natcheck.Report
	rep, err := l.MeasureNAT(testContext(t), func(r natcheck.Report) { early = append(early, r) })
	if err != nil {
		t.Fatal(err)
	}
	if rep.Answered < 2 || rep.PublicAddr != n.LocalAddr() {
		t.Fatalf("report %+v: want answers from both bootstrap nodes and public address %v", rep, n.LocalAddr())
	}
	for _, e := range early {
		if len(early) > 1 || e.Mapping != natcheck.MappingNone || e.Filtering != natcheck.FilteringUnknown || e.PublicAddr != n.LocalAddr() {
			t.Fatalf("early reports %+v: want at most one, no NAT, filtering not yet known", early)
		}
	}
	for len(h.packets) > 0 {
		if got := <-h.packets; stun.IsMessage(got.payload) {
			t.Fatalf("the endpoint got a STUN answer meant for the measurement, from %v", got.from)
		}
	}
}

// TestIPv6: a node with an IPv6 socket beside its IPv4 one shows it
// through the link. It counts as joined there only once IPv6 nodes
// answered it, unless it joined no overlay at all (a LAN-only node), so
// that two IPv6-only hosts on a LAN still offer each other their
// addresses.
func TestIPv6(t *testing.T) {
	nw := startNet(t, 3, nil)
	l, n := addLink(t, nw, func(c *dht.Config) { c.ListenAddr6 = "[::1]:0" })
	s := l.IPv6()
	if !s.Local.Addr().Is6() || s.Local != familyAddr(t, n, dht.IPv6) {
		t.Fatalf("IPv6 %+v, want the node's IPv6 socket %v", s, familyAddr(t, n, dht.IPv6))
	}
	if s.Joined {
		t.Fatal("IPv6 counted as joined on a node whose overlay is IPv4 only")
	}

	lan := dhtlink.New()
	ln := dht.New(dht.Config{Mode: dht.ModeEphemeral, ListenAddr: "127.0.0.1:0", ListenAddr6: "[::1]:0",
		OnSignal: lan.HandleSignal})
	if err := ln.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	lan.Attach(ln, nil)
	if s := lan.IPv6(); !s.Joined || s.Local != familyAddr(t, ln, dht.IPv6) {
		t.Fatalf("LAN-only node: IPv6 %+v, want its IPv6 socket, joined", s)
	}

	v4, _ := addLink(t, nw, nil)
	if s := v4.IPv6(); s != (holepunch.IPv6State{}) {
		t.Fatalf("IPv4-only node: IPv6 %+v, want none", s)
	}
}

func familyAddr(t *testing.T, n *dht.Node, fam dht.Family) netip.AddrPort {
	t.Helper()
	for _, f := range n.Families() {
		if f.Family == fam {
			return f.LocalAddr
		}
	}
	t.Fatalf("node has no socket of family %v", fam)
	return netip.AddrPort{}
}
