package natlab

import "errors"

var (
	// ErrNoResponse means a probe got no answer within its attempts.
	ErrNoResponse = errors.New("natlab: no response")
	// ErrMalformed means a reflector message could not be parsed.
	ErrMalformed = errors.New("natlab: malformed message")
	// ErrNotLiteral means a lab network was asked to resolve a host name.
	// Lab namespaces have no DNS, and resolving in the host's own namespace
	// could send queries out of the lab, so only IP literals are accepted.
	ErrNotLiteral = errors.New("natlab: only IP literal addresses are allowed")
	// ErrClosed means the reflector or lab is already closed.
	ErrClosed = errors.New("natlab: closed")
	// ErrBadConfig means a configuration value is out of range.
	ErrBadConfig = errors.New("natlab: bad config")
)
