package dht

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"

	"github.com/swarmdb/swarmdb/internal/udpopt"
)

// Family is an IP address family. A node has one UDP socket per family it
// speaks, and each family is an overlay of its own, as BEP 32 does for the
// mainline DHT: a node's id in a family is NodeID of its public address in
// that family, its routing table for the family holds only that family's
// nodes, and a request that arrives over a family is answered with closer
// nodes of that family. A node that speaks both families joins both
// overlays and announces its records in both, so a looker in either finds
// them; a node that speaks one (every node before IPv6, and every IPv4-only
// or IPv6-only host) sees exactly the overlay it can reach.
//
// Why a socket per family and not one dual-stack socket: the IPv4 socket
// stays exactly what it was (same bind, same behaviour for IPv4-only
// peers); a node bound to one IPv4 address cannot have a dual-stack socket
// anyway; pion's vnet, on which the fast tests run, has no IPv6 at all, so
// the IPv6 socket simply fails to open there; each family gets its own
// socket buffer; and an IPv4 datagram through a dual-stack socket costs
// the same as through an IPv4 one (BenchmarkSocketFamily), so nothing is
// lost. When the IPv4 socket is bound to every interface, the IPv6 socket
// takes the same port number, so users see, forward and publish one port.
type Family uint8

const (
	// IPv4 is the family of IPv4 addresses (and IPv4-mapped IPv6 ones).
	IPv4 Family = iota
	// IPv6 is the family of IPv6 addresses.
	IPv6
	numFamilies
)

// Families lists every family, IPv4 first.
var Families = [numFamilies]Family{IPv4, IPv6}

func (f Family) String() string {
	if f == IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

// network is the network name of the family's socket.
func (f Family) network() string {
	if f == IPv6 {
		return "udp6"
	}
	return "udp4"
}

// bit is the family's bit in a want mask (request options).
func (f Family) bit() byte { return 1 << f }

// FamilyOf returns the family of a's address; IPv4-mapped IPv6 addresses
// are IPv4.
func FamilyOf(a netip.AddrPort) Family {
	if a.Addr().Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// stack is the node's presence in one family: its socket there, its
// identity in that family's overlay, its routing table and the reflexive
// addresses that family's nodes report.
type stack struct {
	fam Family

	// Set by Start, then immutable.
	conn     net.PacketConn // nil: the node has no socket of this family
	local    netip.AddrPort
	noFrag   bool                  // conn sends with the IP Don't Fragment bit (udpopt.SetDontFragment)
	gro      bool                  // conn coalesces received runs (udpopt.SetGRO); readLoop splits them
	segments *udpopt.SegmentWriter // conn's batched sends (WriteSegments)

	lookingAgain atomic.Bool // a join's repeated lookups run (lookAgain)

	// Guarded by Node.mu.
	persistent bool
	id         ID             // meaningful when persistent; a random id otherwise
	at         netip.AddrPort // when persistent: the address id derives from
	table      *routingTable
	samples    []addrSample // reflexive addresses seen by this family's nodes
	// probes are the isolated other-node NAT probes' records (reach.go);
	// probesChanged is closed and replaced whenever one changes.
	probes        []probeRecord
	probesChanged chan struct{}
}

func newStack(fam Family, k int) *stack {
	var random ID
	fillRandom(random[:])
	return &stack{fam: fam, id: random, table: newRoutingTable(random, k), probesChanged: make(chan struct{})}
}

// joinedLocked reports whether the node takes part in the stack's overlay:
// it has a socket there and a node of the family answered or it is
// persistent there.
func (s *stack) joinedLocked() bool {
	return s.conn != nil && (s.persistent || len(s.samples) > 0 || s.table.len() > 0)
}

// otherFamily returns the family that is not f.
func otherFamily(f Family) Family { return 1 - f }

// stackFor returns the stack of a's family.
func (n *Node) stackFor(a netip.AddrPort) *stack { return n.stacks[FamilyOf(a)] }

// listenPlan is one socket Start opens.
type listenPlan struct {
	fam      Family
	addr     string
	required bool // a failure fails Start; otherwise the family is left out
	samePort bool // addr's port is taken from the IPv4 socket
}

// ListenOff, as Config.ListenAddr6, opens no IPv6 socket.
const ListenOff = "off"

// plan decides the sockets of a configuration (see Config.ListenAddr6):
// the primary family is the family of ListenAddr.
func (c Config) plan() (primary Family, plans []listenPlan, err error) {
	host, port, err := net.SplitHostPort(c.ListenAddr)
	if err != nil {
		return IPv4, nil, fmt.Errorf("dht: listen address %q: %w", c.ListenAddr, err)
	}
	ip, literal := netip.ParseAddr(host)
	if literal == nil && ip.Is6() && !ip.Is4In6() {
		// An IPv6 ListenAddr makes an IPv6-only node.
		return IPv6, []listenPlan{{fam: IPv6, addr: c.ListenAddr, required: true}}, nil
	}
	plans = []listenPlan{{fam: IPv4, addr: c.ListenAddr, required: true}}
	switch {
	case c.ListenAddr6 == ListenOff:
	case c.ListenAddr6 != "":
		plans = append(plans, listenPlan{fam: IPv6, addr: c.ListenAddr6, required: true})
	case host == "" || (literal == nil && ip.IsUnspecified()):
		// Every interface: IPv6 too, on the same port when it is free.
		plans = append(plans, listenPlan{fam: IPv6, addr: net.JoinHostPort("::", port), samePort: true})
	}
	return IPv4, plans, nil
}

// withPort returns addr ("host:port") with its port replaced.
func withPort(addr string, port uint16) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}
