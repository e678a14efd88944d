package dht

import (
	"sync"
	"time"
)

// rttEstimator turns the round-trip times of replies into the wait for the next
// request's reply, as TCP does (RFC 6298: srtt + 4·rttvar, doubled on every
// retry), bounded by Config.RequestTimeout. With a fixed one-second wait every
// lost request or reply cost a whole second, and a node joining over a path
// with a few percent loss spent seconds in bootstrap and lookups (the bench's
// wan part: 1.2–7 s from start to joining at 2–5 % loss, against Hyperswarm's
// 0.2–0.6 s). One estimate serves all peers: DHT traffic goes to many nodes
// once each, too few samples per node for per-node estimates.
type rttEstimator struct {
	mu           sync.Mutex // guards srtt, rttvar
	srtt, rttvar time.Duration
}

// minRequestWait is the least wait for a reply, whatever the RTT: it covers a
// busy peer's scheduling and a loaded machine running tests, where a reply
// that comes a little late would otherwise count against its node.
const minRequestWait = 250 * time.Millisecond

// sample adds one measured round trip.
func (e *rttEstimator) sample(rtt time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srtt == 0 {
		e.srtt, e.rttvar = rtt, rtt/2
		return
	}
	d := e.srtt - rtt
	if d < 0 {
		d = -d
	}
	e.rttvar = (3*e.rttvar + d) / 4
	e.srtt = (7*e.srtt + rtt) / 8
}

// firstRequestWait is the first try's wait before any reply has been timed: a
// node's first requests (its NAT probe, its bootstrap) have no estimate yet, and
// with the whole RequestTimeout a lost one cost a node starting on a lossy path a
// second (the bench's wan part: 0.8–2 s from start to connected at 5 % loss,
// where Hyperswarm took 0.16–0.44). Half a second still covers any terrestrial
// path; a slower one resends once, and these requests are idempotent.
const firstRequestWait = 500 * time.Millisecond

// A request is sent again sooner than it gives up: a try's resend comes
// after the estimate with these lower bounds (minResendWait once a reply has
// been timed, firstResendWait before), while the request waits for a reply
// to any of its tries as long as it did when each try gave up at wait's
// bounds. On a lossy path a lost request or reply costs 100 ms, not 250;
// on a loaded machine a slow reply still counts, whichever try it answers,
// and costs only the copies sent meanwhile.
const (
	minResendWait   = 100 * time.Millisecond
	firstResendWait = 250 * time.Millisecond
)

// wait is how long try (0 for the first send) waits for its reply, at most
// limit, before the request gives up on it. Until a reply has been timed it
// is firstRequestWait, doubled per retry.
func (e *rttEstimator) wait(try int, limit time.Duration) time.Duration {
	return e.backoff(try, limit, firstRequestWait, minRequestWait)
}

// resendWait is how long try waits before the next try is sent: wait with
// the lower bounds minResendWait and firstResendWait.
func (e *rttEstimator) resendWait(try int, limit time.Duration) time.Duration {
	return e.backoff(try, limit, firstResendWait, minResendWait)
}

// backoff is the estimate (first before any sample), at least floor,
// doubled per retry, at most limit.
func (e *rttEstimator) backoff(try int, limit, first, floor time.Duration) time.Duration {
	e.mu.Lock()
	srtt, rttvar := e.srtt, e.rttvar
	e.mu.Unlock()
	w := first
	if srtt != 0 {
		w = max(srtt+4*rttvar, floor)
	}
	for range try {
		w *= 2
		if w >= limit {
			break
		}
	}
	return min(w, limit)
}

// answeredAtOnce reports whether the receiver of a request answers it itself,
// at once: the requests whose round trips the estimator learns from. A NAT
// probe is one: its reply names the helper and leaves at once, before the
// helper's packet.
func answeredAtOnce(c Command) bool {
	switch c {
	case CmdPing, CmdFindNode, CmdAnnounce, CmdUnannounce, CmdLookup, CmdNATProbe:
		return true
	}
	return false
}

// roundTrips is how many of the estimator's waits a request's reply may
// take before the request is sent again: one for those answeredAtOnce; two
// for a relayed signal (CmdRelay), which the relay forwards to the announcer,
// whose answer (holepunch answers message 1 without waiting on ICE) comes
// back the same way; none, the whole RequestTimeout, for the rest: the
// relay's forward itself (CmdSignal), which the relay does not resend before
// the client does, and work such as a TURN allocation. A client's resent
// signal is the same message 1, which the announcer answers from its cache,
// so a slow answer resent costs a few datagrams. Waiting the whole second
// made every lost datagram of a signal's four cost a dial that second (the
// bench's wan part at 5 % loss: join→connected 278 ms and 2.3 s where
// Hyperswarm took 33).
func roundTrips(c Command) int {
	switch {
	case answeredAtOnce(c):
		return 1
	case c == CmdRelay:
		return 2
	}
	return 0
}
