// Package node is the only package that wires swarmdb together: a DHT node
// and hole-punching endpoint (through package swarm) that join one topic,
// a Pebble store (package db), and the ToolDb message layer (package
// bridge) attached to every swarm connection's stream 0 and to every
// WebSocket client. It also keeps the node's identity in its data
// directory; the swarm keeps its NAT measurement current and the node
// passes the changes on (Config.OnNATChange).
//
// Users: cmd/swarmdb (node, put, get, watch, demo) and applications that
// embed swarmdb. It must not be imported by any other swarmdb package.
package node
