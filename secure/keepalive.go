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

// minWait is the least time until the next tick, so that a clock that
// stands still cannot make the timer spin.
const minWait = 5 * time.Millisecond

// wait returns how long until the next tick is due: when a keepalive falls
// due (interval after lastSend) or the peer's silence reaches the timeout,
// whichever comes first. So an idle session's keepalives are interval
// apart, not up to half an interval more as with a fixed polling period,
// and the peer's liveness checks can count on that gap.
func (l liveness) wait(now, lastSend, lastRecv time.Time) time.Duration {
	due := min(lastSend.Add(l.interval).Sub(now), lastRecv.Add(l.timeout).Sub(now))
	return max(due, minWait)
}
