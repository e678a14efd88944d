package swarm

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

func TestTwoSwarmsConnectByTopic(t *testing.T) {
	testutil.CheckLeaks(t)
	nw := startNet(t, 8)
	a := startSwarm(t, nw, nil, nil)
	b := startSwarm(t, nw, nil, nil)
	topic := TopicOf("two-swarms")
	connectByTopic(t, a, b, "two-swarms")
	pingPair(t, a, b)
	pingPair(t, b, a)

	b.rec.mu.Lock()
	info := b.rec.opened[0]
	b.rec.mu.Unlock()
	if info.Role != RoleClient || !info.PublicKey.Equal(a.PublicKey()) || !slices.Contains(info.Topics, topic) || info.Attempts != 1 {
		t.Fatalf("client side PeerInfo = %+v", info)
	}
	a.rec.mu.Lock()
	info = a.rec.opened[0]
	a.rec.mu.Unlock()
	if info.Role != RoleServer || !info.PublicKey.Equal(b.PublicKey()) {
		t.Fatalf("server side PeerInfo = %+v", info)
	}
	st := b.Stats()
	if st.Connections != 1 || st.ByRole[RoleClient] != 1 || st.Attempts != 1 || st.PeersByTopic[topic] != 1 || st.Lookups == 0 {
		t.Fatalf("client stats = %+v", st)
	}
	if st := a.Stats(); st.ByRole[RoleServer] != 1 || st.Announces == 0 {
		t.Fatalf("server stats = %+v", st)
	}
}

// A dial of ours that was queued when the peer's own connection arrived
// finds that connection held and leaves it: no second connection replaces
// the first (a late replacement once closed a connection under the mesh
// test's ping), no duplicate, no failure, and the peer's dial state is
// cleared.
func TestQueuedDialKeepsArrivedConnection(t *testing.T) {
	nw := startNet(t, 8)
	a := startSwarm(t, nw, nil, nil)
	b := startSwarm(t, nw, nil, nil)
	connectByTopic(t, a, b, "queued-dial")
	before := a.Conn(b.PublicKey())

	// The server's dial loop took a job for the client just before the
	// client's connection came in; its goroutine runs now.
	a.mu.Lock()
	p := a.table.get(b.PublicKey())
	p.dialing, p.dialKind = true, kindJoin
	a.table.dialing++
	a.mu.Unlock()
	a.wg.Add(1)
	a.dial(dialJob{pub: b.PublicKey()})

	if got := a.Conn(b.PublicKey()); got != before {
		t.Fatal("the queued dial replaced the open connection")
	}
	for name, s := range map[string]*testSwarm{"server": a, "client": b} {
		if st := s.Stats(); st.Duplicates != 0 || len(st.FailuresByReason) != 0 || st.Connections != 1 || st.Dialing != 0 {
			t.Errorf("%s: duplicates %d, failures %v, connections %d, dialling %d; want 0, none, 1, 0", name, st.Duplicates, st.FailuresByReason, st.Connections, st.Dialing)
		}
	}
	pingPair(t, a, b)
	pingPair(t, b, a)
}

// connectByTopic joins server to name as a server and client as a pure
// client, and waits until each holds a connection to the other.
func connectByTopic(t *testing.T, server, client *testSwarm, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := server.Join(name, JoinOptions{}); err != nil {
		t.Fatal(err)
	}
	// A pure client looks up once per refresh: join it after the server's
	// record is stored.
	if err := server.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Join(name, JoinOptions{Client: true}); err != nil {
		t.Fatal(err)
	}
	if err := client.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitConns(t, server, 20*time.Second, client.PublicKey())
	waitConns(t, client, 20*time.Second, server.PublicKey())
}

// An idle connection's liveness rides on the sessions' keepalives (one
// empty datagram a second each way): the membership's control-stream ping
// goes out only when they go missing. With secure's 2 s keepalive the ping
// fired on every idle connection about every second at both ends.
func TestIdleConnectionIsNotPinged(t *testing.T) {
	nw := startNet(t, 8)
	a := startSwarm(t, nw, nil, nil)
	b := startSwarm(t, nw, nil, nil)
	connectByTopic(t, a, b, "idle-liveness")
	time.Sleep(time.Second) // setup's own messages (hellos, walks) pass
	sent := func(s *testSwarm, peer *testSwarm) uint64 {
		return s.Conn(peer.PublicKey()).Stats().Datagram.SentPackets
	}
	p0 := a.Stats().Membership.Probes + b.Stats().Membership.Probes
	sa, sb := sent(a, b), sent(b, a)
	const idle = 6 * time.Second
	time.Sleep(idle)
	probes := a.Stats().Membership.Probes + b.Stats().Membership.Probes - p0
	da, db := sent(a, b)-sa, sent(b, a)-sb
	t.Logf("over %v idle: %d pings, datagrams sent %d and %d", idle, probes, da, db)
	// One keepalive late by a second on a loaded machine sends a ping;
	// the old timing sent about three at each end.
	if probes > 2 {
		t.Fatalf("%d pings over %v on an idle, live connection; want at most 2", probes, idle)
	}
	if a.Conn(b.PublicKey()) == nil || b.Conn(a.PublicKey()) == nil {
		t.Fatal("the idle connection was lost")
	}
}
