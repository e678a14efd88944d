package portmap

import (
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/transport/v2/stdnet"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// waitLimit bounds the waits for the client's state: checks and renewals
// come every few hundred milliseconds here.
const waitLimit = 5 * time.Second

var loopback = netip.MustParseAddr("127.0.0.1")

func testLogger(t *testing.T) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// startClient starts a client toward a loopback gateway and closes it when
// the test ends.
func startClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.Gateway == nil {
		cfg.Gateway = func() (netip.Addr, error) { return loopback, nil }
	}
	cfg.Logger = testLogger(t)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitReady(t *testing.T, c *Client) Status {
	t.Helper()
	select {
	case <-c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("client not ready after 10 s")
	}
	return c.Status()
}

// TestClientPCP: the client maps UDP and TCP with PCP, renews at half the
// granted lifetime, notices the server restart at its next check (the
// epoch went backwards), maps again, and deletes both mappings on Close.
func TestClientPCP(t *testing.T) {
	f := startFakePMP(t, "127.0.0.1:0", false, 2) // 2 s: a renewal within the test
	c := startClient(t, Config{UDPPort: 4000, TCPPort: 9000, Protocols: []Protocol{PCP}, pcpPort: f.port(),
		CheckInterval: 300 * time.Millisecond, RetryInterval: 100 * time.Millisecond})
	st := waitReady(t, c)
	if st.State != StateMapped || st.Protocol != PCP || st.UDP == nil || st.TCP == nil {
		t.Fatalf("status %+v, want UDP and TCP mapped with PCP", st)
	}
	want := netip.MustParseAddrPort("203.0.113.77:4000")
	if st.UDP.External != want || st.UDP.Internal != netip.AddrPortFrom(loopback, 4000) || st.UDP.Lifetime != 2*time.Second {
		t.Fatalf("UDP mapping %+v, want %s -> 127.0.0.1:4000 for 2 s", *st.UDP, want)
	}
	f.next(t, "map")
	f.next(t, "map")
	f.next(t, "announce") // checks run
	renewed := f.next(t, "map")
	if renewed.external != 4000 {
		t.Fatalf("renewal asked for port %d, want the mapped 4000", renewed.external)
	}
	// Long lifetimes from now on, so that only a check can notice the
	// restart (a renewal would make the mappings again anyway).
	f.setMaxLifetime(3600)
	for f.next(t, "map").lifetime != 3600 {
	}
	f.next(t, "announce")
	f.restart()
	if !testutil.Poll(waitLimit, 0, func() bool { return c.Status().Losses > 0 }) {
		t.Fatalf("restart not noticed: %+v", c.Status())
	}
	f.next(t, "map") // mapped again after the restart
	testutil.Eventually(t, waitLimit, func() bool { return c.Status().State == StateMapped }, "mapped again after the restart")
	c.Close()
	got := map[Transport]bool{}
	for range 2 {
		got[f.next(t, "delete").transport] = true
	}
	if !got[UDP] || !got[TCP] {
		t.Fatalf("Close deleted %v, want UDP and TCP", got)
	}
	if st := c.Status(); st.UDP != nil || st.TCP != nil {
		t.Fatalf("status after Close still holds mappings: %+v", st)
	}
}

// TestClientNATPMP: against a NAT-PMP-only server (which answers PCP with
// "unsupported version"), the client switches to NAT-PMP through
// go-nat-pmp, learns the external address, renews, notices a restart and
// deletes on Close. go-nat-pmp always uses port 5351, so the fake listens
// on a random loopback address.
func TestClientNATPMP(t *testing.T) {
	gw := netip.AddrFrom4([4]byte{127, byte(10 + rand.IntN(200)), byte(rand.IntN(256)), byte(1 + rand.IntN(250))})
	f := startFakePMP(t, netip.AddrPortFrom(gw, PCPPort).String(), true, 2)
	c := startClient(t, Config{UDPPort: 4000, Gateway: func() (netip.Addr, error) { return gw, nil },
		Protocols: []Protocol{PCP, NATPMP}, CheckInterval: 300 * time.Millisecond, RetryInterval: 100 * time.Millisecond})
	st := waitReady(t, c)
	if st.State != StateMapped || st.Protocol != NATPMP || st.UDP.External != netip.MustParseAddrPort("203.0.113.77:4000") {
		t.Fatalf("status %+v, want UDP mapped with NAT-PMP at 203.0.113.77:4000", st)
	}
	f.next(t, "map")
	f.next(t, "external") // a check
	f.next(t, "map")      // the renewal
	f.setMaxLifetime(3600)
	for f.next(t, "map").lifetime != 3600 {
	}
	f.next(t, "external")
	f.restart()
	testutil.Eventually(t, waitLimit, func() bool { return c.Status().Losses > 0 }, "restart noticed")
	testutil.Eventually(t, waitLimit, func() bool { return c.Status().State == StateMapped }, "mapped again")
	c.Close()
	if e := f.next(t, "delete"); e.transport != UDP {
		t.Fatalf("deleted %s, want udp", e.transport)
	}
}

// TestClientUPnP: with no PCP or NAT-PMP at the gateway (closed ports),
// the client finds the IGD over SSDP, maps through WANIPConnection:1, gets
// another port when the one it wants is taken, falls back to a permanent
// lease when the router allows no other, notices a lost entry, and deletes
// on Close.
func TestClientUPnP(t *testing.T) {
	igd := startFakeIGD(t)
	igd.set(func(f *fakeIGD) { f.busy[9000] = true })
	closed := closedUDPPort(t)
	c := startClient(t, Config{UDPPort: 4000, TCPPort: 9000, pcpPort: closed, ssdpPort: igd.port(),
		Lifetime: 30 * time.Second, CheckInterval: 300 * time.Millisecond, RetryInterval: 100 * time.Millisecond})
	st := waitReady(t, c)
	if st.State != StateMapped || st.Protocol != UPnP {
		t.Fatalf("status %+v, want mapped with UPnP", st)
	}
	if st.UDP.External != netip.MustParseAddrPort("203.0.113.88:4000") || st.UDP.Lifetime != 30*time.Second {
		t.Fatalf("UDP mapping %+v", *st.UDP)
	}
	if st.TCP == nil || st.TCP.External.Port() == 9000 {
		t.Fatalf("TCP mapping %+v: want another port than the busy 9000", st.TCP)
	}
	igd.next(t, "check")
	igd.forget()
	testutil.Eventually(t, waitLimit, func() bool { return c.Status().Losses > 0 }, "lost entry noticed")
	testutil.Eventually(t, waitLimit, func() bool { return c.Status().State == StateMapped }, "mapped again")
	c.Close()
	got := map[Transport]bool{}
	for range 2 {
		got[igd.next(t, "delete").transport] = true
	}
	if !got[UDP] || !got[TCP] {
		t.Fatalf("Close deleted %v, want UDP and TCP", got)
	}

	igd.set(func(f *fakeIGD) { f.onlyPermanent = true })
	c2 := startClient(t, Config{UDPPort: 4001, Protocols: []Protocol{UPnP}, ssdpPort: igd.port()})
	if st := waitReady(t, c2); st.State != StateMapped || st.UDP.Lifetime != 0 {
		t.Fatalf("only-permanent router: %+v, want a mapping with lease 0", st)
	}
	b, err := json.Marshal(c2.Status())
	if err != nil || !strings.Contains(string(b), `"protocol":"upnp"`) || !strings.Contains(string(b), `"lifetime_s":0`) {
		t.Fatalf("status JSON %s (%v)", b, err)
	}
}

// TestClientNoService: a gateway whose PCP and SSDP ports are closed is
// known to offer nothing within milliseconds (ICMP port unreachable), so
// a caller waiting for Ready is not held up; the client stays unavailable
// and tries again later.
func TestClientNoService(t *testing.T) {
	var changes atomic.Int32
	start := time.Now()
	c := startClient(t, Config{UDPPort: 4000, pcpPort: closedUDPPort(t), ssdpPort: closedUDPPort(t),
		OnChange: func(Status) { changes.Add(1) }})
	st := waitReady(t, c)
	took := time.Since(start)
	if st.State != StateUnavailable || !errors.Is(st.Err, ErrNoService) || !errors.Is(st.Err, ErrUnreachable) {
		t.Fatalf("status %+v, want unavailable (ports closed)", st)
	}
	if took > time.Second {
		t.Fatalf("ready after %v: a closed gateway should be known at once", took)
	}
	t.Logf("no service known after %v: %v", took, st.Err)
	testutil.Eventually(t, waitLimit, func() bool { return changes.Load() == 1 }, "one change reported")
}

func TestConfig(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("no port: %v", err)
	}
	if _, err := New(Config{UDPPort: 1, Protocols: []Protocol{"smoke-signals"}}); !errors.Is(err, ErrConfig) {
		t.Fatalf("bad protocol: %v", err)
	}
	// On a network that is not the system's, the gateway must be given:
	// the system's routing table says nothing about it.
	sys, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{UDPPort: 4000, Net: otherNet{sys}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.gateway(); !errors.Is(err, ErrNoGateway) {
		t.Fatalf("gateway on another network: %v", err)
	}
	m := Mapping{Protocol: PCP, Transport: UDP, External: netip.MustParseAddrPort("203.0.113.1:5"), Lifetime: time.Minute, Obtained: time.Unix(0, 0)}
	b, _ := json.Marshal(m)
	if want := `"lifetime_s":60`; !strings.Contains(string(b), want) {
		t.Fatalf("mapping JSON %s, want %s", b, want)
	}
	if !m.Expires().Equal(time.Unix(60, 0)) {
		t.Fatalf("Expires %v", m.Expires())
	}
}

// otherNet is the system network under another type: any transport.Net
// that is not stdnet's.
type otherNet struct{ *stdnet.Net }
