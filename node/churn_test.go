package node_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/bridge"
	"github.com/swarmdb/swarmdb/db"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/node"
	"github.com/swarmdb/swarmdb/swarm"
)

// TestLoadChurn is issue 19's large case, opt-in (it takes minutes and
// most of the machine):
//
//	TMPDIR=/dev/shm go test -run TestLoadChurn -v -timeout 60m ./node/ -churn
//
// 256 nodes with MaxPeers 8 join one topic one after another; one of them
// writes 50 records a second for two minutes while a fifth of the others
// crash (their sockets go silent) one at a time and are replaced by new
// nodes. Every second the overlay of the nodes that have joined (had a
// connection) must be one component; no node may ever hold more than
// MaxPeers connections; and in the end every live node must hold every
// record, each delivered once to its subscription.
var (
	churnFlag     = flag.Bool("churn", false, "run TestLoadChurn")
	churnNodes    = flag.Int("churn.nodes", 256, "TestLoadChurn: nodes")
	churnMaxPeers = flag.Int("churn.maxpeers", 8, "TestLoadChurn: MaxPeers of every node")
	churnRate     = flag.Int("churn.rate", 50, "TestLoadChurn: records written per second")
	churnFor      = flag.Duration("churn.duration", 2*time.Minute, "TestLoadChurn: how long the writer writes")
	churnReplace  = flag.Float64("churn.replace", 0.2, "TestLoadChurn: fraction of the nodes killed and replaced during the writes")
)

// churnMember is one node of the churn test.
type churnMember struct {
	id      int
	nd      *node.Node
	net     *testutil.CrashNet
	key     string
	started time.Time
	w       *db.Watcher

	mu      sync.Mutex
	seen    map[int]bool
	dups    int
	foreign int
	lat     []time.Duration // records written after the node started
}

// churnGraph is the overlay as the nodes' connection events show it.
type churnGraph struct {
	mu     sync.Mutex
	adj    map[string]map[string]bool
	alive  map[string]bool
	joined map[string]bool // had a connection
	peak   int
}

func newChurnGraph() *churnGraph {
	return &churnGraph{adj: map[string]map[string]bool{}, alive: map[string]bool{}, joined: map[string]bool{}}
}

func (g *churnGraph) set(from, to string, up bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.adj[from] == nil {
		g.adj[from] = map[string]bool{}
	}
	if up {
		g.adj[from][to] = true
		g.joined[from] = true
		g.peak = max(g.peak, len(g.adj[from]))
	} else {
		delete(g.adj[from], to)
	}
}

// sample returns the size of the largest component of the live, joined
// nodes, and how many there are; an edge counts when either end reports
// it.
func (g *churnGraph) sample() (largest, members int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	und := map[string][]string{}
	for k := range g.alive {
		if !g.joined[k] {
			continue
		}
		members++
		for p := range g.adj[k] {
			if g.alive[p] && g.joined[p] {
				und[k] = append(und[k], p)
				und[p] = append(und[p], k)
			}
		}
	}
	seen := map[string]bool{}
	for k := range g.alive {
		if !g.joined[k] || seen[k] {
			continue
		}
		size := 1
		seen[k] = true
		stack := []string{k}
		for len(stack) > 0 {
			x := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			for _, p := range und[x] {
				if !seen[p] {
					seen[p] = true
					size++
					stack = append(stack, p)
				}
			}
		}
		largest = max(largest, size)
	}
	return largest, members
}

func TestLoadChurn(t *testing.T) {
	if !*churnFlag {
		t.Skip("opt-in: -churn (minutes, most of the machine)")
	}
	n := loopbackNet(t)
	nodes, maxPeers, rate := *churnNodes, *churnMaxPeers, *churnRate
	records := int(churnFor.Seconds() * float64(rate))
	kills := int(float64(nodes-1) * *churnReplace)
	graph := newChurnGraph()
	var reasons tally

	var mu sync.Mutex
	var members []*churnMember // every node ever started, by id
	var closing sync.WaitGroup
	defer func() {
		mu.Lock()
		ms := append([]*churnMember(nil), members...)
		mu.Unlock()
		var nds []*node.Node
		for _, m := range ms {
			if m.w != nil {
				m.w.Close()
			}
			nds = append(nds, m.nd)
		}
		closing.Wait()
		closeAll(nds)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var collectors sync.WaitGroup
	defer collectors.Wait()
	defer cancel()

	// start starts node id; it may run on the killer's goroutine, so it
	// reports errors instead of failing the test itself.
	start := func(id int) (*churnMember, error) {
		cn, err := testutil.NewCrashNet()
		if err != nil {
			return nil, err
		}
		m := &churnMember{id: id, net: cn, seen: map[int]bool{}}
		nd, err := node.New(node.Config{
			Topic: "churn-test", DataDir: t.TempDir(), Net: cn, Bootstrap: n.Bootstrap,
			// Every node its own loopback address, as on different hosts.
			ListenAddr:   fmt.Sprintf("127.%d.%d.1:0", 10+id/250, 1+id%250),
			KeepLoopback: true, DisableLAN: true, MaxPeers: maxPeers,
			DisablePlumtree: *loadFloodFlag, StaleAfter: *loadStaleFlag,
			OnPeerConnect: func(ev node.PeerEvent) { graph.set(m.key, hex.EncodeToString(ev.PublicKey), true) },
			OnPeerDisconnect: func(ev node.PeerEvent) {
				graph.set(m.key, hex.EncodeToString(ev.PublicKey), false)
				reasons.add(ev.Err)
			},
		})
		if err != nil {
			return nil, err
		}
		m.nd, m.key = nd, hex.EncodeToString(nd.PublicKey())
		graph.mu.Lock()
		graph.alive[m.key] = true
		graph.mu.Unlock()
		sctx, scancel := context.WithTimeout(context.Background(), 60*time.Second)
		err = nd.Start(sctx)
		scancel()
		if err != nil {
			return nil, fmt.Errorf("node %d: %w", id, err)
		}
		m.started = time.Now()
		mu.Lock()
		members = append(members, m)
		mu.Unlock()
		if id > 0 {
			w, err := nd.SubscribePrefix("churn/")
			if err != nil {
				return nil, err
			}
			m.w = w
			collectors.Add(1)
			go func() {
				defer collectors.Done()
				m.collect(ctx, records)
			}()
		}
		return m, nil
	}

	setupStart := time.Now()
	for i := range nodes {
		if _, err := start(i); err != nil {
			t.Fatal(err)
		}
	}
	var reached, joined int
	if !testutil.Poll(5*time.Minute, 200*time.Millisecond, func() bool { // each check walks the whole graph
		reached, joined = graph.sample()
		return reached == nodes && joined == nodes
	}) {
		t.Fatalf("%d nodes not one component after 5 min: %d of %d joined reach each other", nodes, reached, joined)
	}
	t.Logf("%d nodes (MaxPeers %d) started and one component in %v; heap %d MiB, %d goroutines",
		nodes, maxPeers, time.Since(setupStart).Round(time.Second), heapInUse()>>20, runtime.NumGoroutine())
	settleMembership(t, liveNodes(&mu, members))

	// Sample the overlay every second from here to the end.
	type sample struct{ reached, members int }
	var samples []sample
	var sampling sync.WaitGroup
	stopSampling := make(chan struct{})
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			r, m := graph.sample()
			mu.Lock()
			samples = append(samples, sample{r, m})
			mu.Unlock()
		}
	}()
	memBefore := membershipSum(liveNodes(&mu, members))
	var memKilled swarm.MembershipStats // of the nodes killed, just before
	heapBefore := heapInUse()
	var peakHeap atomic.Uint64
	peakHeap.Store(heapBefore)
	stopHeap := sampleHeap(&peakHeap)

	// The writer, and the killer alongside it.
	writer := members[0].nd
	now := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	killed := map[int]bool{}
	var killing sync.WaitGroup
	killing.Add(1)
	go func() {
		defer killing.Done()
		every := *churnFor / time.Duration(kills+1)
		for range kills {
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
			mu.Lock()
			var cands []*churnMember
			for _, m := range members[1:] {
				if !killed[m.id] {
					cands = append(cands, m)
				}
			}
			victim := cands[rng.IntN(len(cands))]
			killed[victim.id] = true
			next := len(members)
			mu.Unlock()
			ms := membershipSum([]*node.Node{victim.nd})
			mu.Lock()
			memKilled.PriorityAdmitted += ms.PriorityAdmitted
			memKilled.Demoted += ms.Demoted
			memKilled.Stale += ms.Stale
			mu.Unlock()
			victim.net.Dead.Store(true)
			graph.mu.Lock()
			delete(graph.alive, victim.key)
			graph.mu.Unlock()
			closing.Add(1)
			go func() {
				defer closing.Done()
				victim.w.Close()
				victim.nd.Close()
			}()
			if _, err := start(next); err != nil {
				t.Errorf("replacement: %v", err)
				return
			}
		}
	}()
	if err := writeLoad(ctx, writer, records, rate, "churn/%05d"); err != nil {
		t.Fatal(err)
	}
	writeTime := time.Since(now)
	t.Logf("%d records written in %v", records, writeTime.Round(time.Millisecond))
	killing.Wait()

	// Every live node must get every record.
	mu.Lock()
	var live []*churnMember
	for _, m := range members[1:] {
		if !killed[m.id] {
			live = append(live, m)
		}
	}
	mu.Unlock()
	waitDeadline := time.Now().Add(10 * time.Minute)
	lastProgress, lastTotal := time.Now(), -1
	lastReport := time.Now()
	for {
		total, done := 0, 0
		for _, m := range live {
			m.mu.Lock()
			total += len(m.seen)
			if len(m.seen) == records {
				done++
			}
			m.mu.Unlock()
		}
		if done == len(live) {
			break
		}
		if total != lastTotal {
			lastTotal, lastProgress = total, time.Now()
		}
		if time.Since(lastReport) >= 30*time.Second {
			lastReport = time.Now()
			t.Logf("%v after the writes began: %d of %d live nodes complete, %d of %d deliveries", time.Since(now).Round(time.Second), done, len(live), total, records*len(live))
		}
		if time.Now().After(waitDeadline) || time.Since(lastProgress) > 2*time.Minute {
			t.Errorf("%d of %d live nodes complete; %d of %d deliveries", done, len(live), total, records*len(live))
			break
		}
		time.Sleep(time.Second)
	}
	deliverTime := time.Since(now)
	close(stopSampling)
	sampling.Wait()
	stopHeap()
	liveNds := liveNodes(&mu, members)
	memAfter := membershipSum(liveNds)
	mu.Lock()
	memAfter.PriorityAdmitted += memKilled.PriorityAdmitted
	memAfter.Demoted += memKilled.Demoted
	memAfter.Stale += memKilled.Stale
	mu.Unlock()

	split, outside := 0, 0
	for _, s := range samples {
		if s.reached != s.members {
			split++
			outside = max(outside, s.members-s.reached)
		}
	}
	var lat []time.Duration
	dups, foreign := 0, 0
	for _, m := range live {
		m.mu.Lock()
		dups += m.dups
		foreign += m.foreign
		lat = append(lat, m.lat...)
		m.mu.Unlock()
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(time.Millisecond)
	}
	var sum bridge.Stats
	for _, nd := range liveNds {
		b := nd.Stats().Bridge
		sum.Duplicates += b.Duplicates
		sum.Relayed += b.Relayed
		sum.MessagesOut += b.MessagesOut
		sum.BytesOut += b.BytesOut
		sum.CatchupSent += b.CatchupSent
		sum.IHaves += b.IHaves
		sum.Grafts += b.Grafts
		sum.Prunes += b.Prunes
	}
	deliveries := float64(records * len(live))
	t.Logf("%d records written in %v (%.0f/s); %d of %d nodes killed and replaced; every live node complete after %v",
		records, writeTime.Round(time.Millisecond), float64(records)/writeTime.Seconds(), kills, nodes-1, deliverTime.Round(time.Second))
	t.Logf("overlay sampled every second: %d samples, %d with the joined nodes split (at most %d outside the largest component); most connections one node ever held: %d (MaxPeers %d)",
		len(samples), split, outside, graph.peak, maxPeers)
	t.Logf("delivery time over %d events (nodes present when written): p50 %v, p95 %v, p99 %v, max %v", len(lat), pct(0.5), pct(0.95), pct(0.99), pct(1))
	t.Logf("subscriptions: %d duplicate events, %d unexpected", dups, foreign)
	t.Logf("per delivered record: %.2f copies dropped, %.2f put copies relayed, %.2f catch-up records; per record: %.1f messages sent (%.0f KiB), %.1f ihave items, %.2f grafts; %d prunes; broadcast tree %v",
		float64(sum.Duplicates)/deliveries, float64(sum.Relayed)/deliveries, float64(sum.CatchupSent)/deliveries,
		float64(sum.MessagesOut)/float64(records), float64(sum.BytesOut)/float64(records)/1024, float64(sum.IHaves)/float64(records), float64(sum.Grafts)/float64(records), sum.Prunes, !*loadFloodFlag)
	t.Logf("membership during the writes: %d admitted by priority, %d demoted, %d silent connections redialled; disconnects: %s",
		memAfter.PriorityAdmitted-memBefore.PriorityAdmitted, memAfter.Demoted-memBefore.Demoted, memAfter.Stale-memBefore.Stale, reasons.String())
	t.Logf("heap in use: %d MiB before the writes, peak %d MiB (%.1f MiB a live node); %d goroutines (%d a node)",
		heapBefore>>20, peakHeap.Load()>>20, float64(peakHeap.Load())/float64(len(liveNds))/(1<<20), runtime.NumGoroutine(), runtime.NumGoroutine()/max(1, len(liveNds)))
	if split > 0 {
		t.Errorf("the overlay split in %d of %d samples", split, len(samples))
	}
	if graph.peak > maxPeers {
		t.Errorf("a node held %d connections, MaxPeers %d", graph.peak, maxPeers)
	}
	if dups != 0 || foreign != 0 {
		t.Errorf("subscriptions saw %d duplicates and %d unexpected events", dups, foreign)
	}
}

// liveNodes returns the nodes of members that were not closed.
func liveNodes(mu *sync.Mutex, members []*churnMember) []*node.Node {
	mu.Lock()
	defer mu.Unlock()
	var out []*node.Node
	for _, m := range members {
		if !m.net.Dead.Load() {
			out = append(out, m.nd)
		}
	}
	return out
}

// collect reads the member's subscription until it has every record or ctx
// ends, timing the records written after the node started.
func (m *churnMember) collect(ctx context.Context, records int) {
	for {
		ev, err := m.w.Next(ctx)
		if err != nil {
			return
		}
		now := time.Now()
		var v loadValue
		if err := json.Unmarshal(ev.Record.Value, &v); err != nil || v.I < 0 || v.I >= records || ev.Record.Key != fmt.Sprintf("churn/%05d", v.I) {
			m.mu.Lock()
			m.foreign++
			m.mu.Unlock()
			continue
		}
		m.mu.Lock()
		if m.seen[v.I] {
			m.dups++
		} else {
			m.seen[v.I] = true
			if written := time.Unix(0, v.T); written.After(m.started) {
				m.lat = append(m.lat, now.Sub(written))
			}
		}
		m.mu.Unlock()
	}
}
