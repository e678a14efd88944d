package swarm

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// startNet starts a loopback DHT of n persistent nodes.
func startNet(t testing.TB, n int) *testnet.Network {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nw, err := testnet.Start(ctx, testnet.Config{Persistent: n, Tweak: func(_ int, c *dht.Config) {
		// A LOOKUP reply to a verified source is not trimmed to
		// dht.MaxPacketSize: with about 18 records (3 relays each) it
		// exceeds it and the requester drops it as malformed. Until the dht
		// caps it, keep replies small; the records are shuffled per reply,
		// so a lookup over several nodes still sees every peer.
		c.LookupLimit = 12
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Close)
	return nw
}

// nextIP hands out loopback addresses 127.200.x.y, apart from testnet's
// 127.1.x.y range, so every swarm has its own IP (DHT rate limits and
// tokens are per IP).
var nextIP atomic.Uint32

func loopbackListen() string {
	v := nextIP.Add(1)
	return fmt.Sprintf("127.200.%d.%d:0", v/250%250, 1+v%250)
}

// recorder collects a swarm's connection events.
type recorder struct {
	mu      sync.Mutex
	opened  []PeerInfo
	closed  []closedEvent
	open    int // connections open now, from the events
	peak    int // the most open at once
	changed chan struct{}
}

type closedEvent struct {
	info PeerInfo
	err  error
	at   time.Time
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) onConn(c *Conn, info PeerInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opened = append(r.opened, info)
	r.open++
	r.peak = max(r.peak, r.open)
	r.notifyLocked()
}

func (r *recorder) onClose(c *Conn, info PeerInfo, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = append(r.closed, closedEvent{info, err, time.Now()})
	r.open--
	r.notifyLocked()
}

// wait blocks until cond (called under the lock) holds or the deadline.
func (r *recorder) wait(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok, ch := cond(), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

// testSwarm is a swarm with its recorder.
type testSwarm struct {
	*Swarm
	rec *recorder
	key ed25519.PrivateKey
}

// peakConns is the most connections the swarm's events ever showed open
// at once.
func (s *testSwarm) peakConns() int {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	return s.rec.peak
}

// swarmConfig is the config of a swarm on the loopback testnet with fast
// timers for tests.
func swarmConfig(nw *testnet.Network, key ed25519.PrivateKey, rec *recorder) Config {
	return Config{
		Key:          key,
		ListenAddr:   loopbackListen(),
		Bootstrap:    nw.Bootstrap,
		DHT:          dht.Config{Mode: dht.ModeEphemeral},
		KeepLoopback: true,
		DisableLAN:   true,
		OnConnection: rec.onConn,
		OnDisconnect: rec.onClose,
		MaxPeers:     64,
		MaxParallel:  8,
		Logger:       testLogger(key.Public().(ed25519.PublicKey)),
	}
}

// testLogger logs to stderr at debug level when SWARM_TEST_LOG is set,
// each line naming the swarm (self) whose key is pub.
func testLogger(pub ed25519.PublicKey) *slog.Logger {
	if os.Getenv("SWARM_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("self", shortKey(pub))
}

// startSwarm starts a swarm with cfg (tweaked by tweak) and closes it at
// cleanup.
func startSwarm(t testing.TB, nw *testnet.Network, key ed25519.PrivateKey, tweak func(*Config)) *testSwarm {
	t.Helper()
	if key == nil {
		_, key, _ = ed25519.GenerateKey(nil)
	}
	rec := newRecorder()
	cfg := swarmConfig(nw, key, rec)
	if tweak != nil {
		tweak(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &testSwarm{Swarm: s, rec: rec, key: key}
}

// waitConns waits until s has an open connection to every key in peers.
func waitConns(t testing.TB, s *testSwarm, d time.Duration, peers ...ed25519.PublicKey) {
	t.Helper()
	s.rec.wait(t, d, fmt.Sprintf("%x connected to %d peers", s.PublicKey()[:4], len(peers)), func() bool {
		for _, p := range peers {
			// The connection, and its OnConnection event (which comes after, from the
			// event queue): tests read the events next.
			if s.Conn(p) == nil || !s.rec.openedLocked(p) {
				return false
			}
		}
		return true
	})
}

// openedLocked reports whether an OnConnection event for peer came.
func (r *recorder) openedLocked(peer ed25519.PublicKey) bool {
	return slices.ContainsFunc(r.opened, func(info PeerInfo) bool { return info.PublicKey.Equal(peer) })
}

// pingPairEventually is pingPair for a pair that may still be settling: if
// the two ends are not one live session yet, it waits for the swarms to
// replace the connection (a half-open one dies after the dead timeout) and
// tries again. It reports whether the first try failed.
func pingPairEventually(t *testing.T, a, b *testSwarm, d time.Duration) (healed bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := tryPing(a, b, 3*time.Second)
		if err == nil {
			return healed
		}
		healed = true
		if time.Now().After(deadline) {
			t.Fatalf("pair %x-%x never became one live session: %v", a.PublicKey()[:4], b.PublicKey()[:4], err)
		}
		a.rec.mu.Lock()
		ch := a.rec.changed
		a.rec.mu.Unlock()
		tm := time.NewTimer(time.Second)
		select {
		case <-ch:
		case <-tm.C:
		}
		tm.Stop()
	}
}

// tryPing writes a message on a's connection to b and reads it on b's.
func tryPing(a, b *testSwarm, wait time.Duration) error {
	ca, cb := a.Conn(b.PublicKey()), b.Conn(a.PublicKey())
	if ca == nil || cb == nil {
		return fmt.Errorf("missing connection (%v, %v)", ca != nil, cb != nil)
	}
	if ca.Initiator == cb.Initiator {
		return fmt.Errorf("both ends have initiator=%v", ca.Initiator)
	}
	msg := fmt.Appendf(nil, "ping %x", a.PublicKey()[:8])
	if _, err := ca.Stream0().Write(msg); err != nil {
		return err
	}
	cb.Stream0().SetReadDeadline(time.Now().Add(wait))
	got, err := cb.Stream0().ReadMessage(nil)
	cb.Stream0().SetReadDeadline(time.Time{})
	if err != nil {
		return err
	}
	if string(got) != string(msg) {
		return fmt.Errorf("read %q, want %q", got, msg)
	}
	return nil
}

// pingPair writes a message on a's connection to b and reads it on b's
// connection to a: both ends belong to one session.
func pingPair(t *testing.T, a, b *testSwarm) {
	t.Helper()
	ca, cb := a.Conn(b.PublicKey()), b.Conn(a.PublicKey())
	if ca == nil || cb == nil {
		t.Fatalf("pair %x-%x: missing connection (%v, %v)", a.PublicKey()[:4], b.PublicKey()[:4], ca != nil, cb != nil)
	}
	if ca.Initiator == cb.Initiator {
		t.Fatalf("pair %x-%x: both ends have initiator=%v: two different connections", a.PublicKey()[:4], b.PublicKey()[:4], ca.Initiator)
	}
	msg := fmt.Appendf(nil, "ping %x", a.PublicKey()[:8])
	if _, err := ca.Stream0().Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	cb.Stream0().SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := cb.Stream0().ReadMessage(nil)
	cb.Stream0().SetReadDeadline(time.Time{})
	if err != nil || string(got) != string(msg) {
		t.Fatalf("pair %x-%x: read %q, %v; want %q", a.PublicKey()[:4], b.PublicKey()[:4], got, err, msg)
	}
}

// newCrashNet returns the real network with a switch (Dead) that silences
// every socket it opened, as if the host lost power.
func newCrashNet(t *testing.T) *testutil.CrashNet {
	t.Helper()
	n, err := testutil.NewCrashNet()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitState blocks until cond holds, re-checking on every state change of
// the swarm (dial ended, connection opened or closed) and of its recorder.
func waitState(t *testing.T, s *testSwarm, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		s.rec.mu.Lock()
		rch := s.rec.changed
		s.rec.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-rch:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

// Benchmark spellings of the helpers.
func startNetB(b *testing.B, n int) *testnet.Network { return startNet(b, n) }
func startSwarmB(b *testing.B, nw *testnet.Network, tweak func(*Config)) *testSwarm {
	return startSwarm(b, nw, nil, tweak)
}
func waitConnsB(b *testing.B, s *testSwarm, d time.Duration, peers ...ed25519.PublicKey) {
	waitConns(b, s, d, peers...)
}

// waitFirstConn waits for s's first connection event.
func waitFirstConn(t testing.TB, s *testSwarm, d time.Duration) {
	t.Helper()
	s.rec.wait(t, d, "first connection", func() bool { return len(s.rec.opened) > 0 })
}
