// Package holepunch connects a swarmdb node to a peer by public key
// through any NAT. It takes the NAT measurement from package natcheck.
//
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
//   - For the rest, a relay candidate on a TURN server whose offer comes
//     through Link.TURN; the server public nodes run is package turnserver.
//
// The protocol cores are pure (parseSignal, birthdayRole, the birthday
// easy-side core); managers own sockets and timers.
//
// holepunch must not import package dht: it reaches the DHT only through
// the Link interface it defines. The adapter over *dht.Node lives in
// holepunch/dhtlink (with natcheck/dhtprobe for the NAT measurement).
// holepunch may import natcheck, never the reverse. Users: swarm,
// cmd/swarmdb, node.
package holepunch
