package bridge

import "errors"

var (
	// ErrClosed: the bridge or the connection is closed.
	ErrClosed = errors.New("bridge: closed")
	// ErrNotStarted: Attach or ConnectTo before Start.
	ErrNotStarted = errors.New("bridge: not started")
	// ErrMessageTooLarge: a message over Limits.MaxMessageSize (read or write).
	ErrMessageTooLarge = errors.New("bridge: message too large")
	// ErrBadMessage: not a JSON object, a field of the wrong type, or a missing field.
	ErrBadMessage = errors.New("bridge: bad message")
	// ErrTooDeep: JSON nested deeper than Limits.MaxDepth.
	ErrTooDeep = errors.New("bridge: JSON nested too deeply")
	// ErrUnknownType: a message type ToolDb does not define (and no swarmdb extension).
	ErrUnknownType = errors.New("bridge: unknown message type")
	// ErrNotIdentified: a message other than ping/pong before the peer identified itself.
	ErrNotIdentified = errors.New("bridge: peer has not sent ping or pong")
	// ErrBadPeer: a peer descriptor whose signature, address, topic or time does not check out.
	ErrBadPeer = errors.New("bridge: bad peer descriptor")
	// ErrIDClaimed: a ping/pong claiming a client id that is not derived from its own verified
	// address, that is ours, or that another live connection already holds (except a
	// connection of the same swarm peer, which a newer one replaces: ErrReplaced).
	ErrIDClaimed = errors.New("bridge: client id claimed by another peer")
	// ErrCrossedLink: two nodes dialled each other's WebSocket at once; both keep the
	// connection the one with the smaller client id dialled and close the other with this.
	ErrCrossedLink = errors.New("bridge: crossed connection; the one dialled by the smaller client id is kept")
	// ErrReplaced: the same swarm peer identified over a newer connection, which the swarm
	// keeps in this one's place.
	ErrReplaced = errors.New("bridge: replaced by a newer connection of the same swarm peer")
	// ErrRateLimited: the peer sent more messages than Limits.MessagesPerSecond allows.
	ErrRateLimited = errors.New("bridge: rate limit exceeded")
	// ErrSlowConsumer: the peer's outbound queue filled up; the connection is closed.
	ErrSlowConsumer = errors.New("bridge: slow consumer disconnected")
	// ErrAbuse: the peer used up its strike budget; the connection is closed.
	ErrAbuse = errors.New("bridge: too many bad messages")
	// ErrTooManySubscriptions: over Limits.MaxSubscriptions for one connection.
	ErrTooManySubscriptions = errors.New("bridge: too many subscriptions")
	// ErrOriginRefused: a WebSocket upgrade from an origin not in Config.AllowedOrigins.
	ErrOriginRefused = errors.New("bridge: origin not allowed")
	// ErrTimeout: no peer answered a remote get in time.
	ErrTimeout = errors.New("bridge: no answer in time")
)
