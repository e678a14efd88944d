package swarm

import (
	"crypto/ed25519"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"
)

// Membership that keeps a swarm larger than MaxPeers one network: HyParView
// (Leitão, Pereira, Rodrigues, "HyParView: a membership protocol for
// reliable gossip-based broadcast", DSN 2007) over connections by key.
//
//   - The active view is the open connections, at most MaxPeers (explicit
//     peers aside). The passive view is the peer table's other known peers
//     of the joined topics, bounded by PassiveView: fed by DHT lookups and
//     LAN discovery, by the walks of forward joins and by shuffles.
//   - A node with no connection dials with kindJoin (HyParView's JOIN and
//     high-priority NEIGHBOR). A full node lets it in and demotes one of its
//     own peers to the passive view (DISCONNECT), choosing one that has
//     other connections; the contact sends FORWARDJOIN walks of
//     ActiveWalk hops through its other peers, and where a walk ends the
//     node dials the joiner with kindForwardJoin, which the joiner (and the
//     walk's end) take even when full, demoting another. Every other dial is
//     low priority (kindNeighbor): a full node refuses it.
//   - A node below MaxPeers fills its active view from the passive view
//     (one dial at a time, backing off while full nodes refuse).
//   - Every ShuffleInterval a node sends a SHUFFLE walk with itself, a few
//     of its active peers and a few passive ones; where the walk ends the
//     node answers with as many of its own passive peers (back along the
//     walk's path: a temporary connection, as in the paper, would cost a
//     hole punch) and both mix the entries into their passive views.
//
// The rotation tried before (a full node closing a random connection for
// any newcomer) churned because every demoted peer, still well connected,
// dialled a full node in turn; here only a node with no connection, or the
// end of a join's walk, displaces anyone, as the paper prescribes.
//
// Peers are named by key (and relay hints): connecting is by key through
// NATs. The priority travels in the hole-punching handshake (dialHello), so
// a full node refuses before any ICE work.
//
// The overlay also watches liveness: a connection that stays silent for
// probeAfter gets a ping on its control stream, and one that answers
// nothing for StaleAfter is dialled again, which replaces it. A peer whose
// NAT mapping changed is so reconnected within seconds instead of after
// the session's dead timeout.
//
// overlay is a pure state machine like the peer table it drives: time and
// randomness are inputs, the messages to send and connections to demote or
// redial are outputs (take). The Swarm calls it under its lock.

// Membership defaults (Config fields; HyParView's and iroh-gossip's values
// where they exist).
const (
	// DefaultPassiveView bounds the passive view; zero means this or
	// 4 × MaxPeers, whichever is larger (the paper's passive view is a
	// multiple of the active one).
	DefaultPassiveView = 30
	// DefaultActiveWalk is the forward-join walk length (ARWL, 6 in the
	// paper); DefaultPassiveWalk the hop at which a walk puts the joiner in
	// the passive view (PRWL, 3).
	DefaultActiveWalk  = 6
	DefaultPassiveWalk = 3
	// DefaultShuffleInterval is the time between shuffles, plus up to a
	// fifth of it at random.
	DefaultShuffleInterval = 30 * time.Second
	// DefaultStaleAfter: a connection silent this long despite a probe is
	// dialled again. A live idle peer is heard from every second (its
	// keepalive), and one that is pinged answers within a round trip.
	DefaultStaleAfter = 3 * time.Second
	// DefaultKeepaliveInterval is the swarm's session keepalive
	// (Config.Session): a session that has sent nothing for a second sends
	// an empty sealed datagram. That is what keeps an idle connection's
	// silence under probeAfter, so its liveness costs one datagram a second
	// each way; with secure's 2 s default the control-stream ping fired on
	// every idle connection every second or so, and a ping, its pong and
	// their acknowledgements cost two to three datagrams a second at each
	// end.
	DefaultKeepaliveInterval = time.Second
)

const (
	// probeAfter: a connection silent this long is pinged on its control
	// stream. Twice the keepalive interval: a live peer's keepalives keep
	// its silence under a second and a tick, so the ping goes out only when
	// one is lost or late, and its answer still has a second before
	// DefaultStaleAfter.
	probeAfter = 2 * DefaultKeepaliveInterval
	// shuffleActive and shufflePassive: how many active and passive peers a
	// shuffle carries besides its origin (the paper's ka and kp).
	shuffleActive  = 3
	shufflePassive = 4
	// starvedTick: a tick this late means the process was starved of CPU;
	// the silence meanwhile does not count against connections.
	starvedTick = time.Second
	// fillMin and fillMax bound the wait between dials that fill a free
	// slot of the active view from the passive view: it doubles while full
	// nodes refuse and starts over when a connection opens or closes.
	fillMin = time.Second
	fillMax = 30 * time.Second
	// minVictimAge: a connection younger than this is not demoted for a
	// newcomer (it may be the last joiner, whose walks are still going).
	minVictimAge = 5 * time.Second
	// demoteRate and demoteBurst bound demotions for priority dials (a
	// stranger with many keys cannot empty our active view).
	demoteRate  = 1.0 // per second
	demoteBurst = 8
)

// overlayConfig are the overlay's parameters, all set.
type overlayConfig struct {
	maxPeers        int
	passive         int
	activeWalk      int
	passiveWalk     int
	shuffleInterval time.Duration
	staleAfter      time.Duration
}

// neighbor is the overlay's state of one open connection.
type neighbor struct {
	key   peerKey
	pub   ed25519.PublicKey
	since time.Time
	// tags are the topics it shares with us, from its hello; helloed says
	// a hello arrived (a peer without a control stream never sends one).
	tags    map[topicTag]bool
	helloed bool
	degree  int // its connections, from its last hello, ping or pong; -1 unknown
	// liveness: the datagrams received when last looked at, and when that
	// count last moved; a ping in flight since probeAt; redialed once the
	// connection was found stale.
	recv     uint64
	recvAt   time.Time
	probing  bool
	nonce    uint64
	redialed bool
}

// overlayAction is one thing the Swarm must do for the overlay.
type overlayAction struct {
	to peerKey
	// msg, if set, is sent on to's control stream.
	msg *memberMsg
	// demote: send a disconnect, then close the connection to to.
	demote bool
	// redial: to's connection went silent; dial it again.
	redial bool
}

// overlayCounters are the overlay's running totals (Stats).
type overlayCounters struct {
	joinDials, forwardJoinDials                   uint64
	priorityAdmitted, demoted, demotedBy          uint64
	forwardJoins, shuffles, shuffleReplies, stale uint64
	probes                                        uint64
}

// overlay is the HyParView state machine of one swarm. Not safe for
// concurrent use.
type overlay struct {
	cfg   overlayConfig
	self  ed25519.PublicKey
	table *peerTable
	rng   *rand.Rand

	topics map[topicTag]Topic // joined topics
	client map[topicTag]bool  // the joined topics whose peers we dial
	nbrs   map[peerKey]*neighbor
	relays []netip.AddrPort // our own relay hints, for shuffles

	nextShuffle time.Time
	nextFill    time.Time
	lastTick    time.Time // when tick last ran
	fillWait    time.Duration
	helloDirty  bool             // our degree or topics changed: tell the neighbours
	lastShuffle map[peerKey]bool // passive peers we sent in our last shuffle: evicted first
	demotions   tokens
	stats       overlayCounters
	out         []overlayAction
}

func newOverlay(cfg overlayConfig, self ed25519.PublicKey, table *peerTable, rng *rand.Rand, now time.Time) *overlay {
	return &overlay{
		cfg: cfg, self: self, table: table, rng: rng,
		topics:      make(map[topicTag]Topic),
		client:      make(map[topicTag]bool),
		nbrs:        make(map[peerKey]*neighbor),
		fillWait:    fillMin,
		nextShuffle: now.Add(cfg.shuffleInterval),
		lastShuffle: make(map[peerKey]bool),
		demotions:   tokens{rate: demoteRate, burst: demoteBurst, n: demoteBurst, last: now},
	}
}

// take returns the actions gathered so far and clears them.
func (o *overlay) take() []overlayAction {
	out := o.out
	o.out = nil
	return out
}

func (o *overlay) send(to peerKey, m *memberMsg) {
	o.out = append(o.out, overlayAction{to: to, msg: m})
}

// setTopics records the joined topics, and those of them whose peers we
// dial (client mode).
func (o *overlay) setTopics(joined []Topic, client []Topic) {
	clear(o.topics)
	clear(o.client)
	for _, t := range joined {
		o.topics[tagOf(t)] = t
	}
	for _, t := range client {
		o.client[tagOf(t)] = true
	}
	o.helloDirty = true
}

// helloMsg is our hello: degree and joined topics.
func (o *overlay) helloMsg() *memberMsg {
	m := &memberMsg{Type: msgHello, Degree: o.degree()}
	for tag := range o.topics {
		if len(m.Tags) == maxTags {
			break
		}
		m.Tags = append(m.Tags, tag)
	}
	slices.SortFunc(m.Tags, func(a, b topicTag) int { return slices.Compare(a[:], b[:]) })
	return m
}

func (o *overlay) degree() uint8 { return uint8(min(o.table.conns, 255)) }

// helloFor returns the hello of a dial to p that the table just started,
// and records its kind: a forward-join end says so; with no connection and
// no other join in flight we join; anything else is a neighbour request.
func (o *overlay) helloFor(p *peerState) dialHello {
	h := dialHello{Kind: p.dialKind, Degree: o.degree()}
	if h.Kind == kindNeighbor && o.table.conns == 0 && !o.joinInFlight(p) {
		h.Kind = kindJoin
		p.dialKind = kindJoin
	}
	switch h.Kind {
	case kindJoin:
		o.stats.joinDials++
	case kindForwardJoin:
		o.stats.forwardJoinDials++
	}
	var tags []topicTag
	for t := range p.topics {
		if tag := tagOf(t); o.client[tag] {
			tags = append(tags, tag)
		}
	}
	if len(tags) > 0 {
		slices.SortFunc(tags, func(a, b topicTag) int { return slices.Compare(a[:], b[:]) })
		h.Tag = tags[0]
	}
	return h
}

func (o *overlay) joinInFlight(except *peerState) bool {
	for _, p := range o.table.peers {
		if p != except && p.dialing && p.dialKind == kindJoin {
			return true
		}
	}
	return false
}

// admit is the firewall's membership check before any hole punching: the
// table's limits, and past them a priority dial (a joiner, a forward-join
// end) while the demotion budget lasts.
func (o *overlay) admit(remote ed25519.PublicKey, hello []byte, now time.Time) error {
	h, err := parseHello(hello)
	if err != nil {
		h = dialHello{Kind: kindNeighbor} // an unknown hello is no claim to priority
	}
	priority := h.Kind.priority() && o.demotions.peek(now)
	over, err := o.table.reserve(remote, h, priority, now)
	if err != nil {
		return err
	}
	if over {
		o.demotions.take(now)
		o.stats.priorityAdmitted++
	}
	return nil
}

// connected records a new connection (the table knows it already). kind is
// why it was made: for an incoming one the dialler's hello, for ours the
// dial's kind. Past MaxPeers it demotes a neighbour; an incoming join is
// forwarded through the overlay.
func (o *overlay) connected(pub ed25519.PublicKey, inbound bool, h dialHello, now time.Time) {
	k := peerKey(pub)
	n := &neighbor{key: k, pub: pub, since: now, tags: map[topicTag]bool{}, degree: -1, recvAt: now}
	if inbound {
		n.degree = int(h.Degree)
	}
	o.nbrs[k] = n
	o.helloDirty = true
	o.fillWait, o.nextFill = fillMin, now.Add(fillMin)
	o.send(k, o.helloMsg())
	for o.overLimit() {
		v := o.victim(k, now)
		if v == "" {
			break
		}
		o.demote(v, now)
	}
	if inbound && h.Kind == kindJoin {
		if _, ok := o.topics[h.Tag]; ok {
			// HyParView JOIN: every other active peer starts a walk.
			for _, nb := range o.nbrs {
				if nb.key != k && nb.tags[h.Tag] {
					o.stats.forwardJoins++
					o.send(nb.key, &memberMsg{Type: msgForwardJoin, Tag: h.Tag, TTL: uint8(o.cfg.activeWalk), Peer: peerEntry{Key: pub}})
				}
			}
		}
	}
}

// overLimit: more connections than MaxPeers (explicit peers count, but
// only others are demoted).
func (o *overlay) overLimit() bool { return len(o.nbrs) > o.cfg.maxPeers }

// replaced records that the connection to pub was replaced by a new one
// (a redial, a simultaneous dial): its liveness starts over, and it says
// hello again on the new control stream.
func (o *overlay) replaced(pub ed25519.PublicKey, now time.Time) {
	n := o.nbrs[peerKey(pub)]
	if n == nil {
		return
	}
	n.since, n.recv, n.recvAt = now, 0, now
	n.helloed, n.probing, n.redialed = false, false, false
	o.send(n.key, o.helloMsg())
}

// victim picks the neighbour to demote for a newcomer: not explicit, not
// the newcomer, not younger than minVictimAge unless nothing else is left,
// and among those one with the most connections (it has the most to
// spare; one with a single connection would be left isolated), at random
// among equals.
func (o *overlay) victim(except peerKey, now time.Time) peerKey {
	var best []peerKey
	bestScore := -1 << 30
	for k, n := range o.nbrs {
		if k == except {
			continue
		}
		if p := o.table.peers[k]; p != nil && p.explicit {
			continue
		}
		score := n.degree
		if score < 0 {
			score = o.cfg.maxPeers // unknown: assume it has enough
		}
		if score <= 1 {
			score -= 1 << 20 // its only link: last resort
		}
		if now.Sub(n.since) < minVictimAge {
			score -= 1 << 10
		}
		switch {
		case score > bestScore:
			best, bestScore = append(best[:0], k), score
		case score == bestScore:
			best = append(best, k)
		}
	}
	if len(best) == 0 {
		return ""
	}
	slices.Sort(best) // map order is random; the rng alone decides
	return best[o.rng.IntN(len(best))]
}

// demote drops the connection to k to the passive view: the Swarm sends a
// disconnect and closes it. It is removed from the active view at once.
func (o *overlay) demote(k peerKey, now time.Time) {
	o.stats.demoted++
	if p := o.table.peers[k]; p != nil {
		p.demotedAt = now
	}
	delete(o.nbrs, k)
	o.out = append(o.out, overlayAction{to: k, demote: true})
}

// disconnected forgets a closed connection.
func (o *overlay) disconnected(pub ed25519.PublicKey, now time.Time) {
	if _, ok := o.nbrs[peerKey(pub)]; ok {
		delete(o.nbrs, peerKey(pub))
		o.helloDirty = true
		o.fillWait, o.nextFill = fillMin, now
	}
}

// sharing returns the neighbours that share tag, except the keys given,
// sorted (the rng picks). It is called for most control messages, so it
// allocates its result once: grown by append, a server's hundred neighbours
// cost eight arrays per message.
func (o *overlay) sharing(tag topicTag, except ...peerKey) []peerKey {
	out := make([]peerKey, 0, len(o.nbrs))
	for k, n := range o.nbrs {
		if n.tags[tag] && !slices.Contains(except, k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// anySharing reports whether a neighbour shares tag.
func (o *overlay) anySharing(tag topicTag) bool {
	for _, n := range o.nbrs {
		if n.tags[tag] {
			return true
		}
	}
	return false
}

// receive handles a control-stream message from neighbour from.
func (o *overlay) receive(from ed25519.PublicKey, m *memberMsg, now time.Time) {
	fk := peerKey(from)
	n := o.nbrs[fk]
	if n == nil {
		return // demoted or closed meanwhile
	}
	switch m.Type {
	case msgHello:
		n.helloed, n.degree = true, int(m.Degree)
		clear(n.tags)
		for _, t := range m.Tags {
			if _, ok := o.topics[t]; ok {
				n.tags[t] = true
			}
		}
	case msgPing:
		n.degree = int(m.Degree)
		o.send(fk, &memberMsg{Type: msgPong, Degree: o.degree(), Nonce: m.Nonce})
	case msgPong:
		n.degree = int(m.Degree)
	case msgDisconnect:
		// It made room for another: keep it passive, and do not dial it
		// again soon (it is full).
		o.stats.demotedBy++
		if p := o.table.peers[fk]; p != nil {
			p.demotedAt = now
		}
	case msgForwardJoin:
		o.forwardJoin(fk, m, now)
	case msgShuffle:
		o.shuffle(fk, m)
	case msgShuffleReply:
		o.shuffleReply(m)
	}
}

// forwardJoin is HyParView's FORWARDJOIN: the walk ends here when its time
// to live is spent or there is no one to pass it to, and then we add the
// joiner to our active view (dial it with kindForwardJoin); on its way it
// leaves the joiner in the passive view at PassiveWalk hops.
func (o *overlay) forwardJoin(from peerKey, m *memberMsg, now time.Time) {
	joiner := m.Peer.Key
	topic, ok := o.topics[m.Tag]
	if !ok || len(joiner) != ed25519.PublicKeySize || joiner.Equal(o.self) {
		return
	}
	next := o.sharing(m.Tag, from, peerKey(joiner))
	if m.TTL == 0 || len(next) == 0 {
		if _, connected := o.nbrs[peerKey(joiner)]; !connected && o.client[m.Tag] {
			o.table.queueForwardJoin(joiner, topic, m.Peer.Relays, now)
		}
		return
	}
	if int(m.TTL) == o.cfg.passiveWalk && o.client[m.Tag] {
		o.table.learn(joiner, topic, m.Peer.Relays)
		o.trimPassive(nil)
	}
	fwd := *m
	fwd.TTL--
	o.send(next[o.rng.IntN(len(next))], &fwd)
}

// passive lists the passive view of topic: known peers of the topic that
// are neither connected nor being dialled nor banned, sorted.
func (o *overlay) passive(topic Topic) []*peerState {
	var out []*peerState
	for _, p := range o.table.peers {
		if _, ok := p.topics[topic]; ok && !p.connected && !p.dialing && !p.banned {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *peerState) int { return slices.Compare(a.pub, b.pub) })
	return out
}

// passiveAll lists every passive peer (of any joined topic), sorted.
func (o *overlay) passiveAll() []*peerState {
	var out []*peerState
	for _, p := range o.table.peers {
		if p.wanted() && !p.explicit && !p.connected && !p.dialing && !p.banned {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *peerState) int { return slices.Compare(a.pub, b.pub) })
	return out
}

// trimPassive keeps the passive view within its bound: it forgets peers
// that wait in no queue, first those we just sent away in a shuffle (the
// paper's rule), then at random. keep are peers just added, kept if
// possible.
func (o *overlay) trimPassive(keep map[peerKey]bool) {
	all := o.passiveAll()
	excess := len(all) - o.cfg.passive
	if excess <= 0 {
		return
	}
	var first, rest []*peerState
	for _, p := range all {
		switch k := peerKey(p.pub); {
		case p.queued || keep[k]:
		case o.lastShuffle[k]:
			first = append(first, p)
		default:
			rest = append(rest, p)
		}
	}
	o.rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	for _, p := range append(first, rest...) {
		if excess == 0 {
			break
		}
		delete(o.table.peers, peerKey(p.pub))
		excess--
	}
}

// entries picks up to n peers at random from ps as shuffle entries.
func (o *overlay) entries(ps []*peerState, n int) []peerEntry {
	o.rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
	var out []peerEntry
	for _, p := range ps[:min(n, len(ps))] {
		out = append(out, peerEntry{Key: p.pub, Relays: p.relays[:min(len(p.relays), maxRelays)]})
	}
	return out
}

// startShuffle sends a shuffle for one joined topic to a random neighbour
// that shares it: ourselves, shuffleActive active and shufflePassive
// passive peers.
func (o *overlay) startShuffle() {
	var tags []topicTag
	for tag := range o.client {
		if o.anySharing(tag) {
			tags = append(tags, tag)
		}
	}
	if len(tags) == 0 {
		return
	}
	slices.SortFunc(tags, func(a, b topicTag) int { return slices.Compare(a[:], b[:]) })
	tag := tags[o.rng.IntN(len(tags))]
	topic := o.topics[tag]
	nbrs := o.sharing(tag)
	to := nbrs[o.rng.IntN(len(nbrs))]
	var active []*peerState
	for _, k := range nbrs {
		if p := o.table.peers[k]; k != to && p != nil {
			active = append(active, p)
		}
	}
	m := &memberMsg{Type: msgShuffle, Tag: tag, TTL: uint8(o.cfg.activeWalk), Path: []ed25519.PublicKey{o.self}}
	m.Entries = append(m.Entries, peerEntry{Key: o.self, Relays: o.relays[:min(len(o.relays), maxRelays)]})
	m.Entries = append(m.Entries, o.entries(active, shuffleActive)...)
	sent := o.entries(o.passive(topic), shufflePassive)
	m.Entries = append(m.Entries, sent...)
	clear(o.lastShuffle)
	for _, e := range sent {
		o.lastShuffle[peerKey(e.Key)] = true
	}
	o.stats.shuffles++
	o.send(to, m)
}

// shuffle is HyParView's SHUFFLE: passed on while its time to live lasts,
// and where it ends answered with as many of our passive peers, sent back
// along its path; its entries join our passive view.
func (o *overlay) shuffle(from peerKey, m *memberMsg) {
	topic, ok := o.topics[m.Tag]
	if !ok || len(m.Path) == 0 || !o.client[m.Tag] {
		return
	}
	if next := o.sharing(m.Tag, from); m.TTL > 0 && len(next) > 0 && len(m.Path) < maxPath {
		fwd := *m
		fwd.TTL--
		fwd.Path = append(slices.Clip(m.Path), o.self)
		o.send(next[o.rng.IntN(len(next))], &fwd)
		return
	}
	last := peerKey(m.Path[len(m.Path)-1])
	if last != from {
		return // the path must end with the hop that brought it
	}
	reply := &memberMsg{Type: msgShuffleReply, Tag: m.Tag, Path: m.Path[:len(m.Path)-1]}
	var cands []*peerState
	for _, p := range o.passive(topic) {
		if !p.pub.Equal(m.Path[0]) { // the origin knows itself
			cands = append(cands, p)
		}
	}
	reply.Entries = o.entries(cands, len(m.Entries))
	o.stats.shuffleReplies++
	o.send(from, reply)
	o.integrate(topic, m.Entries)
}

// shuffleReply passes a reply on towards the shuffle's origin, or, at the
// origin, mixes its entries into the passive view.
func (o *overlay) shuffleReply(m *memberMsg) {
	topic, ok := o.topics[m.Tag]
	if !ok {
		return
	}
	if len(m.Path) == 0 {
		if o.client[m.Tag] {
			o.integrate(topic, m.Entries)
		}
		return
	}
	next := peerKey(m.Path[len(m.Path)-1])
	if _, ok := o.nbrs[next]; ok {
		fwd := *m
		fwd.Path = m.Path[:len(m.Path)-1]
		o.send(next, &fwd)
	}
}

// integrate adds shuffle entries of topic to the passive view.
func (o *overlay) integrate(topic Topic, es []peerEntry) {
	added := map[peerKey]bool{}
	for _, e := range es {
		if len(e.Key) != ed25519.PublicKeySize || e.Key.Equal(o.self) {
			continue
		}
		if p := o.table.get(e.Key); p != nil && p.banned {
			continue
		}
		o.table.learn(e.Key, topic, e.Relays)
		added[peerKey(e.Key)] = true
	}
	o.trimPassive(added)
}

// tick runs the overlay's timers: liveness probes (recv returns a
// connection's datagram count), shuffles, filling free slots of the active
// view from the passive one, and a hello to every neighbour when our degree
// or topics changed.
func (o *overlay) tick(now time.Time, recv func(peerKey) (uint64, bool)) {
	keys := make([]peerKey, 0, len(o.nbrs))
	for k := range o.nbrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if gap := now.Sub(o.lastTick); !o.lastTick.IsZero() && gap > starvedTick {
		// We were not run for a while (the process is starved of CPU): the
		// connections' readers were not either, so their silence says
		// nothing about the paths. It does not count.
		for _, n := range o.nbrs {
			n.recvAt = n.recvAt.Add(gap)
		}
	}
	o.lastTick = now
	for _, k := range keys {
		o.probe(o.nbrs[k], now, recv)
	}
	if o.helloDirty {
		o.helloDirty = false
		for _, k := range keys {
			if o.nbrs[k] != nil {
				o.send(k, o.helloMsg())
			}
		}
	}
	if !now.Before(o.nextShuffle) {
		o.startShuffle()
		jitter := time.Duration(o.rng.Int64N(int64(o.cfg.shuffleInterval/5) + 1))
		o.nextShuffle = now.Add(o.cfg.shuffleInterval + jitter)
	}
	o.fill(now)
}

// probe checks one connection's liveness: silent for probeAfter, it gets a
// ping; silent for StaleAfter, it is dialled again (once).
func (o *overlay) probe(n *neighbor, now time.Time, recv func(peerKey) (uint64, bool)) {
	r, ok := recv(n.key)
	if !ok {
		return
	}
	if r != n.recv {
		n.recv, n.recvAt, n.probing, n.redialed = r, now, false, false
		return
	}
	if !n.helloed {
		return // no control stream to ping on (an older peer): the session's dead timeout decides
	}
	silent := now.Sub(n.recvAt)
	switch {
	case silent >= o.cfg.staleAfter && !n.redialed:
		n.redialed = true
		o.stats.stale++
		// A neighbour that dialled us and that no lookup found has no
		// table entry worth keeping, and the disconnect would forget it
		// before the redial: remember it under the topics we dial that it
		// shares. Seen in the NAT lab: a symmetric writer whose mapping
		// changed never dialled its inbound-only peer, whose own dials
		// went to relays that still knew the old mapping.
		for tag := range n.tags {
			if o.client[tag] {
				o.table.learn(n.pub, o.topics[tag], nil)
			}
		}
		o.out = append(o.out, overlayAction{to: n.key, redial: true})
	case silent >= probeAfter && !n.probing:
		n.probing = true
		n.nonce = o.rng.Uint64()
		o.stats.probes++
		o.send(n.key, &memberMsg{Type: msgPing, Degree: o.degree(), Nonce: n.nonce})
	}
}

// fill dials one passive peer when the active view has room and nothing
// else is being dialled or waits in the queue: at once when we have no
// connection (that dial joins), else after fillWait, which doubles while
// the dials are refused.
func (o *overlay) fill(now time.Time) {
	t := o.table
	if t.busy() >= o.cfg.maxPeers || t.dialing > 0 || now.Before(o.nextFill) || len(o.client) == 0 {
		return
	}
	for _, p := range t.peers {
		if p.queued {
			return // the dial loop has work
		}
	}
	var cands []*peerState
	for _, p := range o.passiveAll() {
		if !o.clientTopic(p) || p.unreachable {
			continue
		}
		if now.Sub(p.demotedAt) < DemotedWait && t.conns > 0 {
			continue // full
		}
		cands = append(cands, p)
	}
	o.nextFill = now.Add(o.fillWait)
	o.fillWait = min(2*o.fillWait, fillMax)
	if len(cands) == 0 {
		return
	}
	p := cands[o.rng.IntN(len(cands))]
	p.retries = 0
	t.queue(p, now)
}

// clientTopic says whether p belongs to a topic we dial peers of.
func (o *overlay) clientTopic(p *peerState) bool {
	for t := range p.topics {
		if o.client[tagOf(t)] {
			return true
		}
	}
	return false
}

// tokens is a token bucket, a pure function of now.
type tokens struct {
	rate, burst, n float64
	last           time.Time
}

func (b *tokens) refill(now time.Time) {
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.n = min(b.burst, b.n+dt*b.rate)
		b.last = now
	}
}

// peek says whether a token is there.
func (b *tokens) peek(now time.Time) bool {
	b.refill(now)
	return b.n >= 1
}

// take removes a token if there is one.
func (b *tokens) take(now time.Time) bool {
	if !b.peek(now) {
		return false
	}
	b.n--
	return true
}
