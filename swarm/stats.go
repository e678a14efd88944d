package swarm

import "github.com/swarmdb/swarmdb/holepunch"

// counters are the swarm's running totals, guarded by Swarm.mu.
type counters struct {
	attempts        uint64
	failures        map[string]uint64
	inboundRefused  map[string]uint64
	opened, closed  map[Role]uint64
	duplicates      uint64
	banned          uint64
	announces       uint64
	lookups         uint64
	networkChanges  uint64
	deadAfterChange uint64
	lanFound        uint64
	controlDropped  uint64
}

// Stats is a snapshot of the swarm.
type Stats struct {
	// Connections open now, by role and by path.
	Connections int
	ByRole      map[Role]int
	ByPath      map[holepunch.Path]int
	// Dialing is the dials in flight; Queued the peers waiting to be dialled.
	Dialing, Queued int
	// Attempts counts dials started; FailuresByReason the failed ones by
	// reason (timeout, refused, unreachable, signaling, firewall, other).
	Attempts         uint64
	FailuresByReason map[string]uint64
	// InboundRefused counts incoming connections refused, by reason
	// (limit, banned, firewall).
	InboundRefused map[string]uint64
	// Opened and Closed count connections by role since Start.
	Opened, Closed map[Role]uint64
	// Duplicates counts connections that met another one to the same key
	// (the new one replaced it).
	Duplicates uint64
	// PeersByTopic is the number of known peers per joined topic.
	PeersByTopic map[Topic]int
	// Banned is the number of Ban calls.
	Banned uint64
	// Announces and Lookups count successful DHT rounds; LANFound counts
	// peers found by LAN discovery.
	Announces, Lookups, LANFound uint64
	// NetworkChanges counts NetworkChanged calls; DeadAfterChange the
	// connections they found dead.
	NetworkChanges, DeadAfterChange uint64
	// Membership (overlay.go).
	Membership MembershipStats
}

// MembershipStats count what the membership protocol did.
type MembershipStats struct {
	// Passive is the size of the passive view now.
	Passive int
	// JoinDials counts our dials with no connection open (they join);
	// ForwardJoinDials our dials to a joiner where a walk ended.
	JoinDials, ForwardJoinDials uint64
	// PriorityAdmitted counts incoming dials let in past MaxPeers (a peer
	// with no connection, the end of a join's walk); Demoted the
	// connections we closed to make room, DemotedBy those peers closed.
	PriorityAdmitted, Demoted, DemotedBy uint64
	// ForwardJoins counts forward-join walks we started for joiners;
	// Shuffles the shuffles we started, ShuffleReplies those we answered.
	ForwardJoins, Shuffles, ShuffleReplies uint64
	// Probes counts pings sent on silent connections; Stale the
	// connections that stayed silent and were dialled again.
	Probes, Stale uint64
	// ControlDropped counts control messages dropped on a full queue.
	ControlDropped uint64
}

// Stats returns a snapshot of the swarm's state and counters.
func (s *Swarm) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Connections:      len(s.conns),
		ByRole:           make(map[Role]int),
		ByPath:           make(map[holepunch.Path]int),
		Dialing:          s.table.dialing,
		Attempts:         s.stats.attempts,
		FailuresByReason: copyMap(s.stats.failures),
		InboundRefused:   copyMap(s.stats.inboundRefused),
		Opened:           copyMap(s.stats.opened),
		Closed:           copyMap(s.stats.closed),
		Duplicates:       s.stats.duplicates,
		PeersByTopic:     make(map[Topic]int),
		Banned:           s.stats.banned,
		Announces:        s.stats.announces,
		Lookups:          s.stats.lookups,
		LANFound:         s.stats.lanFound,
		NetworkChanges:   s.stats.networkChanges,
		DeadAfterChange:  s.stats.deadAfterChange,
	}
	o := &s.overlay.stats
	st.Membership = MembershipStats{
		Passive:   len(s.overlay.passiveAll()),
		JoinDials: o.joinDials, ForwardJoinDials: o.forwardJoinDials,
		PriorityAdmitted: o.priorityAdmitted, Demoted: o.demoted, DemotedBy: o.demotedBy,
		ForwardJoins: o.forwardJoins, Shuffles: o.shuffles, ShuffleReplies: o.shuffleReplies,
		Probes: o.probes, Stale: o.stale, ControlDropped: s.stats.controlDropped,
	}
	for _, c := range s.conns {
		st.ByRole[c.info.Role]++
		st.ByPath[c.Path()]++
	}
	for t := range s.topics {
		st.PeersByTopic[t] = 0
	}
	for _, p := range s.table.peers {
		if p.queued {
			st.Queued++
		}
		for t := range p.topics {
			if _, ok := st.PeersByTopic[t]; ok {
				st.PeersByTopic[t]++
			}
		}
	}
	return st
}

func copyMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
