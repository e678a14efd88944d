package dht_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testnet"
)

// Loopback IPv6 is one address (::1), so every IPv6 node of these tests
// shares it: per-IP rate limits would throttle the whole network, so they
// are off.
func dualTweak(c *dht.Config) {
	c.ListenAddr6 = "[::1]:0"
	c.RateLimit = -1
}

// startDualNet starts a network of persistent dual-stack nodes on loopback
// (127.x.y.z and ::1) that know only IPv4 bootstrap addresses.
func startDualNet(t testing.TB, persistent int) *testnet.Network {
	t.Helper()
	if !hasIPv6Loopback() {
		t.Skip("no IPv6 loopback on this host")
	}
	return startNet(t, persistent, func(_ int, c *dht.Config) { dualTweak(c) })
}

func hasIPv6Loopback() bool {
	n := dht.New(dht.Config{ListenAddr: "[::1]:0"})
	defer n.Close()
	return n.Start() == nil
}

// family returns n's state in fam, or fails.
func family(t testing.TB, n *dht.Node, fam dht.Family) dht.FamilyState {
	t.Helper()
	for _, f := range n.Families() {
		if f.Family == fam {
			return f
		}
	}
	t.Fatalf("node %s has no %s socket", n.LocalAddr(), fam)
	return dht.FamilyState{}
}

// A dual-stack network given only IPv4 bootstrap addresses fills its IPv6
// overlay too: the bootstrap pings and lookups ask for the other family's
// nodes, and each node's IPv6 routing table holds IPv6 nodes only.
func TestDualStackJoinsBothOverlays(t *testing.T) {
	nw := startDualNet(t, 12)
	for _, n := range nw.Nodes() {
		v4, v6 := family(t, n, dht.IPv4), family(t, n, dht.IPv6)
		if !v4.Joined || !v6.Joined || !v6.Persistent {
			t.Fatalf("%s: v4 %+v v6 %+v", n.LocalAddr(), v4, v6)
		}
		if v6.ID != dht.NodeID(v6.LocalAddr) || v4.ID != dht.NodeID(v4.LocalAddr) {
			t.Fatalf("%s: ids do not match the addresses: %+v %+v", n.LocalAddr(), v4, v6)
		}
		for _, a := range n.Contacts() {
			if !a.Addr().Is4() && !a.Addr().Is6() {
				t.Fatalf("bad contact %s", a)
			}
		}
	}
	// Nodes that joined after the first found most of the IPv6 overlay.
	last := nw.Nodes()[len(nw.Nodes())-1]
	if c := family(t, last, dht.IPv6).Contacts; c < 5 {
		t.Fatalf("last node knows %d IPv6 nodes", c)
	}
}

// The cross-family answer: a PING asking for IPv6 nodes over IPv4 names
// the node's own IPv6 address; one that does not ask gets no closer nodes
// (what every node before IPv6 sends and expects).
func TestCrossFamilyPing(t *testing.T) {
	nw := startDualNet(t, 4)
	target := nw.Nodes()[0]
	c := newRawConn(t)
	v6 := family(t, target, dht.IPv6).PublicAddr
	for _, want := range []byte{0, 1<<dht.IPv4 | 1<<dht.IPv6} {
		m := &dht.Message{Command: dht.CmdPing, TID: 7, Addr: target.LocalAddr(), Pad: 500,
			Value: dht.AppendRequestOptions(nil, dht.RequestOptions{Want: want})}
		reply := c.roundTrip(t, target.LocalAddr(), m)
		switch {
		case want == 0 && len(reply.Closer) != 0:
			t.Fatalf("plain ping answered with closer nodes %v", reply.Closer)
		case want != 0 && (len(reply.Closer) == 0 || reply.Closer[0] != v6):
			t.Fatalf("closer %v, want %s first", reply.Closer, v6)
		}
		for _, a := range reply.Closer {
			if dht.FamilyOf(a) != dht.IPv6 {
				t.Fatalf("IPv4 request got IPv4 node %s as a cross-family node", a)
			}
		}
	}
}

// Records and signaling across families: an IPv6-only announcer, an
// IPv4-only one and a dual-stack one on one topic each. A dual-stack
// looker finds all three and signals each through its relays; an
// IPv4-only looker finds the two it can reach, and an IPv6-only looker
// the two on IPv6. Relays of a family the looker does not speak are never
// handed out by FindRelays.
func TestDualStackRecords(t *testing.T) {
	nw := startDualNet(t, 12)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var boot6 []netip.AddrPort
	for _, n := range nw.Nodes()[:2] {
		boot6 = append(boot6, family(t, n, dht.IPv6).PublicAddr)
	}
	echo := func(to ed25519.PublicKey, from netip.AddrPort, p []byte) []byte { return append([]byte("echo:"), p...) }
	only6 := func(c *dht.Config) {
		c.ListenAddr, c.Bootstrap, c.RateLimit = "[::1]:0", boot6, -1
	}
	only4 := func(c *dht.Config) { c.ListenAddr6 = dht.ListenOff }
	add := func(cfg dht.Config, tweak func(*dht.Config)) *dht.Node {
		t.Helper()
		cfg.Mode = dht.ModeEphemeral
		cfg.Bootstrap = nw.Bootstrap
		cfg.ListenAddr6 = "[::1]:0"
		cfg.RateLimit = -1
		if tweak != nil {
			tweak(&cfg)
		}
		n := dht.New(cfg)
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		if err := n.Bootstrap(ctx); err != nil {
			t.Fatal(err)
		}
		return n
	}
	type announcer struct {
		name  string
		node  *dht.Node
		key   ed25519.PrivateKey
		topic dht.ID
	}
	anns := []announcer{
		{name: "v6-only", node: add(dht.Config{OnSignal: echo}, only6)},
		{name: "v4-only", node: add(dht.Config{OnSignal: echo}, only4)},
		{name: "dual", node: add(dht.Config{OnSignal: echo}, nil)},
	}
	for i := range anns {
		a := &anns[i]
		a.key, a.topic = newKey(t), dht.TopicKey("family-"+a.name)
		res, err := a.node.Announce(ctx, a.topic, a.key)
		if err != nil {
			t.Fatalf("%s: %v", a.name, err)
		}
		var fams []dht.Family
		for _, r := range res.Relays {
			fams = append(fams, dht.FamilyOf(r))
		}
		want := map[string][]dht.Family{"v6-only": {dht.IPv6}, "v4-only": {dht.IPv4}, "dual": {dht.IPv4, dht.IPv6}}[a.name]
		if got := slices.Compact(fams); !slices.Equal(got, want) {
			t.Fatalf("%s: relays %v", a.name, res.Relays)
		}
	}
	lookers := []struct {
		name  string
		node  *dht.Node
		finds map[string]bool
	}{
		{"dual looker", add(dht.Config{}, nil), map[string]bool{"v6-only": true, "v4-only": true, "dual": true}},
		{"v4-only looker", add(dht.Config{}, only4), map[string]bool{"v4-only": true, "dual": true}},
		{"v6-only looker", add(dht.Config{}, only6), map[string]bool{"v6-only": true, "dual": true}},
	}
	for _, l := range lookers {
		for _, a := range anns {
			pub := a.key.Public().(ed25519.PublicKey)
			res, err := l.node.Lookup(ctx, a.topic)
			if err != nil {
				t.Fatalf("%s, %s: %v", l.name, a.name, err)
			}
			if hasPeer(res.Peers, pub) != l.finds[a.name] {
				t.Fatalf("%s found %s: %v, want %v", l.name, a.name, hasPeer(res.Peers, pub), l.finds[a.name])
			}
			if !l.finds[a.name] {
				continue
			}
			relays, err := l.node.FindRelays(ctx, pub)
			if err != nil {
				t.Fatalf("%s, relays of %s: %v", l.name, a.name, err)
			}
			for _, r := range relays {
				if !l.node.Speaks(dht.FamilyOf(r)) {
					t.Fatalf("%s got relay %s of a family it does not speak", l.name, r)
				}
			}
			ans, err := l.node.Signal(ctx, relays[0], pub, []byte("hi"))
			if err != nil || string(ans) != "echo:hi" {
				t.Fatalf("%s signalling %s via %s: %q %v", l.name, a.name, relays[0], ans, err)
			}
		}
	}
	// A relay of a family the looker has no socket for fails at once.
	v4only := lookers[1].node
	if _, err := v4only.Signal(ctx, boot6[0], anns[0].key.Public().(ed25519.PublicKey), []byte("x")); !errors.Is(err, dht.ErrNoFamily) {
		t.Fatalf("signal over IPv6 from an IPv4-only node: %v", err)
	}
}

// Old and new nodes side by side: storing nodes from before record
// extensions (IPv4 only, as every node was) keep a dual-stack announcer's
// record in its version-1 form, IPv4 relays only, and an old looker still
// reaches it through them.
func TestDualStackWithOldNodes(t *testing.T) {
	if !hasIPv6Loopback() {
		t.Skip("no IPv6 loopback on this host")
	}
	nw := startNet(t, 10, func(i int, c *dht.Config) {
		if i%2 == 0 {
			dht.SetLegacyRecords(c) // old: IPv4 only, no extensions
		} else {
			dualTweak(c)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dual := dht.Config{OnSignal: func(ed25519.PublicKey, netip.AddrPort, []byte) []byte { return []byte("ok") }}
	dualTweak(&dual)
	announcer := addEphemeral(t, nw, dual)
	oldCfg := dht.Config{}
	dht.SetLegacyRecords(&oldCfg)
	old := addEphemeral(t, nw, oldCfg)
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	topic := dht.TopicKey("old-and-new")
	if _, err := announcer.Announce(ctx, topic, key); err != nil {
		t.Fatal(err)
	}
	res, err := old.Lookup(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var rec dht.PeerRecord
	for _, r := range res.Peers {
		if r.PublicKey.Equal(pub) {
			rec = r
		}
	}
	if rec.PublicKey == nil || len(rec.Relays6) != 0 || len(rec.Relays) == 0 {
		t.Fatalf("old looker got %+v", rec)
	}
	for _, r := range rec.Relays {
		if !r.Addr().Is4() {
			t.Fatalf("version-1 record names IPv6 relay %s", r)
		}
	}
	if ans, err := old.Signal(ctx, rec.Relays[0], pub, []byte("x")); err != nil || string(ans) != "ok" {
		t.Fatalf("old looker signalling: %q %v", ans, err)
	}
}

// An IPv6 ListenAddr makes an IPv6-only node; an unspecified IPv4 one gets
// an IPv6 socket on the same port; a specific IPv4 one none; "off" none.
func TestListenPlan(t *testing.T) {
	if !hasIPv6Loopback() {
		t.Skip("no IPv6 loopback on this host")
	}
	for _, c := range []struct {
		name, listen, listen6 string
		fams                  []dht.Family
		samePort              bool
	}{
		{"ipv6 only", "[::1]:0", "", []dht.Family{dht.IPv6}, false},
		{"every interface", "0.0.0.0:0", "", []dht.Family{dht.IPv4, dht.IPv6}, true},
		{"every interface, no ipv6", "0.0.0.0:0", dht.ListenOff, []dht.Family{dht.IPv4}, false},
		{"one ipv4 address", "127.0.0.1:0", "", []dht.Family{dht.IPv4}, false},
		{"one of each", "127.0.0.1:0", "[::1]:0", []dht.Family{dht.IPv4, dht.IPv6}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := dht.New(dht.Config{ListenAddr: c.listen, ListenAddr6: c.listen6})
			if err := n.Start(); err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			var fams []dht.Family
			for _, f := range n.Families() {
				fams = append(fams, f.Family)
			}
			if !slices.Equal(fams, c.fams) {
				t.Fatalf("families %v, want %v", fams, c.fams)
			}
			if c.samePort && n.LocalAddrIn(dht.IPv4).Port() != n.LocalAddrIn(dht.IPv6).Port() {
				t.Fatalf("ports %s and %s differ", n.LocalAddrIn(dht.IPv4), n.LocalAddrIn(dht.IPv6))
			}
			if got := n.LocalAddr(); dht.FamilyOf(got) != c.fams[0] {
				t.Fatalf("LocalAddr %s is not of the primary family", got)
			}
		})
	}
	// An IPv6 address that cannot be bound fails the start.
	n := dht.New(dht.Config{ListenAddr: "127.0.0.1:0", ListenAddr6: "[2001:db8::1]:0"})
	defer n.Close()
	if err := n.Start(); err == nil {
		t.Fatal("started with an IPv6 address the host does not have")
	}
}

// Golden vectors: the IPv6 relays extension, and the request options.
func TestRelays6Golden(t *testing.T) {
	r := dht.PeerRecord{PublicKey: bytes.Repeat([]byte{7}, 32),
		Relays:  []netip.AddrPort{netip.MustParseAddrPort("203.0.113.1:49737")},
		Relays6: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:49737")}}
	got := hex.EncodeToString(dht.AppendPeerRecord(nil, r))
	want := hex.EncodeToString(bytes.Repeat([]byte{7}, 32)) + "81" + "04cb007101c249" +
		"14" + "02" + "12" + "20010db8000000000000000000000001" + "c249"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	back, rest, err := dht.ParsePeerRecord(dht.AppendPeerRecord(nil, r))
	if err != nil || len(rest) != 0 || !slices.Equal(back.Relays6, r.Relays6) || !slices.Equal(back.AllRelays(), r.AllRelays()) {
		t.Fatalf("round trip: %+v %x %v", back, rest, err)
	}
	// With a URL: type 1 before type 2.
	r.WebSocketURL = "ws://h:1"
	got = hex.EncodeToString(dht.AppendPeerRecord(nil, r))
	want = hex.EncodeToString(bytes.Repeat([]byte{7}, 32)) + "81" + "04cb007101c249" +
		"1e" + "0108" + hex.EncodeToString([]byte("ws://h:1")) + "0212" + "20010db8000000000000000000000001" + "c249"
	if got != want {
		t.Fatalf("with url: got  %s\nwant %s", got, want)
	}
	for _, c := range []struct {
		o   dht.RequestOptions
		hex string
	}{
		{dht.RequestOptions{}, ""},
		{dht.RequestOptions{Ext: true}, "01"},
		{dht.RequestOptions{Want: 3}, "0003"},
		{dht.RequestOptions{Ext: true, Want: 2}, "0102"},
	} {
		if got := hex.EncodeToString(dht.AppendRequestOptions(nil, c.o)); got != c.hex {
			t.Errorf("%+v: %s, want %s", c.o, got, c.hex)
		}
	}
}

// Broken IPv6 relay extensions are refused.
func TestRelays6Parse(t *testing.T) {
	key := hex.EncodeToString(make([]byte, 32))
	v6 := "20010db8000000000000000000000001c249"
	for _, c := range []struct {
		name, hex string
		ok        bool
	}{
		{"one", key + "80" + "14" + "0212" + v6, true},
		{"three", key + "80" + "38" + "0236" + v6 + v6 + v6, true},
		{"four", key + "80" + "4a" + "0248" + v6 + v6 + v6 + v6, false},
		{"empty", key + "80" + "02" + "0200", false},
		{"short", key + "80" + "13" + "0211" + v6[:34], false},
		{"mapped ipv4", key + "80" + "14" + "0212" + "00000000000000000000ffffcb007101c249", false},
		{"port zero", key + "80" + "14" + "0212" + "20010db80000000000000000000000010000", false},
		{"unknown after", key + "80" + "17" + "0212" + v6 + "0901ff", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, _ := hex.DecodeString(c.hex)
			rec, rest, err := dht.ParsePeerRecord(b)
			if !c.ok {
				if !errors.Is(err, dht.ErrBadRecord) {
					t.Fatalf("parsed %+v, err %v", rec, err)
				}
				return
			}
			if err != nil || len(rest) != 0 {
				t.Fatalf("%+v %x %v", rec, rest, err)
			}
			if again := dht.AppendPeerRecord(nil, rec); !bytes.Equal(again, b) {
				t.Fatalf("re-encoded %x", again)
			}
		})
	}
}

func FuzzParseRequestOptions(f *testing.F) {
	for _, s := range []string{"", "01", "0003", "0102", "ff", "01fe77"} {
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		o := dht.ParseRequestOptions(b)
		if back := dht.ParseRequestOptions(dht.AppendRequestOptions(nil, o)); back != o {
			t.Fatalf("%x: %+v, round trip %+v", b, o, back)
		}
	})
}

// rawConn sends hand-made DHT requests from a plain socket.
type rawConn struct{ conn *net.UDPConn }

func newRawConn(t testing.TB) *rawConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{conn: c}
}

// roundTrip sends m to addr and returns the parsed reply.
func (c *rawConn) roundTrip(t testing.TB, addr netip.AddrPort, m *dht.Message) *dht.Message {
	t.Helper()
	if _, err := c.conn.WriteToUDPAddrPort(dht.AppendMessage(nil, m), addr); err != nil {
		t.Fatal(err)
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 2048)
	n, err := c.conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	reply, err := dht.ParseMessage(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	return reply
}
