// Package holepunch owns NAT traversal for a swarmdb node: measuring the
// node's own NAT (classify.go, netcheck.go) and, later, punching through it.
//
// The protocol cores are pure: Classify turns observations into a NATReport
// with no sockets, goroutines or clocks. Check is the thin manager that
// gathers those observations through the Prober interface defined here.
//
// holepunch must not import package dht: it reaches the DHT only through
// interfaces it defines (Prober). The adapter over *dht.Node lives in
// holepunch/dhtprobe. Users: cmd/swarmdb (netcheck) and node.
package holepunch
