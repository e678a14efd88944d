// Package portmap asks the home router for port mappings, so that a node
// behind it can be reached from the internet: its UDP socket (DHT, hole
// punching, sessions) and, optionally, its WebSocket's TCP port.
//
// Three protocols, tried in this order:
//
//   - PCP, the Port Control Protocol (RFC 6887): our own MAP/ANNOUNCE
//     client. pcp_wire.go is a pure codec (AppendPCPRequest,
//     ParsePCPResponse, golden vectors and fuzz targets), pcp.go the I/O.
//   - NAT-PMP (RFC 6886) through github.com/jackpal/go-nat-pmp. A
//     NAT-PMP-only server answers a PCP request with "unsupported version",
//     which is how the client knows to switch.
//   - UPnP Internet Gateway Device through github.com/huin/goupnp
//     (WANIPConnection:2, :1, WANPPPConnection:1). Its discovery runs while
//     PCP and NAT-PMP are tried, and it maps only when neither answered.
//
// A Client (client.go) keeps the mappings: it renews them at half their
// lifetime, checks every few minutes that the gateway still holds them (a
// PCP or NAT-PMP epoch that went backwards means the router restarted,
// epoch.go; a UPnP entry that is gone means the same), maps again when it
// does not, and deletes them on Close. Its timing is a pure state machine
// with time as input (schedule.go).
//
// Sockets: PCP, SSDP and UPnP's HTTP go through the injected
// transport.Net. go-nat-pmp has no hook for another network, so NAT-PMP
// runs only on the system network (stdnet). The gateway is the default
// route's next hop from /proc/net/route on the system network
// (gateway.go); on any other network it must be given (Config.Gateway).
//
// Users: package node (the node's socket and WebSocket) and cmd/swarmdb
// (netcheck). portmap imports no other swarmdb package.
package portmap
