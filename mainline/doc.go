// Package mainline is a node of the BitTorrent mainline DHT (BEP 5), the
// largest DHT there is, built on github.com/anacrolix/dht/v2 and run on the
// swarmdb node's UDP sockets (the IPv4 one, and the IPv6 one when the node
// has it: the library speaks BEP 32 over both). swarmdb uses it for two
// things:
//
//   - finding peers with no known address: ToolDb servers and clients that
//     use discovery-channel announce and look up SHA-1(topic) here
//     (TopicInfohash), and publicly reachable swarmdb nodes announce their
//     UDP address under a fixed name (BootstrapInfohash) so that a new node
//     finds a swarmdb DHT to join without being given one;
//   - nothing else: it stores no BEP 44 items and carries no data.
//
// The library needs care, and this package is where it is taken (see
// DESIGN and shared/reference/mainline.md): its default peer store is nil
// (no tokens, no stored announces) and its in-memory one returns no IPv4
// peers, so peerStore replaces it; its read loop panics on a read error
// from the socket and its Close closes the socket, so it reads from
// packetConn, which blocks until its own close and never closes the shared
// socket; its send limiter is process-global by default, so every Node has
// its own; its log goes to slog; malformed KRPC is dropped here before the
// library would print it to stderr.
//
// A node behind NAT is read-only (BEP 43: it answers no queries and asks
// others not to add it to their tables) until its owner learns that it is
// reachable (SetReachable).
//
// Users: package node (the only one that wires it), tests and the
// benchmark. It imports nothing of ours but internal/demux.
package mainline
