package dht

import (
	"net/netip"
	"time"
)

// The node remembers what its isolated other-node NAT probes (NATProbe
// with ProbeOtherNode, the helper held) showed, per family, so that an
// adaptive node's reachability check (checkPersistence) can use the
// probes a NAT measurement already runs: natcheck/dhtprobe.Measure starts
// its filtering probes before the join, and behind a NAT their packets
// never come, so by the time the join checks, the measurement has usually
// decided what the check would wait persistenceWait to find out again.

// reachability is what the probe records say about one of our addresses.
type reachability int8

const (
	// reachUnknown: no record says anything; the check probes itself.
	reachUnknown reachability = iota
	// reachOpen: a probe's packet may still come; wait for it.
	reachOpen
	// reachReachable: a packet from a node we never sent to reached us.
	reachReachable
	// reachUnreachable: every probe waited its whole window in vain.
	reachUnreachable
)

// maxProbeRecords bounds the records a family keeps: a measurement runs
// one other-node probe per server it tries, the check one per close node
// (at most K), and only the most recent say anything about now.
const maxProbeRecords = 32

// probeRecord is one isolated other-node probe, from the moment its server
// answered. Only such probes count: their packet comes from a helper we
// hold (send nothing to) while they wait, and an arrival counts only when
// we had not sent to its IP, so a packet that a contact of ours sends
// proves nothing, as in the check's own probes.
type probeRecord struct {
	nonce uint64
	// at is our address as the probed server saw it, which the helper
	// sends to: the evidence is about that address only.
	at netip.AddrPort
	// until ends the wait for the packet: the probe's own wait, and at
	// least persistenceWait after the server's answer, so that a packet
	// arriving late on a loaded machine still counts (minPersistenceWait)
	// even when the prober (natcheck: 3 RTT + 100 ms) stopped waiting
	// earlier. After the probe returns its helper is no longer held, but
	// an arrival still counts only from an IP we had not sent to then.
	until time.Time
	// arrived is when a packet from a node we never sent to came; zero
	// while none did.
	arrived time.Time
}

// reachVerdict says what the records show about our address pub, counting
// only outcomes decided at or after since (see checkPersistence: the
// current join's start), at time now. next is when an open record's wait
// ends (zero unless the verdict is reachOpen). One arrival is enough to be
// reachable, as in the check's own probes; unreachable needs every record
// of pub to have waited its whole window: a packet lost on one probe does
// not outweigh another probe still waiting.
func reachVerdict(recs []probeRecord, pub netip.AddrPort, since, now time.Time) (v reachability, next time.Time) {
	v = reachUnknown
	for _, r := range recs {
		if r.at != pub {
			continue
		}
		switch {
		case !r.arrived.IsZero():
			if !r.arrived.Before(since) {
				return reachReachable, time.Time{}
			}
		case now.Before(r.until):
			if v != reachOpen || r.until.Before(next) {
				next = r.until
			}
			v = reachOpen
		case !r.until.Before(since) && v == reachUnknown:
			v = reachUnreachable
		}
	}
	return v, next
}

// openProbeLocked records an isolated other-node probe whose server
// answered that it saw us at at; its window ends at until.
func (s *stack) openProbeLocked(nonce uint64, at netip.AddrPort, until time.Time) {
	if len(s.probes) >= maxProbeRecords {
		s.probes = append(s.probes[:0], s.probes[1:]...)
	}
	s.probes = append(s.probes, probeRecord{nonce: nonce, at: at, until: until})
	s.probesChangedLocked()
}

// probeArrivedLocked notes that the packet of probe nonce came at now,
// from an IP we had not sent to (unsolicited) or had. The first arrival
// decides: an unsolicited one makes the record reachable evidence, a
// solicited one proves nothing and drops it. An arrival after the
// record's window changes nothing: the outcome was decided.
func (s *stack) probeArrivedLocked(nonce uint64, unsolicited bool, now time.Time) {
	i := s.probeIndexLocked(nonce)
	if i < 0 || !s.probes[i].arrived.IsZero() || !now.Before(s.probes[i].until) {
		return
	}
	if unsolicited {
		s.probes[i].arrived = now
	} else {
		s.probes = append(s.probes[:i], s.probes[i+1:]...)
	}
	s.probesChangedLocked()
}

// dropProbeLocked forgets probe nonce, which ended without an outcome (its
// context was cancelled while it waited).
func (s *stack) dropProbeLocked(nonce uint64) {
	if i := s.probeIndexLocked(nonce); i >= 0 && s.probes[i].arrived.IsZero() {
		s.probes = append(s.probes[:i], s.probes[i+1:]...)
		s.probesChangedLocked()
	}
}

func (s *stack) probeIndexLocked(nonce uint64) int {
	for i, r := range s.probes {
		if r.nonce == nonce {
			return i
		}
	}
	return -1
}

// probesChangedLocked wakes whoever waits on the records (checkPersistence).
func (s *stack) probesChangedLocked() {
	close(s.probesChanged)
	s.probesChanged = make(chan struct{})
}
