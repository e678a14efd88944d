package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"
)

var tt0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// TestPlumtreeLinks: we push to every peer until it prunes us, and again
// once it grafts; a copy pushed to us again prunes its sender, once, until
// it pushes us a first copy again (it was grafted, or had not applied the
// prune yet).
func TestPlumtreeLinks(t *testing.T) {
	tr := newPlumtree[string](time.Second)
	for _, p := range []string{"a", "b", "c", "d"} {
		tr.up(p)
	}
	if !tr.eager("a") {
		t.Fatal("a new link is not eager")
	}
	late := func(p string, n int) (pruned int) {
		for i := range n {
			if tr.duplicate(p, fmt.Sprint(i), tt0) {
				pruned++
			}
		}
		return pruned
	}
	if late("a", pruneAfter-1) != 0 {
		t.Fatal("pruned before pruneAfter late copies")
	}
	tr.received("a", treeItem{"k", "0"}, tt0) // a first copy: the count starts over
	if late("a", pruneAfter-1) != 0 {
		t.Fatal("late copies counted across a first copy")
	}
	if late("a", 1+2*pruneAfter) != 1 {
		t.Fatal("a sender that keeps pushing late copies is pruned, once")
	}
	if !tr.eager("a") {
		t.Fatal("pruning a sender does not stop our own pushes to it")
	}
	tr.received("a", treeItem{"k", "1"}, tt0)
	if late("a", pruneAfter) != 1 {
		t.Fatal("after a first copy from it, a sender's late copies prune it again")
	}
	if late("b", pruneAfter) != 1 || late("c", pruneAfter) != 0 {
		t.Fatalf("pruned below %d links pushing to us", minPushers)
	}
	tr.prune("b")
	if tr.eager("b") {
		t.Fatal("prune")
	}
	tr.graft("b")
	if !tr.eager("b") {
		t.Fatal("graft")
	}
}

// TestPlumtreeGraftsWhenTheTreeFails: a put announced lazily is grafted
// from its first announcer after the timeout unless it arrives; the next
// announcer is tried half a timeout later; when every announcer was tried,
// it is given up.
func TestPlumtreeGraftsWhenTheTreeFails(t *testing.T) {
	tr := newPlumtree[string](time.Second)
	lost, came := treeItem{"k1", "1"}, treeItem{"k2", "2"}
	tr.ihave("a", lost, tt0)
	tr.ihave("a", came, tt0)
	tr.ihave("b", lost, tt0.Add(100*time.Millisecond))
	tr.ihave("a", lost, tt0.Add(200*time.Millisecond)) // again: no second entry
	if g, next := tr.tick(tt0.Add(999 * time.Millisecond)); len(g) != 0 || next != tt0.Add(time.Second) {
		t.Fatalf("early: %v, next %v", g, next)
	}
	tr.received("c", came, tt0.Add(-time.Second)) // through the tree, in time (and long enough ago not to hold grafts back)
	g, next := tr.tick(tt0.Add(time.Second))
	if len(g) != 1 || g[0].to != "a" || g[0].it != lost {
		t.Fatalf("first graft: %v", g)
	}
	if next != tt0.Add(1500*time.Millisecond) {
		t.Fatalf("next graft due %v", next)
	}
	g, _ = tr.tick(tt0.Add(1500 * time.Millisecond))
	if len(g) != 1 || g[0].to != "b" {
		t.Fatalf("second graft: %v", g)
	}
	if g, next := tr.tick(tt0.Add(2 * time.Second)); len(g) != 0 || !next.IsZero() {
		t.Fatalf("after every announcer: %v, next %v", g, next)
	}
	if _, missing := tr.size(); missing != 0 {
		t.Fatalf("%d puts still missing", missing)
	}
}

// TestPlumtreeHoldsGraftsWhileTheTreeDelivers: while puts keep arriving on
// eager links, a missing put is waited for (it is queued behind them), up
// to maxGraftWait timeouts.
func TestPlumtreeHoldsGraftsWhileTheTreeDelivers(t *testing.T) {
	tr := newPlumtree[string](time.Second)
	it := treeItem{"k", "1"}
	tr.ihave("a", it, tt0)
	at := tt0
	for at.Before(tt0.Add(maxGraftWait * time.Second)) {
		tr.received("e", treeItem{"other", at.String()}, at) // the tree delivers other puts
		if g, _ := tr.tick(at); len(g) != 0 {
			t.Fatalf("graft at +%v while the tree delivers", at.Sub(tt0))
		}
		at = at.Add(250 * time.Millisecond)
	}
	tr.received("e", treeItem{"other", "last"}, at)
	if g, _ := tr.tick(at); len(g) != 1 || g[0].to != "a" {
		t.Fatalf("after maxGraftWait: grafts %v", g)
	}
}

// TestPlumtreeWaitsAfterAStall: a graft timer that fires late (the
// process was starved) does not graft at once: the pushes queued meanwhile
// are read first.
func TestPlumtreeWaitsAfterAStall(t *testing.T) {
	tr := newPlumtree[string](time.Second)
	it := treeItem{"k", "1"}
	tr.ihave("a", it, tt0)
	_, next := tr.tick(tt0)
	late := next.Add(5 * time.Second)
	g, next := tr.tick(late)
	if len(g) != 0 {
		t.Fatalf("grafted right after a stall: %v", g)
	}
	for next.Before(late.Add(time.Second)) {
		if g, next = tr.tick(next); len(g) != 0 {
			t.Fatalf("grafted %v after the stall", next.Sub(late))
		}
	}
	if g, _ := tr.tick(next); len(g) != 1 {
		t.Fatalf("no graft a timeout after the stall: %v", g)
	}
}

// TestPlumtreeTimeoutFollowsLag: puts that come down the tree late after
// their announcement, or whose tree copy follows a graft, raise the graft
// timeout to twice that lag (capped); on-time puts bring it back down
// slowly.
func TestPlumtreeTimeoutFollowsLag(t *testing.T) {
	tr := newPlumtree[string](time.Second)
	if tr.graftTimeout() != time.Second {
		t.Fatalf("initial timeout %v", tr.graftTimeout())
	}
	it := treeItem{"k", "1"}
	tr.ihave("a", it, tt0)
	tr.received("e", it, tt0.Add(2*time.Second))
	if got := tr.graftTimeout(); got != 4*time.Second {
		t.Fatalf("after a 2 s lag: timeout %v, want 4s", got)
	}
	// A grafted put whose copy from the tree comes 20 s later: capped.
	tr.rememberGraft("2", tt0)
	tr.duplicate("e", "2", tt0.Add(20*time.Second))
	if got := tr.graftTimeout(); got != maxGraftTimeout {
		t.Fatalf("after a 20 s lag: timeout %v, want the cap %v", got, maxGraftTimeout)
	}
	for i := range 200 {
		it := treeItem{"k", fmt.Sprint(i)}
		tr.ihave("a", it, tt0)
		tr.received("e", it, tt0.Add(10*time.Millisecond))
	}
	if got := tr.graftTimeout(); got != time.Second {
		t.Fatalf("after 200 on-time puts: timeout %v, want back to 1s", got)
	}
}

// TestPlumtreeDownForgetsAnnouncer: a link that goes away is not grafted.
func TestPlumtreeDownForgetsAnnouncer(t *testing.T) {
	tr := newPlumtree[string](time.Second)
	it := treeItem{"k", "1"}
	tr.ihave("a", it, tt0)
	tr.ihave("b", it, tt0)
	tr.down("a")
	if g, _ := tr.tick(tt0.Add(time.Second)); len(g) != 1 || g[0].to != "b" {
		t.Fatalf("grafts %v, want one to b", g)
	}
}

// mesh links bridges i and j for every pair in edges and returns the
// peers, by bridge, keyed by the other bridge's index.
func mesh(t *testing.T, bs []*Bridge, edges [][2]int) []map[int]*Peer {
	t.Helper()
	peers := make([]map[int]*Peer, len(bs))
	for i := range peers {
		peers[i] = map[int]*Peer{}
	}
	for _, e := range edges {
		pa, pb := link(t, bs[e[0]], bs[e[1]])
		peers[e[0]][e[1]], peers[e[1]][e[0]] = pa, pb
	}
	return peers
}

// treeMesh is 8 bridges on a ring with chords: every node has 3 or 4
// links, so flooding delivers most puts several times.
var treeMeshEdges = [][2]int{
	{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 6}, {6, 7}, {7, 0},
	{0, 4}, {1, 5}, {2, 6}, {3, 7}, {0, 2}, {4, 6},
}

// writeAndWait writes n records on bs[0] under prefix and waits until every
// bridge holds all of them; paced, it waits for each record before the
// next, so no put waits in a queue longer than a graft timeout.
func writeAndWait(t *testing.T, bs []*Bridge, prefix string, n int, paced bool) {
	t.Helper()
	ctx := context.Background()
	wait := func(i int) {
		for _, b := range bs[1:] {
			waitRecord(t, b.Store(), fmt.Sprintf("%s/%03d", prefix, i), "")
		}
	}
	for i := range n {
		rec := record(t, testUser, fmt.Sprintf("%s/%03d", prefix, i), `1`)
		if _, err := bs[0].Put(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if paced {
			wait(i)
		}
	}
	if !paced {
		for i := range n {
			wait(i)
		}
	}
}

// treeCost sums, over every bridge, the put copies dropped as duplicates
// and the messages sent.
func treeCost(bs []*Bridge) (dups, out uint64, st Stats) {
	for _, b := range bs {
		s := b.Stats()
		dups += s.Duplicates
		out += s.MessagesOut
		st.IHaves += s.IHaves
		st.Grafts += s.Grafts
		st.Prunes += s.Prunes
		st.LazyLinks += s.LazyLinks
	}
	return dups, out, st
}

// TestTreeCutsDuplicates: on a mesh of 8 bridges the tree prunes the links
// that bring copies; after the first puts, a put brings far fewer copies
// than flooding (DisablePlumtree) does. The writes are paced (each waits
// for the last to arrive everywhere), so that no put is delayed past a
// graft timeout: grafts under a backlog are the load test's subject.
func TestTreeCutsDuplicates(t *testing.T) {
	run := func(disable bool) (dupsPerRecord float64, st Stats) {
		bs := make([]*Bridge, 8)
		for i := range bs {
			bs[i] = newBridge(t, Config{Server: true, DisablePlumtree: disable, DisableSync: true})
		}
		mesh(t, bs, treeMeshEdges)
		writeAndWait(t, bs, "warm", 20, true) // the tree forms
		d0, _, _ := treeCost(bs)
		const n = 100
		writeAndWait(t, bs, "load", n, true)
		d1, _, st := treeCost(bs)
		return float64(d1-d0) / n, st
	}
	flood, _ := run(true)
	tree, st := run(false)
	t.Logf("duplicates per put over 7 receivers: flooding %.2f, tree %.2f (ihave items %d, grafts %d, prunes %d, lazy links %d)",
		flood, tree, st.IHaves, st.Grafts, st.Prunes, st.LazyLinks)
	if st.Prunes == 0 || st.LazyLinks == 0 || st.IHaves == 0 {
		t.Fatalf("no tree formed: %+v", st)
	}
	// Which links end up pruned depends on the order copies arrive in
	// during the warm-up, and every node keeps minPushers links pushing to
	// it: the tree settles at one of a few shapes, about 1.0, 2.1-2.5 or
	// 3.0 duplicates a put against flooding's 6 (30 runs under -race: the
	// 3.0 shape in 11 of them; it failed CI once when the limit was half
	// of flooding's). Without the tree it stays at flooding's.
	if tree > 0.6*flood {
		t.Fatalf("the tree delivers %.2f duplicates a put, flooding %.2f", tree, flood)
	}
}

// TestTreeHealsByGraft: with anti-entropy off, a node whose every link
// that pushes puts to it is cut still gets every put: it hears of them on
// the links it pruned ("ihave") and grafts them.
func TestTreeHealsByGraft(t *testing.T) {
	bs := make([]*Bridge, 8)
	for i := range bs {
		bs[i] = newBridge(t, Config{Server: true, DisableSync: true, GraftTimeout: 100 * time.Millisecond})
	}
	peers := mesh(t, bs, treeMeshEdges)
	writeAndWait(t, bs, "warm", 20, true)
	// A node other than the writer that pruned some of its links.
	victim := -1
	for i := 1; i < len(bs) && victim < 0; i++ {
		bs[i].treeMu.Lock()
		if len(bs[i].tree.pruned) > 0 {
			victim = i
		}
		bs[i].treeMu.Unlock()
	}
	if victim < 0 {
		t.Fatal("no node pruned a link")
	}
	b := bs[victim]
	cut := 0
	for j, p := range peers[victim] {
		b.treeMu.Lock()
		pushes := !b.tree.pruned[p]
		b.treeMu.Unlock()
		if pushes {
			p.Close()
			waitDone(t, p)
			waitDone(t, peers[j][victim])
			cut++
		}
	}
	before := b.Stats().Grafts
	writeAndWait(t, bs, "after", 20, true)
	grafts := b.Stats().Grafts - before
	t.Logf("node %d: cut the %d links that pushed to it; %d grafts brought the 20 puts", victim, cut, grafts)
	if grafts == 0 {
		t.Fatal("the puts arrived without a graft: the cut node still had a link pushing to it")
	}
}

// TestTreeOlderPeerGetsEverything: a swarmdb peer of protocol 1 and a ToolDb
// peer are sent every put in full, never an "ihave", and never pruned.
func TestTreeOlderPeerGetsEverything(t *testing.T) {
	b := newBridge(t, Config{Server: true})
	old, _ := newFakePeer(t, b, false)
	d, err := SignPeerDesc(old.user, DefaultTopic, time.Now().UnixMilli(), "127.0.0.1", 8080)
	if err != nil {
		t.Fatal(err)
	}
	ping := &Message{Type: TypePing, ID: newID(), To: []string{old.id}, IsServer: true, ClientID: old.id, Peer: &d, Swarmdb: 1}
	old.sendMsg(ping)
	if pong := old.next(); pong.Type != TypePong {
		t.Fatalf("want pong, got %+v", pong)
	}
	tooldb, _ := newFakePeer(t, b, false)
	tooldb.hello(DefaultTopic, true, false)
	for i := range 5 {
		rec := record(t, testUser, keyN(i), `1`)
		// The same put arrives twice from the old peer: no prune for it.
		m := putMsg(rec)
		old.sendMsg(m)
		old.sendMsg(m)
		got := tooldb.next(TypeSync)
		if got.Type != TypePut || got.Data.Key != keyN(i) {
			t.Fatalf("ToolDb peer got %+v", got)
		}
	}
	if st := b.Stats(); st.Prunes != 0 || st.IHaves != 0 {
		t.Fatalf("tree messages to peers outside the tree: %+v", st)
	}

}
