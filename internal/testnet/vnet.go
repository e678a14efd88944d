package testnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v2/vnet"

	"github.com/swarmdb/swarmdb/dht"
)

// VNetDHTPort is the port the public DHT servers of a VNet listen on.
const VNetDHTPort = 49737

// VNet is an in-process internet on pion's vnet, for fast NAT tests without
// root: a WAN router on 203.0.113.0/24 (RFC 5737) holding public hosts,
// persistent DHT servers and NAT routers whose LANs hold more hosts.
//
// Build the topology first (AddDHTServers, AddPublic, AddNAT, AddLANHost),
// then Start it; Close stops the servers and the WAN. vnet routes only
// between nets added before Start.
type VNet struct {
	// Set by Start, then immutable.
	Servers   []*dht.Node      // the persistent DHT servers, in the order added
	Bootstrap []netip.AddrPort // the first server

	lf         logging.LoggerFactory
	wan        *vnet.Router
	serverIPs  []string
	serverNets []*vnet.Net
	started    bool
}

// NewVNet returns an empty WAN.
func NewVNet() (*VNet, error) {
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	wan, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: "203.0.113.0/24", LoggerFactory: lf})
	if err != nil {
		return nil, fmt.Errorf("testnet: vnet WAN: %w", err)
	}
	return &VNet{lf: lf, wan: wan}, nil
}

// AddPublic adds a host with address ip on the WAN (no NAT).
func (v *VNet) AddPublic(ip string) (*vnet.Net, error) {
	return v.addNet(v.wan, ip)
}

// AddChunkFilter installs f on the WAN router: a chunk f returns false for is
// dropped (a lost packet).
func (v *VNet) AddChunkFilter(f vnet.ChunkFilter) { v.wan.AddChunkFilter(f) }

// AddDHTServers adds n public hosts 203.0.113.1 ... 203.0.113.n, each to
// run a persistent DHT node on VNetDHTPort once Start is called. The first
// is the bootstrap node. Several servers on distinct IPs let netcheck's
// other-node probe find a helper on an IP the client never sent to.
func (v *VNet) AddDHTServers(n int) error {
	for i := 1; i <= n; i++ {
		ip := fmt.Sprintf("203.0.113.%d", len(v.serverIPs)+1)
		vn, err := v.AddPublic(ip)
		if err != nil {
			return err
		}
		v.serverIPs = append(v.serverIPs, ip)
		v.serverNets = append(v.serverNets, vn)
	}
	return nil
}

// AddNAT adds a NAT router with WAN address publicIP and LAN lanCIDR
// ("10.1.0.0/24") behaving as nat.
func (v *VNet) AddNAT(lanCIDR, publicIP string, nat *vnet.NATType) (*vnet.Router, error) {
	lan, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: lanCIDR, StaticIPs: []string{publicIP}, NATType: nat, LoggerFactory: v.lf})
	if err != nil {
		return nil, fmt.Errorf("testnet: vnet NAT %s: %w", lanCIDR, err)
	}
	if err := v.wan.AddRouter(lan); err != nil {
		return nil, fmt.Errorf("testnet: vnet NAT %s: %w", lanCIDR, err)
	}
	return lan, nil
}

// AddLANHost adds a host with address ip on lan (a router from AddNAT).
func (v *VNet) AddLANHost(lan *vnet.Router, ip string) (*vnet.Net, error) {
	return v.addNet(lan, ip)
}

func (v *VNet) addNet(r *vnet.Router, ip string) (*vnet.Net, error) {
	if v.started {
		return nil, errors.New("testnet: vnet already started")
	}
	vn, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{ip}})
	if err != nil {
		return nil, fmt.Errorf("testnet: vnet host %s: %w", ip, err)
	}
	if err := r.AddNet(vn); err != nil {
		return nil, fmt.Errorf("testnet: vnet host %s: %w", ip, err)
	}
	return vn, nil
}

// Start starts the WAN (and every router under it), then the DHT servers,
// and joins them: each bootstraps through the first. On error everything
// started is stopped.
func (v *VNet) Start(ctx context.Context) error {
	if v.started {
		return errors.New("testnet: vnet already started")
	}
	v.started = true
	if err := v.wan.Start(); err != nil {
		return fmt.Errorf("testnet: vnet start: %w", err)
	}
	for i, ip := range v.serverIPs {
		n := dht.New(dht.Config{Net: v.serverNets[i], ListenAddr: fmt.Sprintf("%s:%d", ip, VNetDHTPort), Mode: dht.ModePersistent, Bootstrap: v.Bootstrap})
		if err := n.Start(); err != nil {
			v.Close()
			return err
		}
		v.Servers = append(v.Servers, n)
		if i == 0 {
			v.Bootstrap = []netip.AddrPort{n.LocalAddr()}
		}
	}
	for i, n := range v.Servers {
		if err := n.Bootstrap(ctx); err != nil {
			v.Close()
			return fmt.Errorf("testnet: vnet server %d: %w", i, err)
		}
	}
	// The servers learn of each other from the requests they answer, which
	// can still be in flight: wait until the bootstrap server knows all the
	// others (each joined through it) and every other server knows one, or
	// a NAT probe right after Start finds no stranger to send from.
	for i, n := range v.Servers {
		want := 1
		if i == 0 {
			want = len(v.Servers) - 1
		}
		for n.Stats().RoutingTable < want {
			select {
			case <-ctx.Done():
				v.Close()
				return fmt.Errorf("testnet: vnet server %d knows %d servers, want %d: %w", i, n.Stats().RoutingTable, want, ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}

// ServerAddrs returns every DHT server's address.
func (v *VNet) ServerAddrs() []netip.AddrPort {
	out := make([]netip.AddrPort, len(v.Servers))
	for i, n := range v.Servers {
		out[i] = n.LocalAddr()
	}
	return out
}

// Close closes the DHT servers and stops the WAN. Nodes the test started
// on the VNet's nets must be closed first.
func (v *VNet) Close() {
	for _, n := range v.Servers {
		n.Close()
	}
	if v.started {
		_ = v.wan.Stop()
	}
}
