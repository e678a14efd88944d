package swarm

import (
	"context"
	"crypto/ed25519"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/natcheck"
)

// memDiscovery is an in-memory DHT: announce stores, lookup returns.
type memDiscovery struct {
	mu      sync.Mutex
	records map[Topic][]dht.PeerRecord
	lookups int
}

var _ discovery = (*memDiscovery)(nil)

func (m *memDiscovery) announce(_ context.Context, topic Topic, key ed25519.PrivateKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records[topic] = append(m.records[topic], dht.PeerRecord{PublicKey: key.Public().(ed25519.PublicKey)})
	return nil
}

func (m *memDiscovery) unannounce(context.Context, Topic, ed25519.PrivateKey) error { return nil }

func (m *memDiscovery) lookup(_ context.Context, topic Topic) ([]dht.PeerRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lookups++
	return append([]dht.PeerRecord(nil), m.records[topic]...), nil
}

func (m *memDiscovery) ready(context.Context) error { return nil }
func (m *memDiscovery) localAddr() netip.AddrPort   { return netip.MustParseAddrPort("127.0.0.1:9") }
func (m *memDiscovery) close() error                { return nil }

// failingTransport records the time of every dial and fails it.
type failingTransport struct {
	mu    sync.Mutex
	t0    time.Time
	dials []time.Duration
}

var _ connector = (*failingTransport)(nil)

func (f *failingTransport) configure(*dht.Config) {}
func (f *failingTransport) start(context.Context, *dht.Node, transportHooks) (connector, error) {
	return f, nil
}

func (f *failingTransport) Connect(ctx context.Context, remote ed25519.PublicKey, relays, direct []netip.AddrPort, hello []byte) (*holepunch.Conn, error) {
	f.mu.Lock()
	f.dials = append(f.dials, time.Since(f.t0))
	f.mu.Unlock()
	return nil, errUnreachable
}

func (f *failingTransport) Close() error         { return nil }
func (f *failingTransport) NAT() natcheck.Report { return natcheck.Report{} }

func (f *failingTransport) WaitNAT(context.Context) natcheck.Report { return natcheck.Report{} }

func (f *failingTransport) RemeasureNAT(context.Context) (natcheck.Report, error) {
	return natcheck.Report{}, ErrNoEndpoint
}

func (f *failingTransport) times() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.dials...)
}

// newSyncSwarm starts a swarm with no sockets at all inside a synctest
// bubble.
func newSyncSwarm(t *testing.T, disc *memDiscovery, tr *failingTransport) *Swarm {
	t.Helper()
	s, err := New(Config{
		DisableLAN: true,
		transport:  tr,
		discovery:  func(dht.Config) (discovery, *dht.Node, error) { return disc, nil, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// checkDials compares dial times with windows [lo, hi).
func checkDials(t *testing.T, got []time.Duration, want [][2]time.Duration) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("dials at %v, want %d dials in %v", got, len(want), want)
	}
	for i, w := range want {
		if got[i] < w[0] || got[i] >= w[1] {
			t.Fatalf("dial %d at %v, want in [%v, %v); all: %v", i, got[i], w[0], w[1], got)
		}
	}
}

// TestRetryScheduleTopicPeer: a peer found by a lookup whose dials fail is
// dialled at once, then after about 1 s, 5 s and 15 s, then dropped; the
// next lookup (the 10-minute refresh) finds it again and it is dialled at
// once.
func TestRetryScheduleTopicPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		remote, _, _ := ed25519.GenerateKey(nil)
		topic := TopicOf("retry")
		disc := &memDiscovery{records: map[Topic][]dht.PeerRecord{topic: {{PublicKey: remote}}}}
		tr := &failingTransport{t0: time.Now()}
		s := newSyncSwarm(t, disc, tr)
		defer s.Close()
		if _, err := s.JoinKey(topic, JoinOptions{Client: true}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(9 * time.Minute)
		synctest.Wait()
		checkDials(t, tr.times(), [][2]time.Duration{
			{0, 1},
			{time.Second, 1500 * time.Millisecond},
			{6 * time.Second, 7500 * time.Millisecond},
			{21 * time.Second, 25500 * time.Millisecond},
		})
		if st := s.Stats(); st.Queued != 0 || st.FailuresByReason["unreachable"] != 4 {
			t.Fatalf("after the schedule: %+v", st)
		}
		// The refresh (10 min + up to 2 min) finds the peer again.
		time.Sleep(4 * time.Minute)
		synctest.Wait()
		got := tr.times()
		if len(got) < 5 || got[4] < DefaultRefreshInterval || got[4] >= DefaultRefreshInterval*6/5+time.Second {
			t.Fatalf("no dial at the refresh: %v", got)
		}
		disc.mu.Lock()
		lookups := disc.lookups
		disc.mu.Unlock()
		if lookups != 2 {
			t.Fatalf("%d lookups in 13 minutes, want 2", lookups)
		}
	})
}

// TestRetryScheduleExplicitPeer: an explicit peer is retried after about
// 1 s, 5 s, 15 s and then every 10-12 minutes, forever; LeavePeer stops it.
func TestRetryScheduleExplicitPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		remote, _, _ := ed25519.GenerateKey(nil)
		disc := &memDiscovery{records: map[Topic][]dht.PeerRecord{}}
		tr := &failingTransport{t0: time.Now()}
		s := newSyncSwarm(t, disc, tr)
		defer s.Close()
		if err := s.JoinPeer(remote); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Minute)
		synctest.Wait()
		got := tr.times()
		if len(got) < 7 {
			t.Fatalf("explicit peer dialled %d times in 50 minutes: %v", len(got), got)
		}
		checkDials(t, got[:4], [][2]time.Duration{
			{0, 1},
			{time.Second, 1500 * time.Millisecond},
			{6 * time.Second, 7500 * time.Millisecond},
			{21 * time.Second, 25500 * time.Millisecond},
		})
		for i := 4; i < len(got); i++ {
			if gap := got[i] - got[i-1]; gap < DefaultRetryExplicit || gap >= DefaultRetryExplicit*6/5 {
				t.Fatalf("explicit retry %d after %v: %v", i, gap, got)
			}
		}
		s.LeavePeer(remote)
		n := len(tr.times())
		time.Sleep(time.Hour)
		synctest.Wait()
		if len(tr.times()) != n {
			t.Fatal("explicit peer still dialled after LeavePeer")
		}
	})
}
