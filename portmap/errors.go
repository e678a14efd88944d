package portmap

import "errors"

// Errors of the port-mapping client. Callers compare with errors.Is; the
// client wraps them with the protocol and the gateway.
var (
	// ErrMalformed: a router's reply could not be parsed.
	ErrMalformed = errors.New("portmap: malformed message")
	// ErrNATPMPServer: a PCP request was answered by a NAT-PMP-only server
	// (RFC 6887 §9); NAT-PMP is the protocol to use with it.
	ErrNATPMPServer = errors.New("portmap: server speaks NAT-PMP, not PCP")
	// ErrNoGateway: the default gateway is not known (no default route, or
	// a network that is not the system's with no Config.Gateway).
	ErrNoGateway = errors.New("portmap: no default gateway")
	// ErrNoService: the gateway offers no port-mapping protocol that
	// answered (every one was refused, timed out or found nothing).
	ErrNoService = errors.New("portmap: the gateway offers no port mapping")
	// ErrRefused: the gateway answered but would not grant the mapping
	// (a PCP/NAT-PMP result code or a UPnP fault).
	ErrRefused = errors.New("portmap: mapping refused")
	// ErrTimeout: the gateway did not answer.
	ErrTimeout = errors.New("portmap: no answer from the gateway")
	// ErrUnreachable: the gateway's port is closed (an ICMP port
	// unreachable came back): nothing serves the protocol there.
	ErrUnreachable = errors.New("portmap: the gateway's port is closed")
	// ErrServerRestarted: the server's epoch went backwards or jumped
	// (RFC 6887 §8.5): it lost its mappings, which must be made again.
	ErrServerRestarted = errors.New("portmap: the gateway lost its state")
	// ErrLost: the gateway no longer holds a mapping it granted.
	ErrLost = errors.New("portmap: mapping gone from the gateway")
	// ErrClosed: the client is closed.
	ErrClosed = errors.New("portmap: closed")
	// ErrConfig: the configuration is unusable.
	ErrConfig = errors.New("portmap: bad config")
)
