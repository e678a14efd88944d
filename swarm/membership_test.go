package swarm

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

var membershipRuns = flag.Int("membership.runs", 20, "TestMembershipOneComponent: runs")

// component reports how many of the swarms node 0 reaches over their open
// connections (an edge counts when either end reports it), and the largest
// number of connections one swarm holds.
func component(swarms []*testSwarm) (reached, maxDegree int) {
	index := map[peerKey]int{}
	for i, s := range swarms {
		index[peerKey(s.PublicKey())] = i
	}
	adj := make([][]int, len(swarms))
	for i, s := range swarms {
		conns := s.Conns()
		maxDegree = max(maxDegree, len(conns))
		for _, c := range conns {
			if j, ok := index[peerKey(c.RemotePublicKey())]; ok {
				adj[i] = append(adj[i], j)
				adj[j] = append(adj[j], i)
			}
		}
	}
	seen := make([]bool, len(swarms))
	stack := []int{0}
	seen[0] = true
	reached = 1
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, j := range adj[i] {
			if !seen[j] {
				seen[j] = true
				reached++
				stack = append(stack, j)
			}
		}
	}
	return reached, maxDegree
}

// TestMembershipOneComponent is issue 19's case: 16 swarms join one topic
// one after another with MaxPeers 4, far fewer than the swarm. Without the
// membership protocol they split into cliques that never join (16 nodes at
// MaxPeers 8 became a 9-clique and a 7-clique in 7 runs of 9); with it they
// form one connected network in every run, and no swarm ever holds more
// than MaxPeers connections.
func TestMembershipOneComponent(t *testing.T) {
	if testing.Short() {
		t.Skip("20 runs of 16 swarms")
	}
	testutil.CheckLeaks(t)
	nw := startNet(t, 6)
	const (
		nodes    = 16
		maxPeers = 4
	)
	for run := range *membershipRuns {
		topic := fmt.Sprintf("membership-%d", run)
		start := time.Now()
		swarms := make([]*testSwarm, 0, nodes)
		var closers []func()
		for range nodes {
			s := startSwarm(t, nw, nil, func(c *Config) { c.MaxPeers = maxPeers })
			closers = append(closers, func() { s.Close() })
			swarms = append(swarms, s)
			if _, err := s.Join(topic, JoinOptions{}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := s.Flush(ctx)
			cancel()
			if err != nil {
				t.Fatalf("run %d: flush: %v", run, err)
			}
		}
		var reached, maxDeg int
		testutil.Poll(30*time.Second, 50*time.Millisecond, func() bool { // a split is reported below
			reached, maxDeg = component(swarms)
			return reached == nodes
		})
		var peak int
		var demoted, admitted uint64
		degrees := make([]int, 0, nodes)
		for _, s := range swarms {
			peak = max(peak, s.peakConns())
			st := s.Stats()
			demoted += st.Membership.Demoted
			admitted += st.Membership.PriorityAdmitted
			degrees = append(degrees, st.Connections)
		}
		t.Logf("run %d: %d of %d in one component after %v; degrees %v (peak %d, MaxPeers %d); %d admitted by priority, %d demoted",
			run, reached, nodes, time.Since(start).Round(time.Millisecond), degrees, peak, maxPeers, admitted, demoted)
		if reached != nodes {
			t.Errorf("run %d: the swarm split: node 0 reaches %d of %d", run, reached, nodes)
		}
		if maxDeg > maxPeers || peak > maxPeers {
			t.Errorf("run %d: a swarm held %d connections (peak %d), MaxPeers %d", run, maxDeg, peak, maxPeers)
		}
		closeParallel(closers)
		if t.Failed() {
			return
		}
	}
}

// closeParallel runs the closers at once and waits for them.
func closeParallel(closers []func()) {
	var wg sync.WaitGroup
	for _, c := range closers {
		wg.Add(1)
		go func() { defer wg.Done(); c() }()
	}
	wg.Wait()
}
