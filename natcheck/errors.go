package natcheck

import "errors"

// Errors of Check.
var (
	// ErrNoServers means Check was given no server to measure against.
	ErrNoServers = errors.New("natcheck: no servers to probe")
	// ErrNoAnswer means no server answered a Binding request, so nothing
	// about the NAT could be learned.
	ErrNoAnswer = errors.New("natcheck: no server answered")
	// ErrNoProber means Check was called without a Prober.
	ErrNoProber = errors.New("natcheck: no prober configured")
	// ErrHeld means a Binding could not be sent yet: the server is the
	// sender of a filtering probe's packet that is still awaited (see
	// Prober.Probe's isolated). Check asks it again once the probes end.
	ErrHeld = errors.New("natcheck: server held until the filtering probes end")
)

// ErrMonitorClosed means the Monitor was closed (or Start called twice).
var ErrMonitorClosed = errors.New("natcheck: monitor closed")
