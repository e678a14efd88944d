package dhtprobe_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/transport/v2/vnet"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/demux"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/natcheck/dhtprobe"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// vnetTimeout bounds one classification on the virtual network, where a
// round trip takes microseconds: only the probe waits take real time.
const vnetTimeout = 15 * time.Second

// TestVNetClassify runs the whole netcheck path (DHT node, STUN through
// the node's STUN handler, NAT_PROBE, Classify) behind each of pion vnet's
// NAT types and asserts the classic class. vnet implements
// endpoint-independent, address-dependent and address-and-port-dependent
// mapping and filtering (not hairpinning), so every classic type has a cell
// here.
func TestVNetClassify(t *testing.T) {
	// Four persistent public DHT servers on distinct IPs: the other-node
	// probe needs a helper on an IP other than the server's and the client's.
	v, err := testnet.NewVNet()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.AddDHTServers(4); err != nil {
		t.Fatal(err)
	}

	type cell struct {
		name string
		nat  *vnet.NATType // nil: host directly on the WAN
		want natcheck.Class
	}
	natOf := func(m, f vnet.EndpointDependencyType) *vnet.NATType {
		return &vnet.NATType{MappingBehavior: m, FilteringBehavior: f}
	}
	cells := []cell{
		{"open", nil, natcheck.ClassOpen},
		{"fullcone", natOf(vnet.EndpointIndependent, vnet.EndpointIndependent), natcheck.ClassFullCone},
		{"restricted", natOf(vnet.EndpointIndependent, vnet.EndpointAddrDependent), natcheck.ClassRestricted},
		{"portrestricted", natOf(vnet.EndpointIndependent, vnet.EndpointAddrPortDependent), natcheck.ClassPortRestricted},
		{"symmetric", natOf(vnet.EndpointAddrPortDependent, vnet.EndpointAddrPortDependent), natcheck.ClassSymmetric},
		{"symmetric-address-dependent-mapping", natOf(vnet.EndpointAddrDependent, vnet.EndpointAddrPortDependent), natcheck.ClassSymmetric},
	}
	clientNets := make([]*vnet.Net, len(cells))
	clientIPs := make([]string, len(cells))
	for i, c := range cells {
		if c.nat == nil {
			clientIPs[i] = "203.0.113.50"
			if clientNets[i], err = v.AddPublic(clientIPs[i]); err != nil {
				t.Fatal(err)
			}
			continue
		}
		lan, err := v.AddNAT(fmt.Sprintf("10.%d.0.0/24", i), fmt.Sprintf("203.0.113.%d", 100+i), c.nat)
		if err != nil {
			t.Fatal(err)
		}
		clientIPs[i] = fmt.Sprintf("10.%d.0.2", i)
		if clientNets[i], err = v.AddLANHost(lan, clientIPs[i]); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), vnetTimeout)
	defer cancel()
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	boot, allServers := v.Bootstrap, v.ServerAddrs()

	for i, c := range cells {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), vnetTimeout)
			defer cancel()
			p := dhtprobe.New()
			node := dht.New(dht.Config{Net: clientNets[i], ListenAddr: clientIPs[i] + ":0", Mode: dht.ModeEphemeral,
				Bootstrap: boot, RequestTimeout: time.Second})
			node.Handle(demux.STUN, p.HandlePacket)
			p.Attach(node)
			if err := node.Start(); err != nil {
				t.Fatal(err)
			}
			defer node.Close()
			rep, err := natcheck.Check(ctx, natcheck.CheckConfig{
				Prober:    p,
				Servers:   boot,
				Local:     node.LocalAddr(),
				ProbeWait: 600 * time.Millisecond,
				Hairpin:   true,
				Discover: func(ctx context.Context) ([]netip.AddrPort, error) {
					if err := node.Bootstrap(ctx); err != nil {
						return nil, err
					}
					return allServers, nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: public %s mapping %s filtering %s hairpin %v confidence %s (%d/%d agree)",
				rep.Class, rep.PublicAddr, rep.Mapping, rep.Filtering, deref(rep.Hairpin), rep.Confidence, rep.Agreeing, rep.Answered)
			if rep.Class != c.want {
				t.Fatalf("class %s, want %s (report %+v)", rep.Class, c.want, rep)
			}
			if rep.Answered != len(allServers) || rep.Confidence != natcheck.ConfidenceHigh {
				t.Fatalf("answered %d of %d, confidence %s", rep.Answered, len(allServers), rep.Confidence)
			}
			wantIP := fmt.Sprintf("203.0.113.%d", 100+i)
			if c.nat == nil {
				wantIP = clientIPs[i]
			}
			if rep.PublicAddr.Addr() != netip.MustParseAddr(wantIP) {
				t.Fatalf("public %s, want IP %s", rep.PublicAddr, wantIP)
			}
		})
	}
}

func deref(b *bool) any {
	if b == nil {
		return "unmeasured"
	}
	return *b
}
