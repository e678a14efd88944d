// Package holepunch owns NAT traversal for a swarmdb node: measuring its
// own NAT and connecting to a peer by public key through any NAT.
//
//   - classify.go, netcheck.go: the NAT report (RFC 4787/5780 terms);
//     monitor.go re-measures when local or reflexive addresses change.
//   - endpoint.go (dialling), accept.go (answering), signal.go: connect by
//     key. Noise IK message 1 and 2 travel through the peer's DHT relays and
//     carry the ICE credentials, candidates and NAT class (signal.go), so
//     relays can neither read nor alter them. admission.go decides which
//     message 1 to answer (limits, replay, firewall, glare), a pure core;
//     endpoint_state.go holds the endpoint's state, one lock per concern.
//     The endpoint alone keeps one connection per remote key (package
//     swarm relies on it).
//   - ice.go: pion/ice/v2 agents on the node's one shared UDP socket.
//     A router port mapping (EndpointConfig.Mapped) is one more candidate
//     in the signaling, which then states endpoint-independent filtering.
//   - birthday.go, birthday_path.go: birthday-paradox punching when one side
//     has endpoint-dependent mapping and the other filters by port.
//   - turn_server.go: the TURN relay public nodes run for the rest.
//
// The protocol cores are pure (Classify, parseSignal, birthdayRole, the
// birthday easy-side core); managers own sockets and timers.
//
// holepunch must not import package dht: it reaches the DHT only through
// interfaces it defines (Prober, Link). The adapters over *dht.Node live in
// holepunch/dhtprobe and holepunch/dhtlink. Users: swarm, cmd/swarmdb, node.
package holepunch
