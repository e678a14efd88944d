// Package dht is swarmdb's Kademlia DHT: the UDP sockets of a node (one per
// address family, family.go) and the protocol spoken on them (wire.go:
// PING, FIND_NODE, ANNOUNCE, UNANNOUNCE, LOOKUP, relayed signaling, NAT
// probes, TURN offers), the routing tables, the record store and the
// lookups. Every DHT node is also a STUN server on its DHT port (stun.go).
// The other protocols sharing the sockets (ICE, sealed sessions, birthday
// probes, mainline KRPC) reach their owners through the handlers each
// registers for its classes with Node.Handle; internal/demux says which
// class is which and who takes it. The handlers run on the sockets' read
// loops and must not block.
//
// Users: swarm, holepunch/dhtlink and natcheck/dhtprobe, node, cmd. It
// imports nothing of swarmdb's but internal/demux.
package dht
