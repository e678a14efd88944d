package client

import "errors"

var (
	// ErrNotFound: the node answered NOT_FOUND for a get (neither it nor
	// the peers it asked hold the key), or nothing answered before the
	// get's context ended (a ToolDb server has no "not found" answer).
	ErrNotFound = errors.New("not found")
	// ErrRefused: the node answered a request with an "error" message;
	// the error carries its code and text.
	ErrRefused = errors.New("refused by the node")
	// ErrUnverified: the node sent a record that does not verify. A
	// subscription stays usable after it.
	ErrUnverified = errors.New("the node sent a record that does not verify")
	// ErrNoTopic: Dial needs the node's topic.
	ErrNoTopic = errors.New("no topic: name the node's topic")

	// errIDClaimed marks the node's ID_CLAIMED refusal of a ping.
	errIDClaimed = errors.New("client id held by another connection")
)
