// Package swarm finds the other members of a topic and keeps exactly one
// authenticated connection to each of them: the Hyperswarm behaviour on top
// of swarmdb's DHT, hole punching and secure channel.
//
// A Swarm joins topics in server mode (announce the node's key on the DHT
// under the topic and refresh it about every 10 minutes) and client mode
// (look the topic up and dial every peer found), and dials explicit peers by
// key. Peers on the same LAN also find each other by mDNS/DNS-SD with no
// DHT at all (lan.go).
//
// The pure parts are state machines with time as an input: the retry
// schedule (backoff.go) and the peer table with its dial queue and limits
// (peer_table.go). swarm.go is the thin manager that owns goroutines,
// timers and the transport. One connection per remote key is the
// transport's rule (holepunch.Endpoint, which settles simultaneous dials
// before any ICE work); the swarm takes each new connection as the one
// that counts.
//
// The swarm also runs its NAT loop (nat.go): a natcheck.Monitor that
// measures again when the network changes, NetworkChanged when the result
// differs, and Config.OnNATChange for whoever wants to know.
//
// Users: package node (and applications embedding swarmdb). swarm imports
// dht, holepunch, natcheck and secure; it must not import db or bridge.
package swarm
