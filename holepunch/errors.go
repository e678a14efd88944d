package holepunch

import "errors"

var (
	// ErrNoServers means Check was given no server to measure against.
	ErrNoServers = errors.New("holepunch: no servers to probe")
	// ErrNoAnswer means no server answered a Binding request, so nothing
	// about the NAT could be learned.
	ErrNoAnswer = errors.New("holepunch: no server answered")
	// ErrNoProber means Check was called without a Prober.
	ErrNoProber = errors.New("holepunch: no prober configured")
)
