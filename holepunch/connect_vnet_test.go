package holepunch_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/transport/v2/vnet"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/holepunch/dhtlink"
	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/turnserver"
)

// vnetCellTimeout bounds one cell: a direct attempt (ICE, or birthday
// punching for symmetric vs port-restricted) and, for symmetric pairs, the
// relay attempt. On vnet a round trip takes microseconds.
const vnetCellTimeout = 30 * time.Second

// vnetEcho is what each cell echoes: enough to move many SCTP packets
// through the path (and the relay) while keeping the grid fast; the NAT lab
// grid echoes 1 MiB over real sockets.
const vnetEcho = 64 << 10

// vnetNAT is the pion vnet NAT behaving as each lab type (RFC 4787 mapping
// and filtering); nil means a host directly on the WAN.
func vnetNAT(typ natlab.NATType) *vnet.NATType {
	nat := func(m, f vnet.EndpointDependencyType) *vnet.NATType {
		return &vnet.NATType{MappingBehavior: m, FilteringBehavior: f}
	}
	switch typ {
	case natlab.FullCone:
		return nat(vnet.EndpointIndependent, vnet.EndpointIndependent)
	case natlab.Restricted:
		return nat(vnet.EndpointIndependent, vnet.EndpointAddrDependent)
	case natlab.PortRestricted:
		return nat(vnet.EndpointIndependent, vnet.EndpointAddrPortDependent)
	case natlab.Symmetric:
		return nat(vnet.EndpointAddrPortDependent, vnet.EndpointAddrPortDependent)
	}
	return nil
}

// vnetHost is a host to be: its net and IP.
type vnetHost struct {
	net *vnet.Net
	ip  string
}

// TestConnectVNet is TestConnectNATLab's grid on pion's vnet, without root:
// every ordered pair of {open, fullcone, restricted, portrestricted,
// symmetric} plus two hosts behind one NAT. Each cell dials by key, echoes
// vnetEcho bytes and asserts the path: direct wherever one side has
// endpoint-independent mapping, relay (TURN from a public node, offered over
// the DHT) when both are symmetric, lan behind one NAT.
//
// What vnet models, and how it differs from the kernel NATs of the lab:
//   - A symmetric vnet NAT allocates mapped ports sequentially (0xC000,
//     0xC001, ... in order of new mappings), not at random. Birthday
//     punching (symmetric vs port-restricted) still works unchanged: the
//     easy side's probes are uniformly random, so the chance that one lands
//     on one of the hard side's mapped ports depends only on how many ports
//     the hard side holds, not on where they are. The cells assert direct,
//     as in the lab.
//   - vnet does no hairpinning, so the same-NAT cell can only connect over
//     the private addresses: the lan path, as in the lab.
//   - No packet loss or latency is configured; timings are not meaningful
//     beyond "fast".
//   - vnet sockets report senders as 16-byte (IPv4-mapped) net.IPs, where
//     stdnet's udp4 sockets report 4-byte ones, as a dual-stack socket
//     would; the endpoint must compare addresses unmapped (it once did not,
//     and the birthday cells timed out here).
func TestConnectVNet(t *testing.T) {
	testutil.CheckLeaks(t) // first registered: runs after every other cleanup

	v, err := testnet.NewVNet()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.AddDHTServers(3); err != nil {
		t.Fatal(err)
	}
	// A public node that serves a TURN relay and offers it over the DHT.
	const turnIP = "203.0.113.10"
	turnNet, err := v.AddPublic(turnIP)
	if err != nil {
		t.Fatal(err)
	}

	types := natlab.Types()
	hosts := map[string]vnetHost{} // "s-<type>", "c-<type>", "same-c", "same-s"
	k := 0
	addBehind := func(typ natlab.NATType, names ...string) {
		t.Helper()
		k++
		nat := vnetNAT(typ)
		if nat == nil {
			for j, name := range names {
				ip := fmt.Sprintf("203.0.113.%d", 20+2*k+j)
				vn, err := v.AddPublic(ip)
				if err != nil {
					t.Fatal(err)
				}
				hosts[name] = vnetHost{vn, ip}
			}
			return
		}
		lan, err := v.AddNAT(fmt.Sprintf("10.%d.0.0/24", k), fmt.Sprintf("203.0.113.%d", 100+k), nat)
		if err != nil {
			t.Fatal(err)
		}
		for j, name := range names {
			ip := fmt.Sprintf("10.%d.0.%d", k, 2+j)
			vn, err := v.AddLANHost(lan, ip)
			if err != nil {
				t.Fatal(err)
			}
			hosts[name] = vnetHost{vn, ip}
		}
	}
	for _, typ := range types {
		addBehind(typ, "s-"+string(typ))
		addBehind(typ, "c-"+string(typ))
	}
	addBehind(natlab.PortRestricted, "same-c", "same-s")

	ctx, cancel := context.WithTimeout(context.Background(), vnetCellTimeout)
	defer cancel()
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close) // after the peers' and the relay's cleanups below

	turnSrv := turnserver.New(turnserver.Config{Net: turnNet, ListenAddr: turnIP + ":3478"})
	if err := turnSrv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { turnSrv.Close() })
	turnNode := dht.New(dht.Config{Net: turnNet, ListenAddr: turnIP + ":49737", Mode: dht.ModePersistent,
		Bootstrap: v.Bootstrap, OnTURN: dhtlink.TURNHandler(turnSrv)})
	if err := turnNode.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { turnNode.Close() })
	if err := turnNode.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	// Peers measure their NAT against, and ask for TURN offers from, the
	// first DHT server and the relay's node.
	linkBoot := []netip.AddrPort{v.Bootstrap[0], turnNode.LocalAddr()}

	peers := map[string]*peer{}
	for name, h := range hosts {
		link := dhtlink.New()
		node := dht.New(dht.Config{Net: h.net, ListenAddr: h.ip + ":0", Bootstrap: v.Bootstrap, Mode: dht.ModeEphemeral,
			OnSignal: link.HandleSignal})
		if err := node.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { node.Close() })
		peers[name] = newPeer(t, node, link, linkBoot, h.net, nil) // starts the NAT measurement
	}
	for name, p := range peers {
		r := p.ep.WaitNAT(ctx)
		typ := name[len("s-"):]
		if name == "same-c" || name == "same-s" {
			typ = string(natlab.PortRestricted)
		}
		if string(r.Class) != typ {
			t.Fatalf("%s measured its NAT as %q (mapping %s, filtering %s)", name, r.Class, r.Mapping, r.Filtering)
		}
	}

	var cells []gridCell
	for _, ct := range types {
		for _, st := range types {
			want := holepunch.PathDirect
			if ct == natlab.Symmetric && st == natlab.Symmetric {
				want = holepunch.PathRelay
			}
			cells = append(cells, gridCell{fmt.Sprintf("%s-to-%s", ct, st), peers["c-"+string(ct)], peers["s-"+string(st)], want})
		}
	}
	cells = append(cells, gridCell{"same-nat", peers["same-c"], peers["same-s"], holepunch.PathLAN})
	listened := map[*peer]bool{}
	for _, c := range cells {
		if !listened[c.server] {
			listened[c.server] = true
			c.server.listen(t)
		}
	}

	results := map[string]string{}
	for _, c := range cells {
		t.Run(c.name, func(t *testing.T) {
			conn, s := connectEcho(t, c.client, c.server, vnetCellTimeout, bytes.Repeat([]byte{0xa5}, vnetEcho), results, c.name)
			results[c.name] = fmt.Sprintf("%s %dms", conn.Path(), conn.ConnectTime.Milliseconds())
			if conn.Path() != c.want || s.Path() != c.want {
				results[c.name] += " WRONG"
				t.Fatalf("path client %s server %s, want %s", conn.Path(), s.Path(), c.want)
			}
		})
	}
	results["double-nat-to-portrestricted"] = "(lab only)"
	t.Log("\n" + formatGrid(types, results, ""))
}
