package swarm

import (
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// testOverlay is an overlay with its table, joined to one topic as client.
func testOverlay(t *testing.T, maxPeers int) (*overlay, Topic) {
	t.Helper()
	self := newKey(t)
	rng := rand.New(rand.NewPCG(1, 2))
	tb := newPeerTable(self, limits{maxPeers: maxPeers, maxParallel: 3, maxInbound: maxPeers}, Backoff{}, rng.Float64)
	o := newOverlay(overlayConfig{
		maxPeers: maxPeers, passive: 8, activeWalk: DefaultActiveWalk, passiveWalk: DefaultPassiveWalk,
		shuffleInterval: DefaultShuffleInterval, staleAfter: DefaultStaleAfter,
	}, self, tb, rng, t0)
	topic := TopicOf("overlay")
	o.setTopics([]Topic{topic}, []Topic{topic})
	return o, topic
}

// connect connects pub as the overlay would see it: in the table, then in
// the overlay, with a hello from pub naming the topic and its degree.
func connect(o *overlay, topic Topic, pub ed25519.PublicKey, inbound bool, h dialHello, degree int, now time.Time) {
	o.table.connected(pub, inbound, now)
	o.connected(pub, inbound, h, now)
	o.receive(pub, &memberMsg{Type: msgHello, Degree: uint8(degree), Tags: []topicTag{tagOf(topic)}}, now)
}

// actionsOf splits actions into messages by type, demotions and redials.
func actionsOf(acts []overlayAction) (msgs map[byte][]overlayAction, demoted, redialed []peerKey) {
	msgs = map[byte][]overlayAction{}
	for _, a := range acts {
		switch {
		case a.msg != nil:
			msgs[a.msg.Type] = append(msgs[a.msg.Type], a)
		case a.demote:
			demoted = append(demoted, a.to)
		case a.redial:
			redialed = append(redialed, a.to)
		}
	}
	return msgs, demoted, redialed
}

func hello(kind dialKind, topic Topic) []byte {
	return appendHello(nil, dialHello{Kind: kind, Tag: tagOf(topic)})
}

// TestOverlayAdmitsPriorityWhenFull: a full node refuses a neighbour
// request before any hole punching, lets in a dialler with no connection
// (join) or a forward-join end, at most maxOver at a time, and demotes one
// connection for each when it connects, never the newcomer.
func TestOverlayAdmitsPriorityWhenFull(t *testing.T) {
	o, topic := testOverlay(t, 2)
	a, b := newKey(t), newKey(t)
	connect(o, topic, a, false, dialHello{}, 3, t0)
	connect(o, topic, b, false, dialHello{}, 3, t0)
	o.take()
	now := t0.Add(time.Minute)
	if err := o.admit(newKey(t), hello(kindNeighbor, topic), now); !errors.Is(err, ErrInboundLimit) {
		t.Fatalf("neighbour request at the limit: %v, want ErrInboundLimit", err)
	}
	if err := o.admit(newKey(t), []byte{9, 9}, now); !errors.Is(err, ErrInboundLimit) {
		t.Fatalf("garbage hello at the limit: %v, want ErrInboundLimit", err)
	}
	j1, j2, j3 := newKey(t), newKey(t), newKey(t)
	if err := o.admit(j1, hello(kindJoin, topic), now); err != nil {
		t.Fatalf("join at the limit: %v", err)
	}
	if err := o.admit(j2, hello(kindForwardJoin, topic), now); err != nil {
		t.Fatalf("forward-join end at the limit: %v", err)
	}
	if err := o.admit(j3, hello(kindJoin, topic), now); !errors.Is(err, ErrInboundLimit) {
		t.Fatalf("third priority dial in flight: %v, want ErrInboundLimit (maxOver %d)", err, maxOver)
	}
	if err := o.table.canAccept(j1); err != nil {
		t.Fatalf("admitted joiner refused when it connects: %v", err)
	}
	o.table.connected(j1, true, now)
	o.connected(j1, true, dialHello{Kind: kindJoin, Tag: tagOf(topic)}, now)
	_, demoted, _ := actionsOf(o.take())
	if len(demoted) != 1 || demoted[0] == peerKey(j1) {
		t.Fatalf("demoted %v for the joiner, want one of the old connections", demoted)
	}
	if len(o.nbrs) != 2 {
		t.Fatalf("%d neighbours after the demotion, want 2", len(o.nbrs))
	}
	if st := o.stats; st.priorityAdmitted != 2 || st.demoted != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestOverlayVictimHasLinksToSpare: the demoted connection is one whose
// peer has the most other connections, never an explicit peer, and a peer
// whose only link we are only when nothing else is left.
func TestOverlayVictimHasLinksToSpare(t *testing.T) {
	o, topic := testOverlay(t, 3)
	lonely, rich, explicit := newKey(t), newKey(t), newKey(t)
	o.table.addExplicit(explicit, t0)
	connect(o, topic, explicit, false, dialHello{}, 9, t0)
	connect(o, topic, lonely, false, dialHello{}, 1, t0)
	connect(o, topic, rich, false, dialHello{}, 5, t0)
	o.take()
	now := t0.Add(time.Minute)
	j := newKey(t)
	o.table.connected(j, true, now)
	o.connected(j, true, dialHello{Kind: kindJoin}, now)
	if _, demoted, _ := actionsOf(o.take()); len(demoted) != 1 || demoted[0] != peerKey(rich) {
		t.Fatalf("demoted %v, want the peer with 5 connections", demoted)
	}
}

// TestOverlayJoinStartsWalks: an incoming join makes every other neighbour
// that shares the topic start a forward-join walk of ActiveWalk hops.
func TestOverlayJoinStartsWalks(t *testing.T) {
	o, topic := testOverlay(t, 8)
	a, b, other := newKey(t), newKey(t), newKey(t)
	connect(o, topic, a, false, dialHello{}, 3, t0)
	connect(o, topic, b, false, dialHello{}, 3, t0)
	o.table.connected(other, false, t0)
	o.connected(other, false, dialHello{}, t0)
	o.receive(other, &memberMsg{Type: msgHello, Tags: []topicTag{testTag(7)}}, t0) // another topic
	o.take()
	j := newKey(t)
	o.table.connected(j, true, t0)
	o.connected(j, true, dialHello{Kind: kindJoin, Tag: tagOf(topic)}, t0)
	msgs, demoted, _ := actionsOf(o.take())
	if len(demoted) != 0 {
		t.Fatalf("demoted %v with room", demoted)
	}
	fj := msgs[msgForwardJoin]
	if len(fj) != 2 {
		t.Fatalf("%d forward joins, want 2 (the neighbours on the topic)", len(fj))
	}
	for _, a := range fj {
		if a.to == peerKey(j) || a.to == peerKey(other) || !a.msg.Peer.Key.Equal(j) || a.msg.TTL != DefaultActiveWalk {
			t.Fatalf("forward join %+v to %x", a.msg, a.to)
		}
	}
	if len(msgs[msgHello]) != 1 || msgs[msgHello][0].to != peerKey(j) {
		t.Fatalf("hello to the joiner: %+v", msgs[msgHello])
	}
}

// TestOverlayForwardJoinWalk: a walk passes on to a random other neighbour
// with one hop less, leaves the joiner in the passive view at PassiveWalk
// hops, and where it ends (time to live spent, or no one to pass it to) a
// forward-join dial to the joiner is queued, which may pass MaxPeers.
func TestOverlayForwardJoinWalk(t *testing.T) {
	o, topic := testOverlay(t, 2)
	from, next := newKey(t), newKey(t)
	connect(o, topic, from, false, dialHello{}, 3, t0)
	connect(o, topic, next, false, dialHello{}, 3, t0)
	o.take()
	joiner := newKey(t)
	fj := &memberMsg{Type: msgForwardJoin, Tag: tagOf(topic), TTL: DefaultPassiveWalk, Peer: peerEntry{Key: joiner}}
	o.receive(from, fj, t0)
	msgs, _, _ := actionsOf(o.take())
	if f := msgs[msgForwardJoin]; len(f) != 1 || f[0].to != peerKey(next) || f[0].msg.TTL != DefaultPassiveWalk-1 {
		t.Fatalf("passed on: %+v", f)
	}
	if p := o.table.get(joiner); p == nil || p.queued {
		t.Fatalf("joiner at the passive hop: %+v, want known and not queued", p)
	}
	// The end of a walk (no one else to pass it to).
	joiner2 := newKey(t)
	o.receive(next, &memberMsg{Type: msgForwardJoin, Tag: tagOf(topic), TTL: 4, Peer: peerEntry{Key: joiner2}}, t0)
	o.receive(from, &memberMsg{Type: msgForwardJoin, Tag: tagOf(topic), TTL: 0, Peer: peerEntry{Key: joiner2}}, t0)
	msgs, _, _ = actionsOf(o.take())
	if len(msgs[msgForwardJoin]) != 1 {
		t.Fatalf("walk with ttl 4 from next must go on to from: %+v", msgs[msgForwardJoin])
	}
	p := o.table.get(joiner2)
	if p == nil || !p.queued || p.kind != kindForwardJoin {
		t.Fatalf("end of the walk: %+v, want a queued forward-join dial", p)
	}
	dial, _ := o.table.next(t0)
	if len(dial) != 1 || !dial[0].pub.Equal(joiner2) {
		t.Fatalf("a full node must dial the forward-join end: %v", dial)
	}
	if h := o.helloFor(dial[0]); h.Kind != kindForwardJoin {
		t.Fatalf("hello kind %v", h.Kind)
	}
	// A walk for a topic we do not share is dropped.
	o.receive(from, &memberMsg{Type: msgForwardJoin, Tag: testTag(7), TTL: 0, Peer: peerEntry{Key: newKey(t)}}, t0)
	if msgs, _, _ := actionsOf(o.take()); len(msgs) != 0 {
		t.Fatalf("walk of another topic: %+v", msgs)
	}
}

// TestOverlayShuffle: a shuffle walks through the overlay recording its
// path; where it ends it is answered with passive peers, back along the
// path, and both ends put the other's entries in their passive views,
// which stay within their bound, evicting first what was sent away.
func TestOverlayShuffle(t *testing.T) {
	origin, topic := testOverlay(t, 4)
	mid, _ := testOverlay(t, 4)
	end, _ := testOverlay(t, 4)
	for _, o := range []*overlay{mid, end} {
		o.setTopics([]Topic{topic}, []Topic{topic})
	}
	connect(origin, topic, mid.self, false, dialHello{}, 2, t0)
	connect(mid, topic, origin.self, true, dialHello{}, 1, t0)
	connect(mid, topic, end.self, false, dialHello{}, 1, t0)
	connect(end, topic, mid.self, true, dialHello{}, 2, t0)
	for range 12 {
		origin.table.learn(newKey(t), topic, nil)
		end.table.learn(newKey(t), topic, nil)
	}
	origin.trimPassive(nil)
	end.trimPassive(nil)
	for _, o := range []*overlay{origin, mid, end} {
		o.take()
	}
	if n := len(origin.passiveAll()); n != 8 {
		t.Fatalf("passive view of %d, bound 8", n)
	}
	origin.startShuffle()
	msgs, _, _ := actionsOf(origin.take())
	sh := msgs[msgShuffle]
	if len(sh) != 1 || sh[0].to != peerKey(mid.self) {
		t.Fatalf("shuffle: %+v", sh)
	}
	m := sh[0].msg
	if !m.Entries[0].Key.Equal(origin.self) || len(m.Entries) != 1+shufflePassive || len(m.Path) != 1 {
		t.Fatalf("shuffle carries %d entries, path %d", len(m.Entries), len(m.Path))
	}
	mid.receive(origin.self, m, t0)
	msgs, _, _ = actionsOf(mid.take())
	if f := msgs[msgShuffle]; len(f) != 1 || f[0].to != peerKey(end.self) || len(f[0].msg.Path) != 2 {
		t.Fatalf("mid passes on: %+v", f)
	}
	fwd := msgs[msgShuffle][0].msg
	fwd.TTL = 0
	end.receive(mid.self, fwd, t0)
	msgs, _, _ = actionsOf(end.take())
	r := msgs[msgShuffleReply]
	if len(r) != 1 || r[0].to != peerKey(mid.self) || len(r[0].msg.Path) != 1 || len(r[0].msg.Entries) != len(m.Entries) {
		t.Fatalf("end replies: %+v", r)
	}
	if end.table.get(origin.self) == nil {
		t.Fatal("the origin is not in the end's passive view")
	}
	if n := len(end.passiveAll()); n != 8 {
		t.Fatalf("end's passive view of %d, bound 8", n)
	}
	mid.receive(end.self, r[0].msg, t0)
	msgs, _, _ = actionsOf(mid.take())
	back := msgs[msgShuffleReply]
	if len(back) != 1 || back[0].to != peerKey(origin.self) || len(back[0].msg.Path) != 0 {
		t.Fatalf("mid passes the reply back: %+v", back)
	}
	sent := map[peerKey]bool{}
	for k := range origin.lastShuffle {
		sent[k] = true
	}
	fresh := 0
	for _, e := range back[0].msg.Entries {
		if origin.table.get(e.Key) == nil {
			fresh++
		}
	}
	origin.receive(mid.self, back[0].msg, t0)
	for _, e := range back[0].msg.Entries {
		if origin.table.get(e.Key) == nil {
			t.Fatalf("reply entry %x not in the origin's passive view", e.Key[:4])
		}
	}
	evicted := 0
	for k := range sent {
		if origin.table.peers[k] == nil {
			evicted++
		}
	}
	if evicted != min(fresh, len(sent)) {
		t.Fatalf("%d of the %d peers sent away evicted for %d new ones", evicted, len(sent), fresh)
	}
}

// TestOverlayProbesThenRedials: a connection silent for probeAfter gets a
// ping; one silent for StaleAfter is dialled again, once; traffic resets
// both.
func TestOverlayProbesThenRedials(t *testing.T) {
	o, topic := testOverlay(t, 4)
	a := newKey(t)
	connect(o, topic, a, false, dialHello{}, 1, t0)
	o.take()
	recv := uint64(5)
	count := func(peerKey) (uint64, bool) { return recv, true }
	o.tick(t0, count) // the count moved: fresh
	last := time.Duration(0)
	// step ticks every memberTick up to d, as the member loop does.
	step := func(d time.Duration) (map[byte][]overlayAction, []peerKey) {
		msgs, redial := map[byte][]overlayAction{}, []peerKey(nil)
		for last < d {
			last = min(last+memberTick, d)
			o.tick(t0.Add(last), count)
			m, _, r := actionsOf(o.take())
			for k, v := range m {
				msgs[k] = append(msgs[k], v...)
			}
			redial = append(redial, r...)
		}
		return msgs, redial
	}
	if msgs, r := step(probeAfter / 2); len(msgs[msgPing]) != 0 || len(r) != 0 {
		t.Fatalf("early: %v %v", msgs, r)
	}
	msgs, r := step(probeAfter)
	if len(msgs[msgPing]) != 1 || len(r) != 0 {
		t.Fatalf("after probeAfter: pings %d, redials %d", len(msgs[msgPing]), len(r))
	}
	if msgs, r := step(probeAfter + memberTick); len(msgs[msgPing]) != 0 || len(r) != 0 {
		t.Fatalf("second ping while one is out: %v", msgs)
	}
	if _, r := step(DefaultStaleAfter); len(r) != 1 || r[0] != peerKey(a) {
		t.Fatalf("after StaleAfter: redials %v", r)
	}
	if _, r := step(DefaultStaleAfter + memberTick); len(r) != 0 {
		t.Fatalf("redialled twice: %v", r)
	}
	recv++
	if msgs, r := step(DefaultStaleAfter + 2*memberTick); len(msgs[msgPing]) != 0 || len(r) != 0 {
		t.Fatal("traffic did not reset the probe")
	}
	if o.stats.probes != 1 || o.stats.stale != 1 {
		t.Fatalf("stats %+v", o.stats)
	}
	// A tick that comes late (the process was starved) does not count the
	// time it missed as silence.
	o.tick(t0.Add(last+time.Minute), count)
	if _, _, r := actionsOf(o.take()); len(r) != 0 {
		t.Fatalf("redialled after a starved minute: %v", r)
	}
}

// TestOverlayFillJoinsWhenIsolated: with no connection, the overlay picks
// a passive peer at once and the dial joins; with some connections, a free
// slot is filled after a wait that doubles while nothing connects.
func TestOverlayFillJoinsWhenIsolated(t *testing.T) {
	o, topic := testOverlay(t, 4)
	for range 3 {
		o.table.learn(newKey(t), topic, nil)
	}
	o.nextFill = t0
	o.tick(t0, func(peerKey) (uint64, bool) { return 0, false })
	dial, _ := o.table.next(t0)
	if len(dial) != 1 {
		t.Fatalf("isolated: %d dials, want 1", len(dial))
	}
	if h := o.helloFor(dial[0]); h.Kind != kindJoin || h.Tag != tagOf(topic) {
		t.Fatalf("isolated dial says %+v, want a join on the topic", h)
	}
	o.table.dialRefused(dial[0].pub, t0)
	// A second join may go out only when the first is done.
	o.tick(t0.Add(fillMin), func(peerKey) (uint64, bool) { return 0, false })
	dial, _ = o.table.next(t0.Add(fillMin))
	if len(dial) != 1 || o.helloFor(dial[0]).Kind != kindJoin {
		t.Fatalf("second fill: %v", dial)
	}
	other, _ := o.table.next(t0.Add(fillMin))
	if len(other) != 0 {
		t.Fatalf("fill dials one at a time: %d more", len(other))
	}
	// Waits grow while refused.
	o.table.dialRefused(dial[0].pub, t0)
	if o.fillWait != 4*fillMin {
		t.Fatalf("fill wait %v after two fills, want %v", o.fillWait, 4*fillMin)
	}
}

// TestOverlayRedialsInboundOnlyPeer: a silent connection that the peer
// dialled, to a peer no lookup found, is dialled again: the redial
// outlives the disconnect, which forgets peers nothing refers to (the
// symmetric-writer conntrack flush in the NAT lab never reconnected
// from the writer's side).
func TestOverlayRedialsInboundOnlyPeer(t *testing.T) {
	o, topic := testOverlay(t, 4)
	a := newKey(t)
	connect(o, topic, a, true, dialHello{Tag: tagOf(topic)}, 1, t0)
	o.take()
	count := func(peerKey) (uint64, bool) { return 7, true }
	var redialed []peerKey
	for d := time.Duration(0); d <= DefaultStaleAfter+memberTick; d += memberTick {
		o.tick(t0.Add(d), count)
		_, _, r := actionsOf(o.take())
		redialed = append(redialed, r...)
	}
	if len(redialed) != 1 || redialed[0] != peerKey(a) {
		t.Fatalf("redials %v, want the inbound peer once", redialed)
	}
	// What the swarm does with a redial (Swarm.applyLocked).
	now := t0.Add(DefaultStaleAfter + memberTick)
	o.table.disconnected(a, now, false)
	o.table.redial(a, now)
	o.disconnected(a, now)
	dial, _ := o.table.next(now)
	if len(dial) != 1 || peerKey(dial[0].pub) != peerKey(a) {
		t.Fatalf("dials after the redial: %d, want the inbound peer", len(dial))
	}
	if _, ok := dial[0].topics[topic]; !ok {
		t.Fatal("the redialled peer is not known under the shared topic")
	}
}
