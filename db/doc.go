// Package db is swarmdb's record store: ToolDb 2.6.6-compatible signed records, verified
// strictly, merged by last-write-wins or as CRDTs, kept durably in Pebble, and watched by key or
// prefix.
//
// The data model, hash and signature rules are ToolDb's (see the project's
// reference/tooldb-protocol.md), so ToolDb clients and swarmdb nodes exchange records unchanged.
// Verification is stricter than ToolDb's: the hash over the raw value bytes is always checked,
// equal timestamps have a deterministic winner, counters merge as counters, and custom hooks can
// only reject more.
//
// The pure parts (ParseRecord, Verifier, the CRDT change sets, the LWW order) take bytes and
// `now` and start nothing; Store owns the Pebble database and one group-commit writer goroutine.
// The network layer (package bridge) uses this package; db imports nothing of swarmdb's own.
package db
