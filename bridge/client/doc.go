// Package client is a ToolDb client of a swarmdb node's WebSocket endpoint
// (`swarmdb node --ws`), for Go programs and for `swarmdb put`, `get` and
// `watch`. It dials the node, identifies with a ping carrying a peer
// descriptor signed by a ToolDb (ECDSA P-256) account, and then speaks
// ToolDb 2.6.6's messages (reference/tooldb-protocol.md): put, get,
// subscribe. The node verifies the descriptor against its topic, so the
// client names the node's topic.
//
// Records are verified here as a node verifies them (db.Verifier), so a
// node cannot hand a client a record its author did not sign.
//
// client imports bridge (the message codec and the WebSocket dialer) and
// db (records and accounts); it must not import node, swarm or anything
// below them: a client app does not carry a node.
package client
