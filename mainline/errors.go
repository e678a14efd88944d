package mainline

import "errors"

// Errors returned by the mainline node. Callers compare with errors.Is.
var (
	// ErrClosed: the node was closed.
	ErrClosed = errors.New("mainline: node closed")
	// ErrNotStarted: Start was not called.
	ErrNotStarted = errors.New("mainline: node not started")
	// ErrNoNodes: the routing table is empty and no starting node (router,
	// cached node) is known.
	ErrNoNodes = errors.New("mainline: no dht nodes to start from")
	// ErrConfig: the configuration cannot work.
	ErrConfig = errors.New("mainline: bad configuration")
	// ErrNotKRPC: a datagram is not a well-formed KRPC message.
	ErrNotKRPC = errors.New("mainline: not a krpc message")
)
