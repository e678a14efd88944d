package swarm

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

func newKey(t testing.TB) ed25519.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func testTable(t testing.TB, lim limits) (*peerTable, ed25519.PublicKey) {
	self := newKey(t)
	return newPeerTable(self, lim, Backoff{}, func() float64 { return 0 }), self
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestPeerTableRetryScheduleThenDrop(t *testing.T) {
	tb, _ := testTable(t, limits{maxPeers: 10, maxParallel: 3, maxInbound: 10})
	topic := TopicOf("x")
	p := newKey(t)
	tb.found(p, topic, nil, nil, t0)
	now := t0
	var dialTimes []time.Duration
	for range 10 {
		dial, wake := tb.next(now)
		if len(dial) == 0 {
			if wake.IsZero() {
				break
			}
			now = wake
			continue
		}
		dialTimes = append(dialTimes, now.Sub(t0))
		tb.dialDone(p, false, false, now)
	}
	want := []time.Duration{0, time.Second, 6 * time.Second, 21 * time.Second}
	if len(dialTimes) != len(want) {
		t.Fatalf("dials at %v, want %v", dialTimes, want)
	}
	for i := range want {
		if dialTimes[i] != want[i] {
			t.Fatalf("dials at %v, want %v", dialTimes, want)
		}
	}
	// Found again: dialled at once with a fresh schedule.
	tb.found(p, topic, nil, nil, now.Add(time.Hour))
	if dial, _ := tb.next(now.Add(time.Hour)); len(dial) != 1 || dial[0].retries != 0 {
		t.Fatalf("peer found again not dialled at once: %v", dial)
	}
}

func TestPeerTableExplicitRetriesForever(t *testing.T) {
	tb, _ := testTable(t, limits{maxPeers: 10, maxParallel: 3, maxInbound: 10})
	p := newKey(t)
	tb.addExplicit(p, t0)
	now := t0
	for i := range 8 {
		dial, wake := tb.next(now)
		if len(dial) != 1 {
			if wake.IsZero() {
				t.Fatalf("explicit peer dropped after %d dials", i)
			}
			now = wake
			dial, _ = tb.next(now)
		}
		if len(dial) != 1 {
			t.Fatalf("no dial at wake time %v", now)
		}
		tb.dialDone(p, false, false, now)
	}
	if d := tb.get(p).due.Sub(now); d != DefaultRetryExplicit {
		t.Fatalf("late retry after %v, want %v", d, DefaultRetryExplicit)
	}
	tb.removeExplicit(p)
	if dial, wake := tb.next(now.Add(time.Hour)); len(dial) != 0 || !wake.IsZero() {
		t.Fatal("peer still dialled after removeExplicit")
	}
}

func TestPeerTableLimits(t *testing.T) {
	tb, _ := testTable(t, limits{maxPeers: 4, maxParallel: 2, maxInbound: 1})
	topic := TopicOf("x")
	var peers []ed25519.PublicKey
	for range 6 {
		p := newKey(t)
		peers = append(peers, p)
		tb.found(p, topic, nil, nil, t0)
	}
	dial, _ := tb.next(t0)
	if len(dial) != 2 {
		t.Fatalf("maxParallel 2: dialled %d", len(dial))
	}
	for _, d := range dial {
		tb.dialDone(d.pub, true, false, t0)
		tb.connected(d.pub, false, t0)
	}
	dial, _ = tb.next(t0)
	if len(dial) != 2 {
		t.Fatalf("second batch: dialled %d", len(dial))
	}
	for _, d := range dial {
		tb.dialDone(d.pub, true, false, t0)
		tb.connected(d.pub, false, t0)
	}
	if dial, _ = tb.next(t0); len(dial) != 0 {
		t.Fatalf("maxPeers 4 reached but dialled %d more", len(dial))
	}
	if tb.pending(t0) {
		t.Fatal("peers blocked by maxPeers must not hold Flush up")
	}
	// Explicit peers pass maxPeers.
	e := newKey(t)
	tb.addExplicit(e, t0)
	if dial, _ = tb.next(t0); len(dial) != 1 || !dial[0].pub.Equal(e) {
		t.Fatalf("explicit peer not dialled at maxPeers: %v", dial)
	}
	// Inbound: refused at maxPeers, accepted for a key already connected.
	if err := tb.canAccept(newKey(t)); !errors.Is(err, ErrInboundLimit) {
		t.Fatalf("inbound at maxPeers: %v", err)
	}
	if err := tb.canAccept(dial[0].pub); !errors.Is(err, ErrInboundLimit) {
		t.Fatalf("inbound from a peer being dialled at maxPeers: %v", err)
	}
	if err := tb.canAccept(peers[0]); err != nil && tb.get(peers[0]).connected {
		t.Fatalf("replacement of a connected peer refused: %v", err)
	}
}

func TestPeerTableInboundLimit(t *testing.T) {
	tb, self := testTable(t, limits{maxPeers: 10, maxParallel: 3, maxInbound: 2})
	a, b, c := newKey(t), newKey(t), newKey(t)
	for _, p := range []ed25519.PublicKey{a, b} {
		if err := tb.canAccept(p); err != nil {
			t.Fatal(err)
		}
		tb.connected(p, true, t0)
	}
	if err := tb.canAccept(c); !errors.Is(err, ErrInboundLimit) {
		t.Fatalf("third inbound: %v", err)
	}
	tb.disconnected(a, t0.Add(time.Second), true)
	if err := tb.canAccept(c); err != nil {
		t.Fatalf("inbound after one left: %v", err)
	}
	if err := tb.canAccept(self); !errors.Is(err, ErrSelf) {
		t.Fatalf("own key: %v", err)
	}
	tb.ban(c)
	if err := tb.canAccept(c); !errors.Is(err, ErrBanned) {
		t.Fatalf("banned: %v", err)
	}
}

func TestPeerTableDisconnectRetry(t *testing.T) {
	tb, _ := testTable(t, limits{maxPeers: 10, maxParallel: 3, maxInbound: 10})
	topic := TopicOf("x")
	p := newKey(t)
	tb.found(p, topic, nil, nil, t0)
	tb.next(t0)
	tb.dialDone(p, true, false, t0)
	tb.connected(p, false, t0)
	// Long-lived connection drops: retried after the short delay.
	now := t0.Add(time.Minute)
	tb.disconnected(p, now, true)
	if d := tb.get(p).due.Sub(now); d != time.Second {
		t.Fatalf("retry after a long connection in %v, want 1s", d)
	}
	// Connected again, and dropped at once: backs off further.
	tb.next(now.Add(time.Second))
	tb.dialDone(p, true, false, now)
	tb.connected(p, false, now.Add(time.Second))
	tb.disconnected(p, now.Add(2*time.Second), true)
	if d := tb.get(p).due.Sub(now.Add(2 * time.Second)); d != 5*time.Second {
		t.Fatalf("retry after a short connection in %v, want 5s", d)
	}
	// Leaving the topic forgets the queued peer.
	tb.leaveTopic(topic)
	if len(tb.peers) != 0 {
		t.Fatalf("peer kept after leaving its only topic")
	}
}

func TestPeerTableBan(t *testing.T) {
	tb, _ := testTable(t, limits{maxPeers: 10, maxParallel: 3, maxInbound: 10})
	topic := TopicOf("x")
	p := newKey(t)
	tb.ban(p)
	tb.found(p, topic, nil, nil, t0)
	if dial, _ := tb.next(t0); len(dial) != 0 {
		t.Fatal("banned peer dialled")
	}
	tb.unban(p, t0)
	if dial, _ := tb.next(t0); len(dial) != 1 {
		t.Fatal("unbanned peer of a joined topic not dialled")
	}
}

func TestPeerTableSimultaneousWaitsForIncoming(t *testing.T) {
	tb, _ := testTable(t, limits{maxPeers: 10, maxParallel: 3, maxInbound: 10})
	p := newKey(t)
	tb.found(p, TopicOf("x"), nil, nil, t0)
	tb.next(t0)
	tb.dialLost(p, t0)
	if dial, wake := tb.next(t0.Add(time.Second)); len(dial) != 0 || wake != t0.Add(SimultaneousWait) {
		t.Fatalf("redialled after a lost tie-break: %v, wake %v", dial, wake)
	}
	tb.connected(p, true, t0.Add(2*time.Second))
	if dial, wake := tb.next(t0.Add(time.Hour)); len(dial) != 0 || !wake.IsZero() {
		t.Fatal("incoming connection did not clear the retry")
	}
	if tb.get(p).retries != 0 {
		t.Fatal("a lost tie-break counted as a failure")
	}
}

func TestPeerTableReservationsHoldInboundSlots(t *testing.T) {
	tb, _ := testTable(t, limits{maxPeers: 10, maxParallel: 3, maxInbound: 2})
	a, b, c := newKey(t), newKey(t), newKey(t)
	reserve := func(pub ed25519.PublicKey, now time.Time) error {
		_, err := tb.reserve(pub, dialHello{}, false, now)
		return err
	}
	if err := reserve(a, t0); err != nil {
		t.Fatal(err)
	}
	if err := reserve(b, t0); err != nil {
		t.Fatal(err)
	}
	// Two handshakes in flight fill the limit before either connected.
	if err := reserve(c, t0); !errors.Is(err, ErrInboundLimit) {
		t.Fatalf("third handshake: %v", err)
	}
	// A reserved peer still passes the check when its connection opens.
	if err := tb.canAccept(a); err != nil {
		t.Fatalf("reserved peer refused at connect: %v", err)
	}
	tb.connected(a, true, t0)
	if err := reserve(c, t0); !errors.Is(err, ErrInboundLimit) {
		t.Fatalf("after one connected, one reserved: %v", err)
	}
	// A handshake that never completes gives its slot back after the TTL.
	if err := reserve(c, t0.Add(reservationTTL)); err != nil {
		t.Fatalf("expired reservation still held: %v", err)
	}
	tb.release(c)
	if len(tb.reserved) != 0 {
		t.Fatalf("reservations left: %d", len(tb.reserved))
	}
}
