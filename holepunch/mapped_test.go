package holepunch_test

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/natcheck"
)

// symmetric is a NAT measurement of endpoint-dependent mapping: two of
// those make a server refuse direct dials (both would need a relay).
func symmetric(context.Context, func(natcheck.Report)) (natcheck.Report, error) {
	return natcheck.Report{Mapping: natcheck.MappingEndpointDependent, Filtering: natcheck.FilteringAddressAndPortDependent,
		Class: natcheck.ClassSymmetric}, nil
}

// TestMappedAvoidsRelay: two peers that both measured a symmetric NAT are
// sent to the relay (there is none on the loopback network, so the dial
// fails with ErrBothSymmetric). When the server has a router port mapping
// (here: its own socket, as a router forwarding to it), its signaling says
// anyone may reach it there, and the same dial connects directly.
func TestMappedAvoidsRelay(t *testing.T) {
	n := startNet(t, 6)
	sym := func(c *holepunch.EndpointConfig) { c.MeasureNAT = symmetric }
	server := addPeer(t, n, sym)
	client := addPeer(t, n, sym)
	server.listen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	server.ep.WaitNAT(ctx)
	client.ep.WaitNAT(ctx)
	_, err := client.ep.Connect(ctx, server.pub, nil)
	if !errors.Is(err, holepunch.ErrBothSymmetric) {
		t.Fatalf("symmetric to symmetric without a mapping: %v, want ErrBothSymmetric", err)
	}

	var addr atomic.Pointer[netip.AddrPort] // known once the node's socket is
	server2 := addPeer(t, n, func(c *holepunch.EndpointConfig) {
		c.MeasureNAT = symmetric
		c.Mapped = func() netip.AddrPort {
			if a := addr.Load(); a != nil {
				return *a
			}
			return netip.AddrPort{}
		}
	})
	local := server2.node.LocalAddr()
	addr.Store(&local)
	server2.listen(t)
	server2.ep.WaitNAT(ctx)
	c, err := client.ep.Connect(ctx, server2.pub, nil)
	if err != nil {
		t.Fatalf("symmetric to a port-mapped symmetric peer: %v", err)
	}
	defer c.Close()
	s := server2.accept(t)
	defer s.Close()
	t.Logf("connected in %v over %s", c.ConnectTime.Round(time.Millisecond), c.Path())
}
