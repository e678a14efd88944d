package swarm

import (
	"crypto/ed25519"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// A simulation of many overlays with the wire and the transport replaced
// by a step function: dials take one step and succeed unless the server's
// admit refuses or the server is dead, control messages take one step.
// It runs the same state machines (overlay, peer table) the Swarm drives,
// so the protocol itself can be checked at sizes and over seeds that real
// sockets on two cores could not carry.

var simSeeds = flag.Int("sim.seeds", 100, "TestOverlaySim*: seeds per case")

const simStep = 50 * time.Millisecond

type simNode struct {
	o      *overlay
	pub    ed25519.PublicKey
	alive  bool
	joined bool // has had a connection: it is part of the overlay
	// dials started in the last step, resolved in the next
	dials []*peerState
}

type simMsg struct {
	from, to int
	m        *memberMsg
}

type simNet struct {
	rng    *rand.Rand
	now    time.Time
	nodes  []*simNode
	index  map[peerKey]int
	topic  Topic
	max    int
	msgs   []simMsg
	peak   int // the most connections one node ever held
	lookup int // peers a lookup returns
}

func newSimNet(seed uint64, maxPeers int) *simNet {
	return &simNet{
		rng: rand.New(rand.NewPCG(seed, 7)), now: t0, index: map[peerKey]int{},
		topic: TopicOf("sim"), max: maxPeers, lookup: 20,
	}
}

// add starts a node, joins the topic and "looks it up": up to lookup
// random live members are found.
func (n *simNet) add() int {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(n.rng.IntN(256))
	}
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	rng := rand.New(rand.NewPCG(n.rng.Uint64(), n.rng.Uint64()))
	tb := newPeerTable(pub, limits{maxPeers: n.max, maxParallel: DefaultMaxParallel, maxInbound: n.max}, Backoff{}, rng.Float64)
	o := newOverlay(overlayConfig{
		maxPeers: n.max, passive: max(DefaultPassiveView, 4*n.max), activeWalk: DefaultActiveWalk,
		passiveWalk: DefaultPassiveWalk, shuffleInterval: DefaultShuffleInterval, staleAfter: DefaultStaleAfter,
	}, pub, tb, rng, n.now)
	o.setTopics([]Topic{n.topic}, []Topic{n.topic})
	id := len(n.nodes)
	n.nodes = append(n.nodes, &simNode{o: o, pub: pub, alive: true})
	n.index[peerKey(pub)] = id
	var live []int
	for i, x := range n.nodes {
		if x.alive && i != id {
			live = append(live, i)
		}
	}
	n.rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
	for _, i := range live[:min(n.lookup, len(live))] {
		tb.found(n.nodes[i].pub, n.topic, nil, nil, n.now)
	}
	o.trimPassive(nil)
	return id
}

// kill ends a node: its connections close at both ends.
func (n *simNet) kill(id int) {
	x := n.nodes[id]
	x.alive = false
	for k := range x.o.nbrs {
		j := n.index[k]
		n.closeEnd(j, id, true)
	}
	clear(x.o.nbrs)
}

// closeEnd records at node i that its connection to j closed.
func (n *simNet) closeEnd(i, j int, retry bool) {
	x := n.nodes[i]
	x.o.table.disconnected(n.nodes[j].pub, n.now, retry)
	x.o.disconnected(n.nodes[j].pub, n.now)
}

func (n *simNet) connected(i, j int) bool {
	_, ok := n.nodes[i].o.nbrs[peerKey(n.nodes[j].pub)]
	return ok
}

// apply carries out node i's actions.
func (n *simNet) apply(i int) {
	x := n.nodes[i]
	for _, a := range x.o.take() {
		j, ok := n.index[a.to]
		if !ok {
			continue
		}
		switch {
		case a.msg != nil:
			n.msgs = append(n.msgs, simMsg{from: i, to: j, m: a.msg})
		case a.demote:
			x.o.table.disconnected(n.nodes[j].pub, n.now, false)
			// The disconnect arrives, then the connection closes.
			if n.connected(j, i) {
				n.nodes[j].o.receive(x.pub, &memberMsg{Type: msgDisconnect}, n.now)
				n.closeEnd(j, i, true)
				n.apply(j)
			}
		}
	}
}

// step advances the simulation by simStep.
func (n *simNet) step() {
	n.now = n.now.Add(simStep)
	msgs := n.msgs
	n.msgs = nil
	for _, m := range msgs {
		if n.nodes[m.to].alive && n.connected(m.to, m.from) {
			n.nodes[m.to].o.receive(n.nodes[m.from].pub, m.m, n.now)
			n.apply(m.to)
		}
	}
	for i, x := range n.nodes {
		if !x.alive {
			continue
		}
		for _, p := range x.dials {
			n.resolveDial(i, p)
		}
		x.dials = nil
	}
	tick := n.now.Sub(t0)%memberTick == 0
	for i, x := range n.nodes {
		if !x.alive {
			continue
		}
		if tick {
			x.o.tick(n.now, func(peerKey) (uint64, bool) { return uint64(n.now.UnixNano()), true })
			n.apply(i)
		}
		dial, _ := x.o.table.next(n.now)
		for _, p := range dial {
			x.o.helloFor(p)
			x.dials = append(x.dials, p)
		}
	}
	for _, x := range n.nodes {
		n.peak = max(n.peak, len(x.o.nbrs))
		x.joined = x.joined || len(x.o.nbrs) > 0
	}
}

// resolveDial ends node i's dial to p.
func (n *simNet) resolveDial(i int, p *peerState) {
	x := n.nodes[i]
	j := n.index[peerKey(p.pub)]
	y := n.nodes[j]
	h := dialHello{Kind: p.dialKind, Degree: x.o.degree()}
	switch {
	case !y.alive:
		x.o.table.dialDone(p.pub, false, false, n.now)
		return
	case n.connected(i, j):
		x.o.table.dialDone(p.pub, true, false, n.now)
		return
	}
	if err := y.o.admit(x.pub, appendHello(nil, h), n.now); err != nil {
		x.o.table.dialRefused(p.pub, n.now)
		n.apply(j)
		return
	}
	r, _ := y.o.table.reservationOf(x.pub)
	y.o.table.connected(x.pub, true, n.now)
	y.o.connected(x.pub, true, r.hello, n.now)
	x.o.table.dialDone(p.pub, true, false, n.now)
	x.o.table.connected(y.pub, false, n.now)
	x.o.connected(y.pub, false, h, n.now)
	n.apply(j)
	n.apply(i)
}

// reach returns the number of live nodes that joined the overlay which the
// first of them reaches, and the number of such nodes (a node still
// joining is not part of the overlay yet).
func (n *simNet) reach() (reached, live int) {
	first := -1
	for i, x := range n.nodes {
		if x.alive && x.joined {
			live++
			if first < 0 {
				first = i
			}
		}
	}
	if first < 0 {
		return 0, 0
	}
	seen := map[int]bool{first: true}
	stack := []int{first}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for k := range n.nodes[i].o.nbrs {
			j := n.index[k]
			if n.nodes[j].alive && n.nodes[j].joined && !seen[j] {
				seen[j] = true
				stack = append(stack, j)
			}
		}
	}
	return len(seen), live
}

func (n *simNet) run(d time.Duration) {
	for end := n.now.Add(d); n.now.Before(end); {
		n.step()
	}
}

func (n *simNet) degrees() string {
	var d []int
	for _, x := range n.nodes {
		if x.alive {
			d = append(d, len(x.o.nbrs))
		}
	}
	slices.Sort(d)
	sum := 0
	for _, v := range d {
		sum += v
	}
	return fmt.Sprintf("min %d, mean %.1f, max %d", d[0], float64(sum)/float64(len(d)), d[len(d)-1])
}

// TestOverlaySimSequentialJoins: 16 nodes with MaxPeers 4 joining one after
// another, each once the last is connected, form one component, for every
// seed; so do 256 nodes with MaxPeers 8.
func TestOverlaySimSequentialJoins(t *testing.T) {
	for _, c := range []struct{ nodes, maxPeers, seeds int }{
		{16, 4, *simSeeds},
		{16, 8, *simSeeds},
		{256, 8, max(*simSeeds/20, 2)},
	} {
		t.Run(fmt.Sprintf("%d-nodes-max-%d", c.nodes, c.maxPeers), func(t *testing.T) {
			for seed := range c.seeds {
				n := newSimNet(uint64(seed), c.maxPeers)
				for range c.nodes {
					n.add()
					n.run(500 * time.Millisecond)
				}
				n.run(5 * time.Second)
				if reached, live := n.reach(); reached != live {
					t.Fatalf("seed %d: split: %d of %d reached; degrees %s", seed, reached, live, n.degrees())
				}
				if n.peak > c.maxPeers {
					t.Fatalf("seed %d: a node held %d connections, MaxPeers %d", seed, n.peak, c.maxPeers)
				}
				if seed == 0 {
					t.Logf("degrees %s", n.degrees())
				}
			}
		})
	}
}

// TestOverlaySimChurn: 256 nodes with MaxPeers 8; a fifth of them are
// killed and replaced over two minutes, one at a time. The overlay is one
// component at every sample (every second), and connections stay within
// MaxPeers.
func TestOverlaySimChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("256 simulated nodes")
	}
	const nodes, maxPeers = 256, 8
	for seed := range max(*simSeeds/50, 2) {
		n := newSimNet(uint64(seed), maxPeers)
		for range nodes {
			n.add()
			n.run(100 * time.Millisecond)
		}
		n.run(10 * time.Second)
		kills := nodes / 5
		every := 2 * time.Minute / time.Duration(kills)
		splits, samples := 0, 0
		var minReach float64 = 1
		next := n.now
		for range kills {
			var live []int
			for i, x := range n.nodes {
				if x.alive {
					live = append(live, i)
				}
			}
			n.kill(live[n.rng.IntN(len(live))])
			n.add()
			for end := n.now.Add(every); n.now.Before(end); {
				n.step()
				if !n.now.Before(next) {
					next = next.Add(simStep)
					samples++
					reached, live := n.reach()
					if reached != live {
						splits++
						minReach = min(minReach, float64(reached)/float64(live))
					}
				}
			}
		}
		n.run(5 * time.Second)
		reached, live := n.reach()
		t.Logf("seed %d: %d samples, %d split (smallest reach %.3f); at the end %d of %d reached; degrees %s; peak %d",
			seed, samples, splits, minReach, reached, live, n.degrees(), n.peak)
		if splits > 0 || reached != live {
			t.Errorf("seed %d: the overlay split", seed)
		}
		if n.peak > maxPeers {
			t.Errorf("seed %d: a node held %d connections", seed, n.peak)
		}
	}
}
