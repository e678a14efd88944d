// Package natcheck measures the NAT (or firewall) in front of a node's UDP
// socket and keeps the measurement current.
//
//   - classify.go: the Report and its RFC 4787/5780 terms (mapping,
//     filtering, hairpinning) and the classic RFC 3489 class. Classify is
//     the pure core: observations in, report out.
//   - check.go: Check gathers the observations (STUN Binding requests to
//     several servers, filtering probes) through a Prober.
//   - monitor.go: Monitor re-measures when the host's addresses or the
//     reflexive addresses peers report change; changeWatch is its pure
//     decision core, Changed the rule for "the report changed".
//
// The Prober over the node's DHT socket, and Measure, which checks both
// address families of a node, live in natcheck/dhtprobe, so that natcheck
// itself stays free of package dht. Users: holepunch (the NAT class travels
// in its signaling and picks the punching method), swarm (which runs the
// Monitor), node, cmd/swarmdb (netcheck). natcheck must not import dht,
// holepunch or anything above them.
package natcheck
