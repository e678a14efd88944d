package mainline

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/internal/udpopt"
)

// dualNode is a node that shares two sockets, one per family, the way a
// swarmdb node shares its DHT's: both hand their KRPC datagrams to
// HandlePacket, and Write picks the socket of the destination's family.
func dualNode(t *testing.T, routers []netip.AddrPort) (*Node, netip.AddrPort, netip.AddrPort) {
	t.Helper()
	c4, c6 := listen(t, "127.0.0.1:0"), listen6(t)
	a4 := udpopt.AddrPortOf(c4.LocalAddr())
	a6 := udpopt.AddrPortOf(c6.LocalAddr())
	write := func(b []byte, to netip.AddrPort) error {
		c := c4
		if !to.Addr().Unmap().Is4() {
			c = c6
		}
		_, err := c.WriteTo(b, net.UDPAddrFromAddrPort(to))
		return err
	}
	n, err := New(Config{Write: write, LocalAddr: a4, Routers: routers, QueryTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, c := range []net.PacketConn{c4, c6} {
		wg.Go(func() {
			buf := make([]byte, 2048)
			for {
				nr, from, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				if ap := udpopt.AddrPortOf(from); ap.IsValid() {
					n.HandlePacket(buf[:nr], ap)
				}
			}
		})
	}
	t.Cleanup(func() {
		n.Close()
		c4.Close()
		c6.Close()
		wg.Wait()
	})
	return n, a4, a6
}

func listen6(t *testing.T) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	return c
}

// BEP 32 on a mixed network, as anacrolix/dht supports it: IPv4-only and
// IPv6-only nodes and a dual-stack node that shares two sockets. The dual
// node's announce (implied port) is stored under its IPv4 address by IPv4
// nodes and under its IPv6 one by IPv6 nodes; an IPv6-only looker finds
// the IPv6 one, an IPv4-only looker the IPv4 one, and the dual node finds
// peers announced in either family.
func TestBEP32MixedNetwork(t *testing.T) {
	first4 := startNode(t, nil, nil)
	first6 := startNode(t, nil, func(c *Config) { c.Conn = listen6(t) })
	routers := []netip.AddrPort{first4.LocalAddr(), first6.LocalAddr()}
	var only4, only6 []*Node
	for range 4 {
		only4 = append(only4, startNode(t, routers[:1], nil))
		only6 = append(only6, startNode(t, routers[1:], func(c *Config) { c.Conn = listen6(t) }))
	}
	dual, a4, a6 := dualNode(t, routers)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ih := TopicInfohash("swarmdb-bep32")
	if _, err := dual.Announce(ctx, ih, 0, true, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := only6[0].Announce(ctx, ih, 0, true, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := only4[0].Announce(ctx, ih, 0, true, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		looker *Node
		want   []netip.AddrPort
	}{
		{"ipv6-only looker", only6[3], []netip.AddrPort{a6, only6[0].LocalAddr()}},
		{"ipv4-only looker", only4[3], []netip.AddrPort{a4, only4[0].LocalAddr()}},
		{"dual looker", dual, []netip.AddrPort{only4[0].LocalAddr(), only6[0].LocalAddr()}},
	} {
		// An announce returns before the nodes it asked to store it have
		// done so (its announce_peer queries may still be on their way), so
		// a lookup at once can miss it: look again for a while. Looking once
		// failed about 1 run in 30; after a 200 ms pause, 1 in 300.
		var res Result
		testutil.Poll(5*time.Second, 50*time.Millisecond, func() bool {
			var err error
			res, err = c.looker.Lookup(ctx, ih, nil)
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%s: %v", c.name, err)
			}
			return containsAll(res.Peers, c.want)
		})
		for _, w := range c.want {
			if !slices.Contains(res.Peers, w) {
				t.Errorf("%s found %v, want %s among them", c.name, res.Peers, w)
			}
		}
	}
}

func containsAll(have, want []netip.AddrPort) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
