// Package node is the only package that wires swarmdb together: a DHT node
// and hole-punching endpoint (through package swarm) that join one topic,
// a Pebble store (package db), and the ToolDb message layer (package
// bridge) attached to every swarm connection's stream 0 and to every
// WebSocket client. It also keeps the node's identity in its data
// directory; the swarm keeps its NAT measurement current and the node
// passes the changes on (Config.OnNATChange).
//
// Beside Node it has the other stacks a swarmdb host runs, each one entry
// point: Bootstrap (a public DHT node with STUN, TURN and the mainline
// announcement), Netcheck (a throwaway DHT node that measures the NAT and
// the router's port mapping), StartPipe (one encrypted connection to the
// peer serving a topic, no database) and StartLocalDHT (a whole DHT on
// loopback, for the demo). It names the few types of the lower packages
// its callers read (NATReport, PortMapStatus), so that they import node
// alone.
//
// Users: cmd/swarmdb (every command but put, get and watch, which are
// clients: package bridge/client) and applications that embed swarmdb. It
// must not be imported by any other swarmdb package.
package node
