package swarm

import (
	"cmp"
	"crypto/ed25519"
	"errors"
	"net/netip"
	"slices"
	"time"
)

// MinConnectionTime: a connection that lived at least this long resets its
// peer's retry count when it closes, so a long-lived peer that drops is
// retried after the short delay, while a peer that keeps dropping right
// after connecting backs off (Hyperswarm MIN_CONNECTION_TIME).
const MinConnectionTime = 15 * time.Second

// peerKey is a public key as a map key.
type peerKey string

// peerState is what the table knows about one remote key.
type peerState struct {
	pub      ed25519.PublicKey
	topics   map[Topic]struct{} // topics the peer was found on
	relays   []netip.AddrPort   // relay hint from the last DHT record
	lan      []netip.AddrPort   // addresses from LAN discovery
	explicit bool               // JoinPeer
	banned   bool
	viaLAN   bool // last found by LAN discovery

	queued bool      // waiting in the dial queue
	due    time.Time // queued: earliest dial
	order  float64   // queued: random tie-break among equals
	// kind is the membership reason of the queued dial (kindForwardJoin
	// lets it past MaxPeers); dialKind is the one of the dial in flight.
	kind     dialKind
	dialKind dialKind
	dialing  bool
	// demotedAt: when this peer or we dropped the connection to make room
	// (HyParView DISCONNECT): it is full, so it is not dialled again for
	// DemotedWait unless we are isolated.
	demotedAt time.Time
	// connected: a connection is open (either direction); inbound says
	// which, for the inbound limit.
	connected   bool
	inbound     bool
	connectedAt time.Time

	retries  int // failures and short-lived connections in a row
	attempts int // dials ever made
	proven   bool
	// unreachable: its dials failed through the whole retry schedule; the
	// membership does not pick it to fill a free slot until it is found
	// again.
	unreachable bool
}

// limits are the table's connection limits, all positive.
type limits struct {
	maxPeers    int // connections of both directions plus dials in flight
	maxParallel int // dials in flight
	maxInbound  int // incoming connections
}

// peerTable is the pure state machine behind dialling: which peers are
// known, which wait in the queue and until when, which are being dialled or
// connected, and what the limits allow next. Time and randomness are
// inputs; it owns no goroutine or timer. Not safe for concurrent use: the
// Swarm calls it under its lock.
type peerTable struct {
	self    peerKey
	lim     limits
	backoff Backoff
	rnd     func() float64

	peers   map[peerKey]*peerState
	dialing int
	conns   int
	inbound int
	// reserved holds an inbound slot for each peer whose handshake passed
	// canAccept and is still running (ICE, session setup), until it
	// connects or the reservation expires: several handshakes in flight
	// at once cannot overrun the inbound limit.
	reserved map[peerKey]reservation
}

// reservation is an inbound slot held for a handshake in flight.
type reservation struct {
	until time.Time
	hello dialHello // what the dialler said
	// over: admitted past the limits for its priority; the connection
	// demotes one of ours when it arrives.
	over bool
}

// maxOver bounds the connections and handshakes that may be in flight past
// MaxPeers at once for their priority (joins, forward-join ends): each
// demotes one other connection when it arrives, so the excess lasts only
// as long as a handshake.
const maxOver = 2

// DemotedWait is how long a peer that dropped us to make room, or that we
// dropped, is not dialled again (unless we have no connection at all): it
// is full.
const DemotedWait = 30 * time.Second

// reservationTTL bounds an inbound slot held for a handshake in flight;
// the transport gives no word when one fails, and holepunch gives up on a
// handshake after 12 s.
const reservationTTL = 20 * time.Second

func newPeerTable(self ed25519.PublicKey, lim limits, b Backoff, rnd func() float64) *peerTable {
	return &peerTable{
		self: peerKey(self), lim: lim, backoff: b.withDefaults(), rnd: rnd,
		peers: make(map[peerKey]*peerState), reserved: make(map[peerKey]reservation),
	}
}

func (t *peerTable) get(pub ed25519.PublicKey) *peerState {
	return t.peers[peerKey(pub)]
}

func (t *peerTable) getOrAdd(pub ed25519.PublicKey) *peerState {
	p := t.peers[peerKey(pub)]
	if p == nil {
		p = &peerState{pub: append(ed25519.PublicKey(nil), pub...), topics: make(map[Topic]struct{})}
		t.peers[peerKey(pub)] = p
	}
	return p
}

// queue puts p in the dial queue at due for an ordinary dial.
func (t *peerTable) queue(p *peerState, due time.Time) {
	p.queued, p.due, p.order, p.kind = true, due, t.rnd(), kindNeighbor
}

// wanted: the peer still has a reason to be dialled.
func (p *peerState) wanted() bool { return p.explicit || len(p.topics) > 0 }

// forgetIfIdle deletes a peer nothing refers to any more.
func (t *peerTable) forgetIfIdle(p *peerState) {
	if !p.wanted() && !p.banned && !p.queued && !p.dialing && !p.connected {
		delete(t.peers, peerKey(p.pub))
	}
}

// found records a peer found by a lookup on topic (or by LAN discovery
// when lan is set). A peer found again is dialled at once with a fresh
// retry count, also if it was waiting out a backoff or had been dropped.
func (t *peerTable) found(pub ed25519.PublicKey, topic Topic, relays, lan []netip.AddrPort, now time.Time) {
	if peerKey(pub) == t.self {
		return
	}
	p := t.getOrAdd(pub)
	p.topics[topic] = struct{}{}
	if relays != nil {
		p.relays = append([]netip.AddrPort(nil), relays...)
	}
	if lan != nil {
		p.lan = append([]netip.AddrPort(nil), lan...)
		p.viaLAN = true
	}
	p.unreachable = false
	if p.banned || p.connected || p.dialing {
		return
	}
	p.retries = 0
	t.queue(p, now)
}

// addExplicit makes pub an explicit peer: dialled now and retried forever.
func (t *peerTable) addExplicit(pub ed25519.PublicKey, now time.Time) {
	if peerKey(pub) == t.self {
		return
	}
	p := t.getOrAdd(pub)
	p.explicit = true
	if !p.banned && !p.connected && !p.dialing && !p.queued {
		p.retries = 0
		t.queue(p, now)
	}
}

// removeExplicit stops retrying pub unless a topic still wants it. An open
// connection stays.
func (t *peerTable) removeExplicit(pub ed25519.PublicKey) {
	p := t.get(pub)
	if p == nil {
		return
	}
	p.explicit = false
	if !p.wanted() {
		p.queued = false
	}
	t.forgetIfIdle(p)
}

// leaveTopic forgets topic: peers that no longer belong to any topic (and
// are not explicit) leave the queue. Open connections stay.
func (t *peerTable) leaveTopic(topic Topic) {
	for _, p := range t.peers {
		delete(p.topics, topic)
		if !p.wanted() {
			p.queued = false
		}
		t.forgetIfIdle(p)
	}
}

// learn records a peer the membership protocol passed on (a shuffle, the
// middle of a forward-join walk) in the passive view, without dialling it.
func (t *peerTable) learn(pub ed25519.PublicKey, topic Topic, relays []netip.AddrPort) {
	if peerKey(pub) == t.self {
		return
	}
	p := t.getOrAdd(pub)
	p.topics[topic] = struct{}{}
	if len(relays) > 0 {
		p.relays = append([]netip.AddrPort(nil), relays...)
	}
}

// queueForwardJoin queues a dial to the joiner a forward-join walk ended
// at us with (HyParView adds it to the active view): it may pass MaxPeers,
// and demotes one of our connections when it connects.
func (t *peerTable) queueForwardJoin(pub ed25519.PublicKey, topic Topic, relays []netip.AddrPort, now time.Time) {
	t.learn(pub, topic, relays)
	p := t.get(pub)
	if p == nil || p.banned || p.connected || p.dialing {
		return
	}
	p.retries = 0
	t.queue(p, now)
	p.kind = kindForwardJoin
}

// busy is the connections, dials in flight and inbound handshakes that
// count against MaxPeers.
func (t *peerTable) busy() int { return t.conns + t.dialing + len(t.reserved) }

// canDial says whether the limits allow one more dial to p.
func (t *peerTable) canDial(p *peerState) bool {
	if t.dialing >= t.lim.maxParallel {
		return false
	}
	// Explicit peers are dialled even at maxPeers (Hyperswarm does the same):
	// the application asked for them by name. The end of a forward-join walk
	// may pass it by a little (maxOver): the connection demotes another.
	switch {
	case p.explicit:
		return true
	case p.kind == kindForwardJoin:
		return t.busy() < t.lim.maxPeers+maxOver
	}
	return t.busy() < t.lim.maxPeers
}

// next takes the peers to dial now out of the queue, marks them as being
// dialled, and returns them with the time the next queued peer falls due
// (zero if none is waiting on a timer). Peers with fewer retries go first;
// equals in random order.
func (t *peerTable) next(now time.Time) (dial []*peerState, wake time.Time) {
	var due []*peerState
	for _, p := range t.peers {
		if !p.queued {
			continue
		}
		if p.due.After(now) {
			if wake.IsZero() || p.due.Before(wake) {
				wake = p.due
			}
			continue
		}
		due = append(due, p)
	}
	slices.SortFunc(due, func(a, b *peerState) int {
		if c := cmp.Compare(a.retries, b.retries); c != 0 {
			return c
		}
		return cmp.Compare(a.order, b.order)
	})
	for _, p := range due {
		if !t.canDial(p) {
			continue
		}
		p.queued, p.dialing, p.dialKind = false, true, p.kind
		p.attempts++
		t.dialing++
		dial = append(dial, p)
	}
	return dial, wake
}

// pending says whether a dial is in flight or a queued peer is due that
// the limits would let through: what Flush waits for.
func (t *peerTable) pending(now time.Time) bool {
	if t.dialing > 0 {
		return true
	}
	for _, p := range t.peers {
		if p.queued && !p.due.After(now) && t.canDial(p) {
			return true
		}
	}
	return false
}

// SimultaneousWait is how long a peer whose dial lost a simultaneous-dial
// tie-break waits before it is dialled again: the peer's own dial is
// under way and arrives as an incoming connection, which clears the
// retry. Dialling again sooner would start a second connection that
// replaces the first on both ends. It is above holepunch's 12 s
// connect timeout.
const SimultaneousWait = 15 * time.Second

// dialLost ends a dial that lost a simultaneous-dial tie-break: no retry
// is counted; the peer is dialled again only if the remote's connection
// does not arrive within SimultaneousWait.
func (t *peerTable) dialLost(pub ed25519.PublicKey, now time.Time) {
	p := t.get(pub)
	if p == nil || !p.dialing {
		return
	}
	p.dialing = false
	t.dialing--
	if p.connected || p.banned || !p.wanted() {
		t.forgetIfIdle(p)
		return
	}
	t.queue(p, now.Add(SimultaneousWait))
}

// dialRefused ends a dial the peer refused (its firewall or its limits):
// it stays in the passive view but is not retried on the backoff schedule,
// since a full node stays full; the membership's fill dials it again later
// if no other peer takes us.
func (t *peerTable) dialRefused(pub ed25519.PublicKey, now time.Time) {
	p := t.get(pub)
	if p == nil || !p.dialing {
		return
	}
	if p.explicit {
		t.dialDone(pub, false, false, now)
		return
	}
	p.dialing = false
	t.dialing--
	p.retries = MaxRetries
	t.forgetIfIdle(p)
}

// redial queues a dial at once to a peer whose connection was closed as
// stale (see overlay.probe): the peer is most likely there, behind a new
// path.
func (t *peerTable) redial(pub ed25519.PublicKey, now time.Time) {
	p := t.get(pub)
	if p == nil || p.banned || p.connected || p.dialing {
		return
	}
	p.retries, p.unreachable = 0, false
	t.queue(p, now)
}

// dialDone ends a dial. On failure the peer is retried on the backoff
// schedule, unless drop says the failure is final (banned, firewalled, own
// key) or the schedule is exhausted.
func (t *peerTable) dialDone(pub ed25519.PublicKey, ok, drop bool, now time.Time) {
	p := t.get(pub)
	if p == nil || !p.dialing {
		return
	}
	p.dialing = false
	t.dialing--
	if ok || p.connected {
		return
	}
	if drop {
		t.forgetIfIdle(p)
		return
	}
	p.retries++
	t.reschedule(p, now)
}

// reschedule queues p for its next retry, or drops it from the queue.
func (t *peerTable) reschedule(p *peerState, now time.Time) {
	if p.banned || !p.wanted() {
		t.forgetIfIdle(p)
		return
	}
	d, ok := t.backoff.Delay(p.retries, p.explicit, t.rnd())
	if !ok {
		p.unreachable = true
		return // dropped until found again
	}
	t.queue(p, now.Add(d))
}

// reserve is canAccept for a handshake that is about to start: on success
// it holds an inbound slot for pub until connected or reservationTTL. A
// dial of a priority kind (a joiner, a forward-join end) that finds us full
// is let in when priority is set, up to maxOver past the limits.
func (t *peerTable) reserve(pub ed25519.PublicKey, h dialHello, priority bool, now time.Time) (over bool, err error) {
	for k, r := range t.reserved {
		if !now.Before(r.until) {
			delete(t.reserved, k)
		}
	}
	err = t.canAccept(pub)
	// Priority passes MaxPeers (the new connection demotes another), but
	// not an inbound limit set below it on purpose.
	inboundCap := t.lim.maxInbound < t.lim.maxPeers && t.inbound+len(t.reserved) >= t.lim.maxInbound
	if errors.Is(err, ErrInboundLimit) && priority && !inboundCap && t.busy() < t.lim.maxPeers+maxOver {
		over, err = true, nil
	}
	if err != nil {
		return false, err
	}
	if p := t.get(pub); p == nil || !p.connected {
		t.reserved[peerKey(pub)] = reservation{until: now.Add(reservationTTL), hello: h, over: over}
	}
	return over, nil
}

// reservation returns pub's reservation, if it holds one.
func (t *peerTable) reservationOf(pub ed25519.PublicKey) (reservation, bool) {
	r, ok := t.reserved[peerKey(pub)]
	return r, ok
}

// release drops pub's reservation (its handshake was refused after all).
func (t *peerTable) release(pub ed25519.PublicKey) { delete(t.reserved, peerKey(pub)) }

// canAccept says whether an incoming connection from pub may be taken: not
// banned, and within the inbound limit and MaxPeers (counting handshakes
// in flight) unless it replaces a connection to the same key or holds a
// reservation.
func (t *peerTable) canAccept(pub ed25519.PublicKey) error {
	if peerKey(pub) == t.self {
		return ErrSelf
	}
	p := t.get(pub)
	if p != nil && p.banned {
		return ErrBanned
	}
	if p != nil && p.connected {
		return nil
	}
	others := len(t.reserved)
	if r, ok := t.reserved[peerKey(pub)]; ok {
		if r.over {
			return nil // let in past the limits for its priority
		}
		others--
	}
	if t.inbound+others >= t.lim.maxInbound || t.conns+others >= t.lim.maxPeers {
		return ErrInboundLimit
	}
	return nil
}

// connected records a new connection to pub (not a replacement).
func (t *peerTable) connected(pub ed25519.PublicKey, inbound bool, now time.Time) {
	delete(t.reserved, peerKey(pub))
	p := t.getOrAdd(pub)
	if p.connected {
		t.setInbound(p, inbound)
		return
	}
	p.connected, p.connectedAt, p.proven, p.queued, p.unreachable = true, now, true, false, false
	p.inbound = inbound
	t.conns++
	if inbound {
		t.inbound++
	}
}

// setInbound updates the direction of p's connection after a replacement.
func (t *peerTable) setInbound(p *peerState, inbound bool) {
	if p.inbound == inbound {
		return
	}
	p.inbound = inbound
	if inbound {
		t.inbound++
	} else {
		t.inbound--
	}
}

// disconnected records that pub's connection closed and queues a retry if
// the peer is still wanted. retry false (banned, swarm closing, a dead
// check that will be followed by a lookup) only records the close.
func (t *peerTable) disconnected(pub ed25519.PublicKey, now time.Time, retry bool) {
	p := t.get(pub)
	if p == nil || !p.connected {
		return
	}
	p.connected = false
	t.conns--
	if p.inbound {
		t.inbound--
		p.inbound = false
	}
	if now.Sub(p.connectedAt) >= MinConnectionTime {
		p.retries = 0
	}
	if now.Sub(p.demotedAt) < DemotedWait && !p.explicit {
		retry = false // it made room for another, or we did: it stays passive
	}
	if !retry || p.dialing {
		t.forgetIfIdle(p)
		return
	}
	p.retries++
	t.reschedule(p, now)
}

// ban marks pub banned: it leaves the queue and is never dialled or
// accepted until unban.
func (t *peerTable) ban(pub ed25519.PublicKey) {
	p := t.getOrAdd(pub)
	p.banned, p.queued = true, false
}

// unban lifts a ban; a wanted peer is queued again at once.
func (t *peerTable) unban(pub ed25519.PublicKey, now time.Time) {
	p := t.get(pub)
	if p == nil {
		return
	}
	p.banned = false
	if p.wanted() && !p.connected && !p.dialing {
		p.retries = 0
		t.queue(p, now)
	}
	t.forgetIfIdle(p)
}

// requeueAll dials every wanted, unconnected peer at once (after a network
// change: old failures say nothing about the new network).
func (t *peerTable) requeueAll(now time.Time) {
	for _, p := range t.peers {
		if p.wanted() && !p.banned && !p.connected && !p.dialing {
			p.retries = 0
			t.queue(p, now)
		}
	}
}
