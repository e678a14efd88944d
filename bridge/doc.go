// Package bridge is swarmdb's message layer: it turns every connection that carries whole
// messages — a swarm connection's stream 0, a WebSocket from a browser or a ToolDb client, a
// WebSocket we dialled to a ToolDb server — into a peer speaking ToolDb 2.6.6's JSON protocol
// (ping/pong, put, crdtPut, get, crdtGet, subscribe, query/queryAck, function/functionReturn),
// backed by one db.Store.
//
// The wire follows ToolDb (see the project's reference/tooldb-protocol.md §2) so its clients
// work unchanged; where ToolDb is lax we are strict: peer descriptors are verified, every record
// goes through db's strict verification, subscription pushes carry fresh message ids, a relayed
// get's answer reaches the original asker, and dedup state is bounded. Between swarmdb nodes
// (peers whose ping/pong carries "swarmdb") an extension message, swarmdbSync, runs an
// anti-entropy catch-up on connect that exchanges only the records that differ.
//
// Every connection is bounded: message size, JSON nesting, a per-connection rate limit, a
// bounded outbound queue (a slow consumer is disconnected, never buffered without bound) and a
// strike budget for abuse. Bad input gets an "error" message and the connection stays usable
// until the budget runs out.
//
// bridge imports db and a WebSocket library; it knows connections only through the Conn
// interface and never imports swarm (package node attaches swarm streams through StreamConn).
package bridge
