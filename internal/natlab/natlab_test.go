package natlab_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/transport/v2"

	"github.com/swarmdb/swarmdb/internal/natlab"
)

// testTimeout bounds every network wait of a subtest.
const testTimeout = 20 * time.Second

// TestLab is the lab's self-test. It builds one topology, then checks in
// parallel subtests that every router is what it claims to be, measured
// from inside its LAN against the lab's reflector.
func TestLab(t *testing.T) {
	start := time.Now()
	lab := natlab.New(t)
	refl := lab.AddReflector("refl")
	peer := lab.AddPublicHost("peer")

	type classCase struct {
		name    string
		host    *natlab.Host
		want    natlab.NATType
		hairpin bool
		public  netip.Addr // expected public IP of the mapping
	}
	var cases []classCase
	for _, typ := range natlab.Types() {
		r := lab.AddRouter(natlab.RouterConfig{Type: typ})
		h := r.AddHost("a")
		pub := r.PublicIP()
		if typ == natlab.Open {
			pub = h.IP()
		}
		// Without hairpin rules only an open host reaches its own address.
		cases = append(cases, classCase{string(typ), h, typ, typ == natlab.Open, pub})
	}
	hpOn := lab.AddRouter(natlab.RouterConfig{Name: "hpon", Hairpin: true})
	hpOff := lab.AddRouter(natlab.RouterConfig{Name: "hpoff"})
	for _, r := range []*natlab.Router{hpOn, hpOff} {
		r.AddHost("a")
		r.AddHost("b")
	}
	hpToggle := lab.AddRouter(natlab.RouterConfig{Name: "hptoggle"})
	hpToggle.AddHost("a")
	hpToggle.AddHost("b")
	fcHp := lab.AddRouter(natlab.RouterConfig{Name: "fchp", Type: natlab.FullCone, Hairpin: true})
	dbl := lab.AddDoubleNAT(natlab.RouterConfig{Name: "home"})
	cases = append(cases,
		classCase{"portrestricted-hairpin", hpOn.Hosts()[0], natlab.PortRestricted, true, hpOn.PublicIP()},
		classCase{"fullcone-hairpin", fcHp.AddHost("a"), natlab.FullCone, true, fcHp.PublicIP()},
		classCase{"doublenat", dbl.AddHost("a"), natlab.PortRestricted, false, dbl.Upstream().PublicIP()},
	)
	lossR := lab.AddRouter(natlab.RouterConfig{Name: "lossy"})
	lossRH := lossR.AddHost("a")
	lossH := lab.AddRouter(natlab.RouterConfig{Name: "lossyh"}).AddHost("a")
	short := lab.AddRouter(natlab.RouterConfig{Name: "short", Type: natlab.Symmetric, UDPTimeout: 2 * time.Second})
	shortH := short.AddHost("a")
	pit := lab.AddRouter(natlab.RouterConfig{Name: "pit"}).AddHost("a")
	pitAccept := lab.AddRouter(natlab.RouterConfig{Name: "pitacc", AcceptWANInput: true}).AddHost("a")
	netA := lab.AddRouter(natlab.RouterConfig{Name: "neta"}).AddHost("a")
	netB := lab.AddRouter(natlab.RouterConfig{Name: "netb"}).AddHost("b")
	t.Logf("topology built in %v (prefix %s)", time.Since(start).Round(time.Millisecond), lab.Prefix())

	for _, c := range cases {
		t.Run("classify/"+c.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			res, err := natlab.Classify(ctx, c.host.Net(), natlab.ProbeConfig{Server: refl.Addr()})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %v", c.name, res)
			if res.Type() != c.want {
				t.Errorf("type %s, want %s", res.Type(), c.want)
			}
			if res.Mapping != c.want.Mapping() || res.Filtering != c.want.Filtering() {
				t.Errorf("mapping %s / filtering %s, want %s / %s", res.Mapping, res.Filtering, c.want.Mapping(), c.want.Filtering())
			}
			if res.Hairpin != c.hairpin {
				t.Errorf("hairpin %t, want %t", res.Hairpin, c.hairpin)
			}
			if res.Mapped.Addr() != c.public {
				t.Errorf("mapped address %v, want IP %v", res.Mapped, c.public)
			}
		})
	}

	t.Run("hairpin/on", func(t *testing.T) {
		t.Parallel()
		from, ok := hairpinSend(t, refl, hpOn)
		if !ok {
			t.Fatal("hairpinned packet did not arrive")
		}
		// RFC 4787 REQ-9a: the receiver sees the sender's public mapping.
		if from.Addr() != hpOn.PublicIP() {
			t.Errorf("hairpinned packet came from %v, want the public address %v", from, hpOn.PublicIP())
		}
	})
	t.Run("hairpin/off", func(t *testing.T) {
		t.Parallel()
		if from, ok := hairpinSend(t, refl, hpOff); ok {
			t.Fatalf("packet hairpinned (from %v) on a router without hairpinning", from)
		}
	})

	t.Run("hairpin/toggle", func(t *testing.T) {
		t.Parallel()
		for _, on := range []bool{true, false, true} {
			if err := hpToggle.SetHairpin(on); err != nil {
				t.Fatal(err)
			}
			if _, ok := hairpinSend(t, refl, hpToggle); ok != on {
				t.Fatalf("after SetHairpin(%t) hairpinned packet arrived: %t", on, ok)
			}
		}
	})

	t.Run("doublenat/addressing", func(t *testing.T) {
		cgnShared := netip.MustParsePrefix("100.64.0.0/10")
		if !cgnShared.Contains(dbl.PublicIP()) {
			t.Errorf("home router WAN %v not in %v", dbl.PublicIP(), cgnShared)
		}
		if !lab.InternetPrefix().Contains(dbl.Upstream().PublicIP()) {
			t.Errorf("carrier NAT WAN %v not on the internet segment", dbl.Upstream().PublicIP())
		}
	})

	t.Run("loss/router", func(t *testing.T) {
		t.Parallel()
		checkLoss(t, lossR, lossRH, refl.Addr())
	})
	t.Run("loss/host", func(t *testing.T) {
		t.Parallel()
		checkLoss(t, lossH, lossH, refl.Addr())
	})

	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		checkTimeout(t, short, shortH, refl.Addr())
	})

	// nat.md pitfall B5.3: a peer's packet arriving before the LAN host has
	// sent must not take the port the host is about to be mapped to. The
	// control router accepts WAN input and must show the pitfall, proving
	// the check can see it.
	for _, c := range []struct {
		name     string
		host     *natlab.Host
		keepPort bool
	}{{"pitfall/early-inbound-dropped-keeps-port", pit, true}, {"pitfall/early-inbound-accepted-steals-port", pitAccept, false}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			pc := listen(t, peer.Net())
			ac := listen(t, c.host.Net())
			local := addrPort(ac.LocalAddr())
			early := netip.AddrPortFrom(c.host.Router().PublicIP(), local.Port())
			for range 3 {
				if _, err := pc.WriteTo([]byte("early"), net.UDPAddrFromAddrPort(early)); err != nil {
					t.Fatal(err)
				}
			}
			// The early packets must have reached the router (its WAN input
			// counter) before the host sends.
			waitWANInput(ctx, t, c.host.Router(), 3)
			from := sendUntilReceived(ctx, t, ac, pc, netip.AddrPortFrom(peer.IP(), addrPort(pc.LocalAddr()).Port()))
			if kept := from.Port() == local.Port(); kept != c.keepPort {
				t.Errorf("host at local port %d was mapped to %v after an early inbound packet; port kept %t, want %t", local.Port(), from, kept, c.keepPort)
			}
		})
	}

	// nat.md pitfall B5.1: hosts behind one NAT must not share local ports,
	// or Linux overloads one external port and a host looks
	// address-dependent. Each host has its own ephemeral range, and both
	// keep their ports through the NAT.
	t.Run("pitfall/disjoint-ephemeral-ports", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		var ranges []string
		for _, h := range hpOff.Hosts() {
			out, err := h.Run(ctx, "cat", "/proc/sys/net/ipv4/ip_local_port_range")
			if err != nil {
				t.Fatal(err)
			}
			ranges = append(ranges, strings.Join(strings.Fields(out), "-"))
			c := listen(t, h.Net())
			if got, local := mapped(ctx, t, c, refl.Addr()), addrPort(c.LocalAddr()); got.Port() != local.Port() {
				t.Errorf("%s: local port %d mapped to %v, want the port kept", h.Name(), local.Port(), got)
			}
		}
		if ranges[0] == ranges[1] {
			t.Errorf("hosts behind one router share ephemeral range %s", ranges[0])
		}
	})

	t.Run("net/punch", func(t *testing.T) {
		t.Parallel()
		checkPunch(t, refl.Addr(), netA, netB)
	})
	t.Run("net/interfaces", func(t *testing.T) {
		t.Parallel()
		ifs, err := netA.Net().Interfaces()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		found := false
		for _, ifc := range ifs {
			names = append(names, ifc.Name)
			addrs, _ := ifc.Addrs()
			for _, a := range addrs {
				if ipn, ok := a.(*net.IPNet); ok && ipn.IP.Equal(netA.IP().AsSlice()) {
					found = true
				}
			}
		}
		if strings.Join(names, ",") != "lo,eth0" || !found {
			t.Errorf("interfaces %v (has %v: %t), want lo,eth0 with the host's address", names, netA.IP(), found)
		}
		if _, err := netA.Net().Dial("udp4", "example.invalid:53"); !errors.Is(err, natlab.ErrNotLiteral) {
			t.Errorf("Dial by name: err %v, want ErrNotLiteral", err)
		}
	})
	t.Run("net/tcp", func(t *testing.T) {
		t.Parallel()
		checkTCP(t, peer, netA)
	})

	t.Run("exec", func(t *testing.T) {
		t.Parallel()
		checkExec(t, netA)
	})
	t.Cleanup(func() { t.Logf("lab self-test took %v", time.Since(start).Round(time.Millisecond)) })
}

// listen opens a UDP socket on an ephemeral port in n and closes it at the
// end of the test.
func listen(t *testing.T, n transport.Net) net.PacketConn {
	t.Helper()
	c, err := n.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addrPort(a net.Addr) netip.AddrPort {
	ap := a.(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func mapped(ctx context.Context, t *testing.T, c net.PacketConn, server netip.AddrPort) netip.AddrPort {
	t.Helper()
	// A generous budget: the answer comes in well under a millisecond, but
	// a machine loaded past its cores (with -race) starved the exchange of
	// the default 3 × 200 ms: TestFlushConntrack failed 6 runs of 20 at a
	// load average of 14. The tests check what the NAT maps, not how fast.
	m, err := natlab.Query(ctx, c, server, 0, natlab.ProbeConfig{Timeout: 500 * time.Millisecond, Attempts: 10})
	if err != nil {
		t.Fatal(err)
	}
	return m.Observed
}

// sendUntilReceived sends from src to dst (an address of dstConn) until
// dstConn receives one, and returns the source address dstConn saw.
func sendUntilReceived(ctx context.Context, t *testing.T, src, dstConn net.PacketConn, dst netip.AddrPort) netip.AddrPort {
	t.Helper()
	buf := make([]byte, 1500)
	for range 10 {
		if _, err := src.WriteTo([]byte("hello"), net.UDPAddrFromAddrPort(dst)); err != nil {
			t.Fatal(err)
		}
		if err := dstConn.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		for {
			n, from, err := dstConn.ReadFrom(buf)
			if err != nil {
				break
			}
			if string(buf[:n]) == "hello" {
				return addrPort(from)
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	t.Fatalf("nothing from %v arrived at %v", src.LocalAddr(), dst)
	return netip.AddrPort{}
}

// waitWANInput waits until router r has counted at least n packets
// arriving unsolicited at its WAN side.
func waitWANInput(ctx context.Context, t *testing.T, r *natlab.Router, n int) {
	t.Helper()
	re := regexp.MustCompile(`iifname "wan0" counter packets (\d+)`)
	for ctx.Err() == nil {
		out, err := r.Run(ctx, "nft", "list", "chain", "ip", "natlab", "input")
		if err != nil {
			t.Fatal(err)
		}
		if m := re.FindStringSubmatch(out); m != nil {
			if got, _ := strconv.Atoi(m[1]); got >= n {
				return
			}
		}
	}
	t.Fatalf("router %s never counted %d unsolicited WAN packets", r.Name(), n)
}

// hairpinSend sends from LAN host b to LAN host a's public mapping (both
// behind r) and returns where the packet seemed to come from, if it arrived.
func hairpinSend(t *testing.T, refl *natlab.Reflector, r *natlab.Router) (netip.AddrPort, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	hs := r.Hosts()
	ca, cb := listen(t, hs[0].Net()), listen(t, hs[1].Net())
	xa := mapped(ctx, t, ca, refl.Addr())
	xb := mapped(ctx, t, cb, refl.Addr())
	buf := make([]byte, 1500)
	for range 3 {
		if _, err := cb.WriteTo([]byte("hairpin"), net.UDPAddrFromAddrPort(xa)); err != nil {
			t.Fatal(err)
		}
		_ = ca.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, from, err := ca.ReadFrom(buf)
		if err == nil && string(buf[:n]) == "hairpin" {
			got := addrPort(from)
			if got != xb {
				t.Errorf("hairpinned source %v is not the sender's mapping %v", got, xb)
			}
			return got, true
		}
	}
	return netip.AddrPort{}, false
}

// replyShare sends count requests from n to server, paced, and returns the
// share answered.
func replyShare(t *testing.T, n transport.Net, server netip.AddrPort, count int) float64 {
	t.Helper()
	// Replies still on their way this long after the previous one are
	// counted as lost. In the lab a round trip takes well under a
	// millisecond; the margin is for a starved reader under -race.
	const idle = 500 * time.Millisecond
	c := listen(t, n)
	var got atomic.Int64
	var sent atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		seen := map[uint64]bool{}
		buf := make([]byte, 1500)
		for {
			// A deadline per read: one that expired while replies sat in
			// the socket buffer would fail the read and lose them.
			_ = c.SetReadDeadline(time.Now().Add(idle))
			k, _, err := c.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) && !sent.Load() {
					continue
				}
				return
			}
			if m, err := natlab.ParseMessage(buf[:k]); err == nil && m.Kind == natlab.KindResponse && !seen[m.TxID] {
				seen[m.TxID] = true
				got.Add(1)
			}
		}
	}()
	// Paced so that no socket buffer overflows: only the injected loss
	// should drop packets.
	// 1 ms apart: faster bursts overflow socket buffers on a loaded
	// machine, and those drops would count as injected loss.
	tick := time.NewTicker(time.Millisecond)
	for i := range count {
		<-tick.C
		m := natlab.Message{Kind: natlab.KindRequest, TxID: uint64(i + 1)}
		if _, err := c.WriteTo(m.Append(nil), net.UDPAddrFromAddrPort(server)); err != nil {
			t.Fatal(err)
		}
	}
	tick.Stop()
	sent.Store(true)
	wg.Wait()
	return float64(got.Load()) / float64(count)
}

// lossTarget is a Router or a Host.
type lossTarget interface {
	SetLoss(float64) error
	LossCounts(context.Context) (natlab.LossCounts, error)
}

// checkLoss injects 20 % loss per direction on target, reads the loss
// rule's counters and expects it to have dropped about 20 % of the packets
// it saw, at least one request and one reply for each round trip; then it
// removes the loss and expects the share answered before it. The round trips answered end to end must not exceed
// (1-0.2)^2 = 64 %; they may fall below it, as a loaded machine loses
// packets of its own (socket buffers), which the counters leave out.
func checkLoss(t *testing.T, target lossTarget, h *natlab.Host, server netip.AddrPort) {
	const (
		rate  = 0.2
		count = 1500
		want  = (1 - rate) * (1 - rate)
	)
	// What this machine answers without injected loss: a loaded one drops
	// some packets itself (socket buffers, a starved reader).
	base := replyShare(t, h.Net(), server, 300)
	if err := target.SetLoss(rate); err != nil {
		t.Fatal(err)
	}
	got := replyShare(t, h.Net(), server, count)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := target.LossCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	share := float64(c.Dropped) / float64(max(c.Seen, 1))
	// 4 standard deviations of a binomial share at c.Seen trials.
	tolerance := 4 * math.Sqrt(rate*(1-rate)/float64(max(c.Seen, 1)))
	// (1-rate)^2 of the round trips survive the rule; 4 standard deviations more may by chance.
	limit := want + 4*math.Sqrt(want*(1-want)/count)
	t.Logf("loss %.2f per direction: the rule dropped %d of %d packets (%.3f, want %.2f±%.3f); %.3f of %d round trips answered (at most %.3f)",
		rate, c.Dropped, c.Seen, share, rate, tolerance, got, count, limit)
	if c.Seen < count {
		t.Errorf("the loss rule saw %d packets, fewer than the %d requests sent through it", c.Seen, count)
	}
	if share < rate-tolerance || share > rate+tolerance {
		t.Errorf("the loss rule dropped %.3f of the packets it saw, want %.2f±%.3f", share, rate, tolerance)
	}
	if got > limit || got == 0 {
		t.Errorf("answered share %.3f, want some and at most %.3f", got, limit)
	}
	if err := target.SetLoss(0); err != nil {
		t.Fatal(err)
	}
	if c, err := target.LossCounts(ctx); err != nil || c != (natlab.LossCounts{}) {
		t.Errorf("after SetLoss(0) counters %+v (%v), want none", c, err)
	}
	// With the loss removed, as many answered as before it (99 %, or the
	// baseline less two points when the machine alone does worse).
	if got, want := replyShare(t, h.Net(), server, 300), min(0.99, base-0.02); got < want {
		t.Errorf("after SetLoss(0) only %.3f answered, want at least %.3f (%.3f before the loss)", got, want, base)
	}
}

// checkTimeout: on a symmetric router with a 2 s UDP timeout, a refreshed
// mapping keeps its random port, and one idle for longer gets a new one.
func checkTimeout(t *testing.T, r *natlab.Router, h *natlab.Host, server netip.AddrPort) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	out, err := r.Run(ctx, "sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout", "net.netfilter.nf_conntrack_udp_timeout_stream")
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(out); len(f) != 2 || f[0] != "2" || f[1] != "2" {
		t.Fatalf("router conntrack UDP timeouts %q, want 2 and 2", out)
	}
	c := listen(t, h.Net())
	first := mapped(ctx, t, c, server)
	// Waiting on the kernel's conntrack timer is the point of this test.
	time.Sleep(1 * time.Second)
	refreshed := mapped(ctx, t, c, server)
	if refreshed != first {
		t.Errorf("mapping changed from %v to %v while refreshed within the timeout", first, refreshed)
	}
	time.Sleep(3500 * time.Millisecond)
	expired := mapped(ctx, t, c, server)
	t.Logf("mapping %v, after 1 s %v, after 3.5 s idle %v", first, refreshed, expired)
	if expired == refreshed {
		t.Errorf("mapping %v survived 3.5 s idle with a 2 s timeout", expired)
	}
}

// checkPunch: hosts behind two port-restricted NATs learn their mappings
// from the reflector and punch to each other with in-process sockets from
// Host.Net.
func checkPunch(t *testing.T, server netip.AddrPort, a, b *natlab.Host) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	ca, cb := listen(t, a.Net()), listen(t, b.Net())
	xa, xb := mapped(ctx, t, ca, server), mapped(ctx, t, cb, server)
	if xa.Addr() != a.Router().PublicIP() || xb.Addr() != b.Router().PublicIP() {
		t.Fatalf("mappings %v, %v are not the routers' public IPs", xa, xb)
	}
	var gotA, gotB atomic.Bool
	var wg sync.WaitGroup
	side := func(c net.PacketConn, peer netip.AddrPort, got, other *atomic.Bool) {
		defer wg.Done()
		buf := make([]byte, 1500)
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) && !(got.Load() && other.Load()) {
			_, _ = c.WriteTo([]byte("punch"), net.UDPAddrFromAddrPort(peer))
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			n, from, err := c.ReadFrom(buf)
			if err == nil && string(buf[:n]) == "punch" && addrPort(from) == peer {
				got.Store(true)
			}
		}
	}
	wg.Add(2)
	go side(ca, xb, &gotA, &gotB)
	go side(cb, xa, &gotB, &gotA)
	wg.Wait()
	if !gotA.Load() || !gotB.Load() {
		t.Fatalf("punch %v <-> %v: A received %t, B received %t", xa, xb, gotA.Load(), gotB.Load())
	}
}

// checkTCP: a LAN host dials a public host's TCP listener through its NAT;
// the server sees the router's public address.
func checkTCP(t *testing.T, server, client *natlab.Host) {
	l, err := server.Net().ListenTCP("tcp4", &net.TCPAddr{IP: server.IP().AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	remote := make(chan netip.Addr, 1)
	go func() {
		c, err := l.AcceptTCP()
		if err != nil {
			remote <- netip.Addr{}
			return
		}
		defer c.Close()
		ap := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		remote <- ap.Addr().Unmap()
	}()
	c, err := client.Net().Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case got := <-remote:
		if got != client.Router().PublicIP() {
			t.Errorf("server saw %v, want the NAT's public address %v", got, client.Router().PublicIP())
		}
	case <-time.After(testTimeout):
		t.Fatal("no TCP connection accepted")
	}
}

// checkExec: Run, Start/Stop by PID, and re-running this test binary inside
// the namespace.
func checkExec(t *testing.T, h *natlab.Host) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	out, err := h.Run(ctx, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, h.IP().String()+"/") {
		t.Errorf("ip addr inside %s: %q lacks %v", h.Name(), out, h.IP())
	}

	p, err := h.Start(ctx, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.PID())); err != nil {
		t.Fatalf("started pid %d not running: %v", p.PID(), err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if err := syscall.Kill(p.PID(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("pid %d still exists after Stop (kill 0: %v)", p.PID(), err)
	}

	out, err = h.RunTest(ctx, "TestLabChild")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "child addrs: ") || !strings.Contains(out, " "+h.IP().String()+"/") {
		t.Errorf("child test output lacks the host's address %v:\n%s", h.IP(), out)
	}
}

// TestLabChild runs only inside a lab namespace (started by checkExec via
// Host.RunTest): it prints the addresses it sees.
func TestLabChild(t *testing.T) {
	if os.Getenv(natlab.ChildEnv) == "" {
		t.Skip("helper for TestLab/exec; runs only inside a lab namespace")
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, a := range addrs {
		s = append(s, a.String())
	}
	fmt.Printf("child addrs: %s \n", strings.Join(s, " "))
}

// TestTeardown checks that a lab's namespaces and processes are gone when
// its test ends, including when the test panics.
func TestTeardown(t *testing.T) {
	natlab.Require(t)
	var prefix string
	var pid int
	t.Run("lab", func(t *testing.T) {
		lab := natlab.New(t)
		prefix = lab.Prefix()
		h := lab.AddRouter(natlab.RouterConfig{}).AddHost("a")
		p, err := h.Start(context.Background(), "sleep", "60")
		if err != nil {
			t.Fatal(err)
		}
		pid = p.PID()
	})
	assertGone(t, prefix)
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d outlived its lab (kill 0: %v)", pid, err)
	}

	// A panicking test: run it in a child process (a panic ends the whole
	// test binary) and check the child's lab is gone anyway.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestLabPanicChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "NATLAB_PANIC_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("panicking child succeeded:\n%s", out)
	}
	m := regexp.MustCompile(`lab prefix: (\S+)`).FindSubmatch(out)
	if m == nil || !strings.Contains(string(out), "panic: deliberate") {
		t.Fatalf("child output lacks its prefix or panic:\n%s", out)
	}
	assertGone(t, string(m[1]))
}

// TestLabPanicChild builds a lab and panics; run by TestTeardown.
func TestLabPanicChild(t *testing.T) {
	if os.Getenv("NATLAB_PANIC_CHILD") == "" {
		t.Skip("helper for TestTeardown")
	}
	lab := natlab.New(t)
	lab.AddRouter(natlab.RouterConfig{}).AddHost("a")
	fmt.Printf("lab prefix: %s\n", lab.Prefix())
	panic("deliberate")
}

func assertGone(t *testing.T, prefix string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if prefix == "" || strings.Contains(string(out), prefix) {
		t.Errorf("namespaces of lab %q still exist:\n%s", prefix, out)
	}
}

// TestRemoveStale: a namespace of our family whose creator is dead goes; one
// whose creator is alive stays.
func TestRemoveStale(t *testing.T) {
	natlab.Require(t)
	dead := fmt.Sprintf("sdb%d-beef-stale", 2147483646) // above any pid_max
	live := fmt.Sprintf("sdb%d-beef-live", os.Getpid())
	other := "sdbx-not-ours"
	for _, ns := range []string{dead, live, other} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	removed, err := natlab.RemoveStale(t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(removed, ",") != dead {
		t.Errorf("removed %v, want only %s", removed, dead)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if !strings.Contains(string(out), live) || !strings.Contains(string(out), other) {
		t.Errorf("live or foreign namespace removed:\n%s", out)
	}
}
