package swarm

import (
	"crypto/ed25519"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/secure"
)

// meshSize is the number of swarms in the full-mesh test (issue 5 asks
// for 20).
var meshSize = 20

// meshDeadTimeout is the sessions' dead-peer timeout in the mesh test,
// the default: a shorter one drops live sessions when 20 swarms share
// two cores under the race detector.
const meshDeadTimeout = secure.DefaultDeadTimeout

// TestMeshOneConnectionPerPair: 20 swarms join one topic at the same
// instant on a loopback DHT; every pair ends with exactly one connection
// (both ends are one session); a swarm that is killed is reported
// disconnected by all others within a bound; restarted with the same key
// it is reconnected to all of them.
func TestMeshOneConnectionPerPair(t *testing.T) {
	if testing.Short() {
		t.Skip("20 swarms")
	}
	testutil.CheckLeaks(t)
	nw := startNet(t, 10)
	swarms := make([]*testSwarm, meshSize)
	victimNet := newCrashNet(t)
	var wg sync.WaitGroup
	for i := range swarms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			swarms[i] = startSwarm(t, nw, nil, func(c *Config) {
				c.Session.DeadTimeout = meshDeadTimeout
				if i == 0 {
					c.Net = victimNet
				}
			})
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Everyone joins at the same instant.
	gate := make(chan struct{})
	errs := make(chan error, meshSize)
	for _, s := range swarms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			_, err := s.Join("mesh", JoinOptions{})
			errs <- err
		}()
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	keys := func(except *testSwarm) []ed25519.PublicKey {
		var out []ed25519.PublicKey
		for _, s := range swarms {
			if s != except {
				out = append(out, s.PublicKey())
			}
		}
		return out
	}
	defer func() {
		if t.Failed() {
			for i, n := range nw.Nodes() {
				st := n.Stats()
				t.Logf("dht node %d: rate-limited %d, in %d, stun %d, other %d, relayed %d", i, st.DroppedRateLimited, st.PacketsIn, st.STUNAnswered, st.OtherPackets, st.RelaysForwarded)
			}
		}
	}()
	// Two minutes on a machine with its cores to spare. 20 swarms share a
	// process; on a loaded machine every DHT reply, ICE check and
	// handshake waits for a core, so the bound grows with the load (at
	// most 6 minutes): at load 12 on the 2 cores the mesh was still
	// growing at 2 minutes (8 to 16 of 19 connections a swarm).
	wait := min(testutil.Scaled(2*time.Minute), 6*time.Minute)
	for _, s := range swarms {
		waitConnsOrDump(t, swarms, s, wait, keys(s)...)
	}
	t.Logf("full mesh of %d swarms (%d pairs) after %v", meshSize, meshSize*(meshSize-1)/2, time.Since(start).Round(time.Millisecond))
	checkMesh(t, swarms)

	// Crash one (its socket goes silent, no goodbye); everyone else
	// reports it gone once the keepalives stop.
	victim := swarms[0]
	killedAt := time.Now()
	victimNet.Dead.Store(true)
	var slowest time.Duration
	for _, s := range swarms[1:] {
		s.rec.wait(t, 2*meshDeadTimeout, "disconnect of the crashed swarm", func() bool {
			for _, c := range s.rec.closed {
				if c.info.PublicKey.Equal(victim.PublicKey()) {
					slowest = max(slowest, c.at.Sub(killedAt))
					return true
				}
			}
			return false
		})
	}
	t.Logf("all %d swarms reported the crashed swarm within %v (dead timeout %v)", meshSize-1, slowest.Round(time.Millisecond), meshDeadTimeout)
	victim.Close()

	// Restart it with the same key; it reconnects to everyone.
	restartAt := time.Now()
	back := startSwarm(t, nw, victim.key, func(c *Config) { c.Session.DeadTimeout = meshDeadTimeout })
	if _, err := back.Join("mesh", JoinOptions{}); err != nil {
		t.Fatal(err)
	}
	swarms[0] = back
	waitConns(t, back, 120*time.Second, keys(back)...)
	for _, s := range swarms[1:] {
		waitConns(t, s, 60*time.Second, back.PublicKey())
	}
	t.Logf("restarted swarm reconnected to all %d after %v", meshSize-1, time.Since(restartAt).Round(time.Millisecond))
	checkMesh(t, swarms)
}

// waitConnsOrDump is waitConns that logs every swarm's stats on failure.
func waitConnsOrDump(t *testing.T, swarms []*testSwarm, s *testSwarm, d time.Duration, peers ...ed25519.PublicKey) {
	t.Helper()
	defer func() {
		if t.Failed() {
			for i, s := range swarms {
				s.mu.Lock()
				for _, p := range s.table.peers {
					if !p.connected {
						t.Logf("   peer %x queued=%v due=%v dialing=%v retries=%d attempts=%d topics=%d tableDialing=%d", p.pub[:4], p.queued, time.Until(p.due).Round(time.Millisecond), p.dialing, p.retries, p.attempts, len(p.topics), s.table.dialing)
					}
				}
				s.mu.Unlock()
				st := s.Node().Stats()
				t.Logf("swarm %d %x: conns %d lookups %d attempts %d failures %v queued %d known %v dup %d; dht in %d out %d timeouts %d unexpected %d malformed %d ratelimited %d other %d rt %d", i, s.PublicKey()[:4], s.Stats().Connections, s.Stats().Lookups, s.Stats().Attempts, s.Stats().FailuresByReason, s.Stats().Queued, s.Stats().PeersByTopic[TopicOf("mesh")], s.Stats().Duplicates, st.PacketsIn, st.PacketsOut, st.Timeouts, st.DroppedUnexpectedReply, st.DroppedMalformed, st.DroppedRateLimited, st.OtherPackets, st.RoutingTable)
			}
		}
	}()
	waitConns(t, s, d, peers...)
}

// checkMesh asserts exactly one connection per pair: each swarm holds one
// connection to each other swarm, the two ends of every pair are the same
// session (a message crosses it), and the connection events add up.
func checkMesh(t *testing.T, swarms []*testSwarm) {
	t.Helper()
	// Every pair must end as one live session. Simultaneous dials can
	// leave a pair with two half-open sessions for a while (holepunch keeps
	// the newest session per key on each side, which is not always the
	// same one); the swarms replace them once the dead timeout fires.
	healed := 0
	for i, a := range swarms {
		for _, b := range swarms[i+1:] {
			if pingPairEventually(t, a, b, 3*meshDeadTimeout) {
				healed++
			}
		}
	}
	if healed > 0 {
		t.Logf("%d pairs were not one live session at first and settled", healed)
	}
	for i, a := range swarms {
		if n := a.Stats().Connections; n != len(swarms)-1 {
			a.rec.mu.Lock()
			for _, c := range a.rec.closed {
				t.Logf("swarm %d: closed %x role %s: %v", i, c.info.PublicKey[:4], c.info.Role, c.err)
			}
			a.rec.mu.Unlock()
			t.Fatalf("swarm %d holds %d connections, want %d", i, n, len(swarms)-1)
		}
		a.rec.mu.Lock()
		open := len(a.rec.opened) - len(a.rec.closed)
		a.rec.mu.Unlock()
		if open != len(swarms)-1 {
			t.Fatalf("swarm %d: connection events minus disconnect events = %d, want %d", i, open, len(swarms)-1)
		}
		for _, b := range swarms[i+1:] {
			pingPair(t, a, b)
		}
	}
}
