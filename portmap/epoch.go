package portmap

import "time"

// epochClock validates a PCP or NAT-PMP server's epoch (seconds since its
// mapping state began) against the client's own clock, RFC 6887 §8.5 (the
// same idea as NAT-PMP's, RFC 6886 §3.6). A server that rebooted, or lost
// its state otherwise, restarts its epoch; the client then has to make its
// mappings again. It is pure: the caller passes the time each response
// arrived.
type epochClock struct {
	seen       bool
	prevServer uint32
	prevClient time.Time
}

// observe records the epoch of a response received at now and reports
// whether it is consistent with the previous one. The first response is
// always valid. Time going backwards by more than a second, or the two
// clocks drifting apart by more than 2 s plus 1/16 of the elapsed time,
// means the server lost its state. The new values are recorded either way:
// after a restart, the new epoch is the one to compare with.
func (e *epochClock) observe(server uint32, now time.Time) bool {
	if !e.seen {
		e.seen, e.prevServer, e.prevClient = true, server, now
		return true
	}
	valid := true
	if int64(server) < int64(e.prevServer)-1 {
		valid = false
	} else {
		client := int64(now.Sub(e.prevClient) / time.Second)
		srv := int64(server) - int64(e.prevServer)
		if client+2 < srv-srv/16 || srv+2 < client-client/16 {
			valid = false
		}
	}
	e.prevServer, e.prevClient = server, now
	return valid
}

// reset forgets the server (a new gateway, or the client starting over).
func (e *epochClock) reset() { *e = epochClock{} }
