package secure

import "time"

// liveness is the pure keepalive decision: given the time now, when we last sent a
// datagram and when the last authenticated datagram arrived, should we send a
// keepalive, or declare the peer dead?
//
// WireGuard-style passive keepalives: each side makes sure the other hears from it at
// least every interval (an empty sealed datagram if it has nothing else to send), and
// declares the peer dead after timeout without an authenticated datagram (forgeries
// cannot move LastReceive). It runs below the stream transport, which has no idle
// timeout of its own, so an idle session costs one 25-byte datagram per interval and
// the transport sees none of it.
type liveness struct {
	interval time.Duration // send a keepalive after this long without sending
	timeout  time.Duration // dead after this long without receiving
}

// tick returns whether to send a keepalive now, and whether the peer is dead.
func (l liveness) tick(now, lastSend, lastRecv time.Time) (ping, dead bool) {
	if now.Sub(lastRecv) >= l.timeout {
		return false, true
	}
	return now.Sub(lastSend) >= l.interval, false
}
