package portmap_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/portmap"
)

// The port-mapping lab: Debian's miniupnpd on a lab router, our client on
// a LAN host behind it. Root and miniupnpd needed (CI has both).

const labTimeout = 30 * time.Second

func labLogger(t *testing.T) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// TestLabPortMap runs the client in-process (sockets in the LAN host's
// namespace through Host.Net) against miniupnpd on a symmetric NAT, once
// per protocol that goes through the seam: PCP and UPnP-IGD. Each gets a
// UDP and a TCP mapping at the router's public address; a public host's
// unsolicited datagram reaches the LAN socket through it; the mappings are
// renewed (UPnP with a 4 s lease; miniupnpd grants PCP no less than 120 s,
// so PCP's renewal is the unit test's); a router restart is noticed and
// the mappings made again; Close removes them from the router.
func TestLabPortMap(t *testing.T) {
	natlab.RequireMiniUPnPd(t)
	lab := natlab.New(t)
	peer := lab.AddPublicHost("peer")
	type labCase struct {
		proto portmap.Protocol
		host  *natlab.Host
		upnpd *natlab.MiniUPnPd
	}
	var cases []labCase
	for _, p := range []portmap.Protocol{portmap.PCP, portmap.UPnP} {
		r := lab.AddRouter(natlab.RouterConfig{Type: natlab.Symmetric})
		cases = append(cases, labCase{p, r.AddHost("h"), r.StartMiniUPnPd(natlab.MiniUPnPdConfig{})})
	}
	for _, tc := range cases {
		t.Run(string(tc.proto), func(t *testing.T) {
			t.Parallel()
			h, d := tc.host, tc.upnpd
			ctx, cancel := context.WithTimeout(context.Background(), labTimeout)
			defer cancel()
			sock, err := h.Net().ListenPacket("udp4", netip.AddrPortFrom(h.IP(), 0).String())
			if err != nil {
				t.Fatal(err)
			}
			defer sock.Close()
			port := uint16(sock.LocalAddr().(*net.UDPAddr).Port)
			start := time.Now()
			c, err := portmap.New(portmap.Config{Net: h.Net(), Gateway: func() (netip.Addr, error) { return h.Gateway(), nil },
				UDPPort: port, TCPPort: 9000, Protocols: []portmap.Protocol{tc.proto}, Lifetime: 4 * time.Second,
				CheckInterval: 500 * time.Millisecond, RetryInterval: 200 * time.Millisecond, Logger: labLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			select {
			case <-c.Ready():
			case <-ctx.Done():
				t.Fatal("no outcome")
			}
			st := c.Status()
			if st.State != portmap.StateMapped || st.UDP == nil || st.TCP == nil {
				t.Fatalf("status %+v (err %v)\n%s", st, st.Err, d.Output())
			}
			t.Logf("%s: mapped %s -> %s and %s in %v", tc.proto, st.UDP.External, st.UDP.Internal, st.TCP.External, time.Since(start).Round(time.Microsecond))
			pub := h.Router().PublicIP()
			if st.UDP.External.Addr() != pub || st.UDP.Internal != netip.AddrPortFrom(h.IP(), port) {
				t.Fatalf("UDP mapping %s -> %s, want %s:* -> %s:%d", st.UDP.External, st.UDP.Internal, pub, h.IP(), port)
			}
			checkRedirect(ctx, t, d, "udp", st.UDP, true)
			checkRedirect(ctx, t, d, "tcp", st.TCP, true)
			reachable(ctx, t, peer, sock, st.UDP.External)

			if tc.proto == portmap.UPnP {
				waitStatus(ctx, t, c, "a renewal", func(s portmap.Status) bool { return s.Renewals > 0 })
			}
			// The router has run for a few seconds (six checks) when it
			// reboots: a restart within a second or two of the last answer
			// cannot show in the epoch (RFC 6887 §8.5 tolerates that much).
			checks := c.Status().Checks
			waitStatus(ctx, t, c, "six checks", func(s portmap.Status) bool { return s.Checks >= checks+6 })
			restarted := time.Now()
			if err := d.Restart(); err != nil {
				t.Fatal(err)
			}
			if tc.proto == portmap.PCP {
				// PCP sees the epoch start again; UPnP sees its control URL
				// gone (miniupnpd's HTTP port is new) and finds it again.
				waitStatus(ctx, t, c, "the restart noticed", func(s portmap.Status) bool { return s.Losses > 0 })
			}
			waitRedirect(ctx, t, d, "udp", st.UDP)
			t.Logf("%s: mapped again %v after the router restarted", tc.proto, time.Since(restarted).Round(time.Millisecond))
			waitStatus(ctx, t, c, "mapped", func(s portmap.Status) bool { return s.State == portmap.StateMapped })
			st = c.Status()
			reachable(ctx, t, peer, sock, st.UDP.External)

			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			checkRedirect(ctx, t, d, "udp", st.UDP, false)
			checkRedirect(ctx, t, d, "tcp", st.TCP, false)
		})
	}
}

// checkRedirect asserts that the router has (or no longer has) the DNAT
// rule of mapping m.
func checkRedirect(ctx context.Context, t *testing.T, d *natlab.MiniUPnPd, proto string, m *portmap.Mapping, want bool) {
	t.Helper()
	rs, err := d.Redirects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rule := fmt.Sprintf("%s %d -> %s", proto, m.External.Port(), m.Internal)
	if slices.Contains(rs, rule) != want {
		t.Fatalf("router rules %v: want %q present=%v", rs, rule, want)
	}
}

// waitRedirect waits until the router has the DNAT rule of mapping m.
func waitRedirect(ctx context.Context, t *testing.T, d *natlab.MiniUPnPd, proto string, m *portmap.Mapping) {
	t.Helper()
	rule := fmt.Sprintf("%s %d -> %s", proto, m.External.Port(), m.Internal)
	for {
		rs, err := d.Redirects(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(rs, rule) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("router rules %v: %q never came back", rs, rule)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// reachable sends unsolicited datagrams from a public host to ext and
// waits for one to arrive on sock.
func reachable(ctx context.Context, t *testing.T, from *natlab.Host, sock net.PacketConn, ext netip.AddrPort) {
	t.Helper()
	out, err := from.Net().ListenPacket("udp4", netip.AddrPortFrom(from.IP(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	got := make(chan bool, 1)
	go func() {
		buf := make([]byte, 64)
		_ = sock.SetReadDeadline(time.Now().Add(5 * time.Second))
		defer sock.SetReadDeadline(time.Time{})
		for {
			n, src, err := sock.ReadFrom(buf)
			if err != nil {
				got <- false
				return
			}
			if string(buf[:n]) == "unsolicited" && src.(*net.UDPAddr).AddrPort().Addr().Unmap() == from.IP() {
				got <- true
				return
			}
		}
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		_, _ = out.WriteTo([]byte("unsolicited"), net.UDPAddrFromAddrPort(ext))
		select {
		case ok := <-got:
			if !ok {
				t.Fatalf("a datagram from public host %s to %s never arrived", from.IP(), ext)
			}
			return
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
}

func waitStatus(ctx context.Context, t *testing.T, c *portmap.Client, what string, cond func(portmap.Status) bool) {
	t.Helper()
	for !cond(c.Status()) {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %+v", what, c.Status())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestLabNATPMP runs the client in a child process inside the LAN host's
// namespace, where the system network is the lab's: go-nat-pmp opens its
// own sockets, and the gateway comes from that namespace's
// /proc/net/route. The child maps with NAT-PMP only (miniupnpd serves PCP
// and NAT-PMP together; the fallback from PCP is the unit test's), prints
// the mapping, waits for the parent's unsolicited datagram, sees a renewal
// of its 4 s mapping and closes; the parent checks the router's rules.
func TestLabNATPMP(t *testing.T) {
	if os.Getenv(natlab.ChildEnv) != "" {
		t.Skip("child only through TestLabNATPMPChild")
	}
	natlab.RequireMiniUPnPd(t)
	lab := natlab.New(t)
	peer := lab.AddPublicHost("peer")
	r := lab.AddRouter(natlab.RouterConfig{})
	h := r.AddHost("h")
	d := r.StartMiniUPnPd(natlab.MiniUPnPdConfig{DisableUPnP: true})
	ctx, cancel := context.WithTimeout(context.Background(), labTimeout)
	defer cancel()
	p, err := h.StartTest(ctx, "TestLabNATPMPChild")
	if err != nil {
		t.Fatal(err)
	}
	mapped := regexp.MustCompile(`MAPPED (\S+) -> (\S+) in (\S+)`)
	var m []string
	for m == nil {
		select {
		case <-p.Done():
			t.Fatalf("child ended: %v\n%s", p.Wait(), p.Output())
		case <-ctx.Done():
			t.Fatalf("child never mapped:\n%s", p.Output())
		case <-time.After(20 * time.Millisecond):
		}
		m = mapped.FindStringSubmatch(p.Output())
	}
	t.Logf("nat-pmp: mapped %s -> %s in %s (child process)", m[1], m[2], m[3])
	ext := netip.MustParseAddrPort(m[1])
	out, err := peer.Net().ListenPacket("udp4", netip.AddrPortFrom(peer.IP(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	for !strings.Contains(p.Output(), "GOT") {
		_, _ = out.WriteTo([]byte("unsolicited"), net.UDPAddrFromAddrPort(ext))
		select {
		case <-p.Done():
			t.Fatalf("child ended: %v\n%s", p.Wait(), p.Output())
		case <-ctx.Done():
			t.Fatalf("the datagram never reached the child:\n%s", p.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, p.Output())
	}
	if rs, err := d.Redirects(ctx); err != nil || len(rs) != 0 {
		t.Fatalf("router rules after the child closed: %v (%v)", rs, err)
	}
}

// TestLabNATPMPChild is TestLabNATPMP's child.
func TestLabNATPMPChild(t *testing.T) {
	if os.Getenv(natlab.ChildEnv) == "" {
		t.Skip("runs inside a lab namespace, started by TestLabNATPMP")
	}
	sock, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	port := uint16(sock.LocalAddr().(*net.UDPAddr).Port)
	start := time.Now()
	c, err := portmap.New(portmap.Config{UDPPort: port, Protocols: []portmap.Protocol{portmap.NATPMP},
		Lifetime: 4 * time.Second, CheckInterval: -1, Logger: labLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-c.Ready()
	st := c.Status()
	if st.State != portmap.StateMapped || st.Protocol != portmap.NATPMP {
		t.Fatalf("status %+v: %v", st, st.Err)
	}
	fmt.Printf("MAPPED %s -> %s in %v\n", st.UDP.External, st.UDP.Internal, time.Since(start).Round(time.Microsecond))
	buf := make([]byte, 64)
	_ = sock.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, _, err := sock.ReadFrom(buf); err != nil || string(buf[:n]) != "unsolicited" {
		t.Fatalf("no datagram through the mapping: %v", err)
	}
	fmt.Println("GOT")
	if !testutil.Poll(10*time.Second, 0, func() bool { return c.Status().Renewals > 0 }) {
		t.Fatalf("no renewal: %+v", c.Status())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkLabPortMap measures the time from Start to the first outcome on
// a lab LAN host behind miniupnpd: a UDP mapping by PCP or UPnP-IGD (the
// client in-process; the mapping is deleted between iterations), by all
// three as a node asks (PCP wins), and, with the daemon stopped, the time to
// know that the gateway offers none.
//
//	go test -run '^$' -bench BenchmarkLabPortMap -benchtime 50x ./portmap/
func BenchmarkLabPortMap(b *testing.B) {
	natlab.RequireMiniUPnPd(b)
	lab := natlab.New(b)
	r := lab.AddRouter(natlab.RouterConfig{})
	h := r.AddHost("h")
	d := r.StartMiniUPnPd(natlab.MiniUPnPdConfig{})
	gw := func() (netip.Addr, error) { return h.Gateway(), nil }
	run := func(b *testing.B, protos []portmap.Protocol, want portmap.State) {
		for range b.N {
			c, err := portmap.New(portmap.Config{Net: h.Net(), Gateway: gw, UDPPort: 4000, Protocols: protos})
			if err != nil {
				b.Fatal(err)
			}
			if err := c.Start(); err != nil {
				b.Fatal(err)
			}
			<-c.Ready()
			b.StopTimer()
			if st := c.Status(); st.State != want {
				b.Fatalf("state %s, want %s: %v", st.State, want, st.Err)
			}
			c.Close()
			b.StartTimer()
		}
	}
	b.Run("pcp", func(b *testing.B) { run(b, []portmap.Protocol{portmap.PCP}, portmap.StateMapped) })
	b.Run("upnp", func(b *testing.B) { run(b, []portmap.Protocol{portmap.UPnP}, portmap.StateMapped) })
	b.Run("all", func(b *testing.B) { run(b, nil, portmap.StateMapped) })
	if err := d.Stop(); err != nil {
		b.Fatal(err)
	}
	// A node asks once at start, within the router's ICMP burst allowance;
	// this loop asks again and again, which Linux's per-host ICMP rate
	// limit (net.ipv4.icmp_ratelimit, 1 s) would turn into timeouts. The
	// limit is lifted on this router so that every iteration is a first
	// attempt.
	if out, err := r.Run(context.Background(), "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	b.Run("daemon-stopped", func(b *testing.B) { run(b, nil, portmap.StateUnavailable) })
}
