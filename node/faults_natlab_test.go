package node_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/db"
	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/node"
)

// faultRecovery bounds how long peers may take to be connected (and
// replicating) again after a fault: a dead session is noticed within
// secure.DefaultDeadTimeout (15 s), then the swarm re-punches.
const faultRecovery = 40 * time.Second

// peerLog records a node's peer events with their times.
type peerLog struct {
	mu     sync.Mutex
	events []peerEvent
}

type peerEvent struct {
	at   time.Time
	up   bool
	peer string
	err  error
}

func (l *peerLog) add(up bool, ev node.PeerEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, peerEvent{at: time.Now(), up: up, peer: hex.EncodeToString(ev.PublicKey)[:8], err: ev.Err})
}

// since returns the events after t.
func (l *peerLog) since(t time.Time) []peerEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []peerEvent
	for _, e := range l.events {
		if e.at.After(t) {
			out = append(out, e)
		}
	}
	return out
}

// labNode starts a node on host h of the lab. listen is the UDP address
// (zero: the host's address, port 0).
func labNode(t *testing.T, h *natlab.Host, boot []netip.AddrPort, topic, listen string, log *peerLog, tweak func(*node.Config)) *node.Node {
	t.Helper()
	if listen == "" {
		listen = h.IP().String() + ":0"
	}
	cfg := node.Config{
		Topic: topic, DataDir: t.TempDir(), Net: h.Net(), ListenAddr: listen, Bootstrap: boot, DisableLAN: true,
		OnPeerConnect:    func(ev node.PeerEvent) { log.add(true, ev) },
		OnPeerDisconnect: func(ev node.PeerEvent) { log.add(false, ev) },
	}
	if tweak != nil {
		tweak(&cfg)
	}
	if os.Getenv("SWARMDB_TEST_DEBUG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("host", h.Name())
	}
	nd, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := nd.Start(ctx); err != nil {
		t.Fatalf("%s: %v", h.Name(), err)
	}
	return nd
}

// arrivals records when each key of a prefix watcher arrived.
type arrivals struct {
	mu   sync.Mutex
	at   map[string]time.Time
	done chan struct{}
}

// watchArrivals collects w's events until ctx ends.
func watchArrivals(ctx context.Context, w *db.Watcher) *arrivals {
	a := &arrivals{at: map[string]time.Time{}, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for {
			ev, err := w.Next(ctx)
			if err != nil {
				return
			}
			a.mu.Lock()
			if _, ok := a.at[ev.Record.Key]; !ok {
				a.at[ev.Record.Key] = time.Now()
			}
			a.mu.Unlock()
		}
	}()
	return a
}

func (a *arrivals) get(key string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.at[key]
	return t, ok
}

// ackedWrite is a put that returned success.
type ackedWrite struct {
	key string
	at  time.Time // when Put returned
}

// writeUntil puts "<prefix>/<n>" every interval until stop is closed and
// returns the acknowledged writes. next is the index of the next write. A failed put is not an error here (it
// was not acknowledged); it is counted.
func writeUntil(nd *node.Node, prefix string, interval time.Duration, next *atomic.Int64, stop <-chan struct{}) (acked []ackedWrite, failed int) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return acked, failed
		case <-tick.C:
		}
		i := next.Add(1) - 1
		key := fmt.Sprintf("%s/%05d", prefix, i)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := nd.Put(ctx, key, []byte(fmt.Sprint(i)))
		cancel()
		if err != nil {
			failed++
			continue
		}
		acked = append(acked, ackedWrite{key: key, at: time.Now()})
	}
}

// waitAllStored waits until nd's own store holds every acked key.
func waitAllStored(t *testing.T, nd *node.Node, prefix string, acked []ackedWrite, within time.Duration) {
	t.Helper()
	missing := 0
	stored := testutil.Poll(within, 200*time.Millisecond, func() bool { // each check reads every key
		keys, err := nd.Query(prefix)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, k := range keys {
			have[k] = true
		}
		missing = 0
		for _, w := range acked {
			if !have[w.key] {
				missing++
			}
		}
		return missing == 0
	})
	if !stored {
		t.Fatalf("%d of %d acknowledged writes never reached the other node", missing, len(acked))
	}
}

// recovery returns how long after fault the first write acknowledged after
// the fault arrived at the subscriber, and the longest gap between two
// consecutive arrivals of acknowledged writes.
func recovery(acked []ackedWrite, arr *arrivals, fault time.Time) (first, gap time.Duration, ok bool) {
	var prev time.Time
	for _, w := range acked {
		at, got := arr.get(w.key)
		if !got {
			continue
		}
		if !prev.IsZero() && at.Sub(prev) > gap {
			gap = at.Sub(prev)
		}
		if at.After(prev) {
			prev = at
		}
		if !ok && w.at.After(fault) {
			first, ok = at.Sub(fault), true
		}
	}
	return first, gap, ok
}

// TestConntrackFlushNATLab is issue 9's NAT-mapping-loss fault: two nodes
// behind port-restricted NATs replicate a continuous stream of puts; the
// writer's router loses its whole conntrack table mid-stream (a reboot,
// a table overflow). The nodes must be connected and replicating again
// within faultRecovery, and every acknowledged put must reach the other
// node. Root only.
//
// Behind port-preserving NATs the new mapping is the old one, so the
// session itself may survive; the symmetric case gives the writer a new
// random port, which the peer's session must survive or replace.
func TestConntrackFlushNATLab(t *testing.T) {
	cases := []struct {
		name           string
		writer, reader natlab.NATType
		flushBoth      bool
		bound          time.Duration
	}{
		{"portrestricted-writer-router", natlab.PortRestricted, natlab.PortRestricted, false, faultRecovery},
		{"portrestricted-both-routers", natlab.PortRestricted, natlab.PortRestricted, true, faultRecovery},
		// The writer's mapping changes: the old path carries nothing any
		// more. The first end to find its connection silent despite a ping
		// (swarm.DefaultStaleAfter, 3 s) dials again, and the new handshake
		// replaces the connection at both ends; anti-entropy on connect
		// brings what was written meanwhile.
		{"symmetric-writer-to-fullcone", natlab.Symmetric, natlab.FullCone, false, symmetricFlushRecovery},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { testConntrackFlush(t, c.writer, c.reader, c.flushBoth, c.bound) })
	}
}

// symmetricFlushRecovery bounds recovery when the flush changes the
// writer's mapping (issue 19 asks for 5 s): StaleAfter (3 s) and a
// member tick, then one handshake in the lab (about 150 ms). It was two
// dead-peer timeouts (2 × 15 s) before the membership's probes. On a
// loaded machine the redial takes longer: the bound is scaled by the load
// (testutil.Scaled; .ci/run under two busy loops once took over 5 s).
const symmetricFlushRecovery = 5 * time.Second

func testConntrackFlush(t *testing.T, writer, reader natlab.NATType, flushBoth bool, bound time.Duration) {
	lab := natlab.New(t)
	boot := testnet.LabDHT(t, lab, 3, nil)
	ra := lab.AddRouter(natlab.RouterConfig{Type: writer})
	rb := lab.AddRouter(natlab.RouterConfig{Type: reader})
	var la, lb peerLog
	a := labNode(t, ra.AddHost("a"), boot, "fault-flush", "", &la, nil)
	defer a.Close()
	b := labNode(t, rb.AddHost("b"), boot, "fault-flush", "", &lb, nil)
	defer b.Close()
	waitPeers(t, a, 1)
	waitPeers(t, b, 1)
	if bound == symmetricFlushRecovery {
		bound = testutil.Scaled(bound)
		t.Logf("recovery bound %v (load factor %.1f)", bound.Round(time.Millisecond), testutil.LoadFactor())
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := b.SubscribePrefix("flush/")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	arr := watchArrivals(ctx, w)

	stop := make(chan struct{})
	var next atomic.Int64
	type result struct {
		acked  []ackedWrite
		failed int
	}
	res := make(chan result, 1)
	go func() {
		acked, failed := writeUntil(a, "flush", 50*time.Millisecond, &next, stop)
		res <- result{acked, failed}
	}()
	// Let the stream run, then take the mappings away under it.
	waitArrived(t, arr, "flush/00010", 20*time.Second)
	fault := time.Now()
	firstAfter := next.Load() // every write from this index on starts after the flush
	if err := ra.FlushConntrack(); err != nil {
		t.Fatal(err)
	}
	if flushBoth {
		if err := rb.FlushConntrack(); err != nil {
			t.Fatal(err)
		}
	}
	// Keep writing until a write made after the flush has arrived, plus
	// two seconds, so acknowledged writes span the outage and beyond.
	if !testutil.Poll(bound, 50*time.Millisecond, func() bool { return arrivedFrom(arr, "flush", firstAfter) }) {
		close(stop)
		r := <-res
		sa, sb := a.Stats().Swarm, b.Stats().Swarm
		t.Fatalf("no write made after the flush replicated within %v (%d acked, %d failed); events a %v b %v; "+
			"dials a %d (failed %v, refused %v) b %d (failed %v, refused %v); membership a %+v b %+v",
			bound, len(r.acked), r.failed, summarise(la.since(fault), fault), summarise(lb.since(fault), fault),
			sa.Attempts, sa.FailuresByReason, sa.InboundRefused, sb.Attempts, sb.FailuresByReason, sb.InboundRefused,
			sa.Membership, sb.Membership)
	}
	time.Sleep(2 * time.Second) // more writes after recovery, not synchronisation
	close(stop)
	r := <-res
	waitAllStored(t, b, "flush/", r.acked, bound)
	first, gap, ok := recovery(r.acked, arr, fault)
	if !ok {
		t.Fatal("no write acknowledged after the flush arrived")
	}
	if first > bound || gap > bound {
		t.Errorf("first write after the flush arrived %v later, longest gap %v; bound %v", first, gap, bound)
	}
	// A connection that died must have been replaced within the bound.
	for name, l := range map[string]*peerLog{"writer": &la, "reader": &lb} {
		evs := l.since(fault)
		if len(evs) > 0 && (!evs[len(evs)-1].up || evs[len(evs)-1].at.Sub(fault) > bound) {
			t.Errorf("%s not reconnected within %v: %s", name, bound, summarise(evs, fault))
		}
	}
	if a.Stats().Bridge.Peers < 1 || b.Stats().Bridge.Peers < 1 {
		t.Errorf("peers after recovery: a %d b %d", a.Stats().Bridge.Peers, b.Stats().Bridge.Peers)
	}
	t.Logf("%d puts acknowledged (%d failed), all on the other node; first post-flush write arrived %v after the flush; outage (longest arrival gap) %v",
		len(r.acked), r.failed, first.Round(time.Millisecond), gap.Round(time.Millisecond))
	t.Logf("peer events since the flush: a %v, b %v", summarise(la.since(fault), fault), summarise(lb.since(fault), fault))
}

// waitArrived waits until key has arrived.
func waitArrived(t *testing.T, arr *arrivals, key string, within time.Duration) {
	t.Helper()
	if !testutil.Poll(within, 0, func() bool { _, ok := arr.get(key); return ok }) {
		t.Fatalf("%s did not arrive within %v", key, within)
	}
}

// arrivedFrom reports whether a key "<prefix>/<i>" with i >= first has
// arrived.
func arrivedFrom(arr *arrivals, prefix string, first int64) bool {
	arr.mu.Lock()
	defer arr.mu.Unlock()
	from := fmt.Sprintf("%s/%05d", prefix, first)
	for k := range arr.at {
		if k >= from {
			return true
		}
	}
	return false
}

// summarise renders peer events relative to t0.
func summarise(evs []peerEvent, t0 time.Time) string {
	if len(evs) == 0 {
		return "none (the connection survived)"
	}
	s := ""
	for _, e := range evs {
		verb := "down"
		if e.up {
			verb = "up"
		}
		s += fmt.Sprintf("[%s %s +%v", e.peer, verb, e.at.Sub(t0).Round(time.Millisecond))
		if e.err != nil {
			s += " " + e.err.Error()
		}
		s += "] "
	}
	return s
}

// TestMoveNATLab is issue 9's local-address-change fault: a node behind
// router R1, bound to 0.0.0.0 so its socket survives, is connected to a
// peer behind another port-restricted NAT; its host moves to router R2.
// The node's monitor (every 200 ms) sees the address change, re-measures,
// and the swarm re-announces and drops the silent connection; the peers
// must be connected again within faultRecovery, and a put made after the
// move must replicate. Root only.
func TestMoveNATLab(t *testing.T) {
	lab := natlab.New(t)
	boot := testnet.LabDHT(t, lab, 3, nil)
	r1 := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted})
	r2 := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted})
	rp := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted})
	var lm, lp peerLog
	mover := r1.AddHost("m")
	m := labNode(t, mover, boot, "fault-move", "0.0.0.0:0", &lm, func(c *node.Config) { c.MonitorInterval = 200 * time.Millisecond })
	defer m.Close()
	p := labNode(t, rp.AddHost("p"), boot, "fault-move", "", &lp, nil)
	defer p.Close()
	waitPeers(t, m, 1)
	waitPeers(t, p, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.Put(ctx, "move/before", []byte(`1`)); err != nil {
		t.Fatal(err)
	}
	waitValue(t, p, "move/before", []byte(`1`))
	before := m.Stats().Swarm.NetworkChanges

	moved := time.Now()
	nh := mover.MoveTo(r2)
	t.Logf("moved %s from %s (%s) to %s (%s)", mover.Name(), mover.IP(), r1.PublicIP(), nh.IP(), r2.PublicIP())

	// Both sides must see a new connection after the move.
	var mUp, pUp time.Duration
	reconnected := testutil.Poll(time.Until(moved.Add(faultRecovery)), 100*time.Millisecond, func() bool {
		mUp, pUp = firstUp(lm.since(moved), moved), firstUp(lp.since(moved), moved)
		// The bound is on when the connections came up, not on when
		// this check saw them.
		return mUp != 0 && pUp != 0 && max(mUp, pUp) <= faultRecovery
	})
	if !reconnected {
		t.Fatalf("not reconnected within %v: mover events %s, peer events %s, network changes %d",
			faultRecovery, summarise(lm.since(moved), moved), summarise(lp.since(moved), moved), m.Stats().Swarm.NetworkChanges-before)
	}
	changes := m.Stats().Swarm.NetworkChanges - before
	if changes == 0 {
		t.Error("the mover's swarm was never told the network changed")
	}
	put := time.Now()
	if _, err := m.Put(ctx, "move/after", []byte(`2`)); err != nil {
		t.Fatal(err)
	}
	// Query reads p's own store: the put must have been pushed to it.
	waitAllStored(t, p, "move/after", []ackedWrite{{key: "move/after"}}, faultRecovery)
	t.Logf("reconnected %v (mover) / %v (peer) after the move; %d network changes; a put after the move replicated in %v",
		mUp.Round(time.Millisecond), pUp.Round(time.Millisecond), changes, time.Since(put).Round(time.Millisecond))
	t.Logf("mover events %s; peer events %s", summarise(lm.since(moved), moved), summarise(lp.since(moved), moved))
}

// firstUp returns how long after t0 the first connection came up (0: none).
func firstUp(evs []peerEvent, t0 time.Time) time.Duration {
	for _, e := range evs {
		if e.up {
			return e.at.Sub(t0)
		}
	}
	return 0
}
