package natlab_test

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/natlab"
)

// conntrackCount reads the router namespace's number of conntrack entries.
func conntrackCount(ctx context.Context, t *testing.T, r *natlab.Router) int {
	t.Helper()
	out, err := r.Run(ctx, "cat", "/proc/sys/net/netfilter/nf_conntrack_count")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("conntrack count %q: %v", out, err)
	}
	return n
}

// TestFlushConntrack: after FlushConntrack a router has no conntrack
// entries; behind a port-restricted NAT the peer's packets on the old flow
// are then dropped until the LAN host sends again, and behind a symmetric
// NAT a new flow from the same socket gets a new random port. Root only.
func TestFlushConntrack(t *testing.T) {
	lab := natlab.New(t)
	refl := lab.AddReflector("refl")
	peer := lab.AddPublicHost("peer")
	pr := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted})
	sym := lab.AddRouter(natlab.RouterConfig{Type: natlab.Symmetric})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	t.Run("portrestricted", func(t *testing.T) {
		h := pr.AddHost("h")
		hc, pc := listen(t, h.Net()), listen(t, peer.Net())
		peerAddr := netip.AddrPortFrom(peer.IP(), addrPort(pc.LocalAddr()).Port())
		from := sendUntilReceived(ctx, t, hc, pc, peerAddr)
		if from.Addr() != pr.PublicIP() {
			t.Fatalf("peer saw %v, want the router's address %v", from, pr.PublicIP())
		}
		// The mapping is open: the peer's answer gets in.
		sendUntilReceived(ctx, t, pc, hc, from)
		if n := conntrackCount(ctx, t, pr); n == 0 {
			t.Fatal("no conntrack entries before the flush")
		}
		drain(t, 200*time.Millisecond, hc, pc)
		if err := pr.FlushConntrack(); err != nil {
			t.Fatal(err)
		}
		if n := conntrackCount(ctx, t, pr); n != 0 {
			t.Fatalf("%d conntrack entries after the flush", n)
		}
		// The peer's packets are now unsolicited: none arrives.
		for range 5 {
			if _, err := pc.WriteTo([]byte("lost"), net.UDPAddrFromAddrPort(from)); err != nil {
				t.Fatal(err)
			}
		}
		if err := hc.SetReadDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if n, src, err := hc.ReadFrom(buf); err == nil {
			t.Fatalf("%q from %v got through a flushed port-restricted NAT", buf[:n], src)
		}
		// Once the host sends again it is mapped anew (the port is free,
		// so the router keeps it) and the peer gets through again.
		again := sendUntilReceived(ctx, t, hc, pc, peerAddr)
		sendUntilReceived(ctx, t, pc, hc, again)
		t.Logf("mapping %v before the flush, %v after", from, again)
	})

	t.Run("symmetric", func(t *testing.T) {
		c := listen(t, sym.AddHost("h").Net())
		first := mapped(ctx, t, c, refl.Addr())
		if same := mapped(ctx, t, c, refl.Addr()); same != first {
			t.Fatalf("mapping changed without a flush: %v then %v", first, same)
		}
		if err := sym.FlushConntrack(); err != nil {
			t.Fatal(err)
		}
		after := mapped(ctx, t, c, refl.Addr())
		t.Logf("mapping %v before the flush, %v after", first, after)
		if after == first {
			t.Fatalf("mapping %v survived the flush of a symmetric NAT", after)
		}
	})

	t.Run("open", func(t *testing.T) {
		if err := lab.AddRouter(natlab.RouterConfig{Type: natlab.Open}).FlushConntrack(); err != nil {
			t.Fatalf("open router: %v", err)
		}
	})
}

// drain reads and drops whatever still arrives at conns until none has received anything
// for quiet. sendUntilReceived sends again when an answer is slow, and a copy still on its
// way when the router is flushed passes it afterwards and opens the flow again (seen at a
// load of about 10: one conntrack entry after the flush).
func drain(t *testing.T, quiet time.Duration, conns ...net.PacketConn) {
	t.Helper()
	buf := make([]byte, 1500)
	for range 50 {
		got := false
		for _, c := range conns {
			if err := c.SetReadDeadline(time.Now().Add(quiet)); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.ReadFrom(buf); err == nil {
				got = true
			}
		}
		if !got {
			return
		}
	}
	t.Fatal("packets kept arriving")
}
