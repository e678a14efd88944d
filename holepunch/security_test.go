package holepunch_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/secure"
)

// tapLink wraps a Link and lets a test see and rewrite signaling, the way a
// malicious relay could.
type tapLink struct {
	holepunch.Link
	mu      sync.Mutex
	msg1s   [][]byte
	rewrite func(msg1 []byte) (out1 []byte, answer func(ans []byte) []byte)
}

func (l *tapLink) Signal(ctx context.Context, relay netip.AddrPort, pub, msg1 []byte) ([]byte, error) {
	l.mu.Lock()
	l.msg1s = append(l.msg1s, append([]byte(nil), msg1...))
	rw := l.rewrite
	l.mu.Unlock()
	fix := func(b []byte) []byte { return b }
	if rw != nil {
		msg1, fix = rw(msg1)
	}
	ans, err := l.Link.Signal(ctx, relay, pub, msg1)
	if err != nil {
		return nil, err
	}
	return fix(ans), nil
}

func flip(b []byte, i int) []byte {
	out := append([]byte(nil), b...)
	out[i%len(out)] ^= 0x40
	return out
}

// tapped starts a client whose signaling goes through a tapLink.
func tapped(t *testing.T, p *peer) *tapLink {
	return &tapLink{Link: p.link}
}

func dialTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestRelayCannotTamper: a relay that rewrites message 1 or message 2 makes
// the dial fail; it never yields a connection to anyone but the key dialled.
func TestRelayCannotTamper(t *testing.T) {
	n := startNet(t, 6)
	server := addPeer(t, n, nil)
	server.listen(t)
	var tap *tapLink
	client := addPeer(t, n, func(c *holepunch.EndpointConfig) {
		tap = &tapLink{Link: c.Link}
		c.Link = tap
	})

	cases := []struct {
		name string
		rw   func([]byte) ([]byte, func([]byte) []byte)
	}{
		{"rewrite-msg1", func(m []byte) ([]byte, func([]byte) []byte) {
			return flip(m, len(m)-20), func(a []byte) []byte { return a }
		}},
		{"rewrite-msg2", func(m []byte) ([]byte, func([]byte) []byte) {
			return m, func(a []byte) []byte { return flip(a, len(a)-10) }
		}},
		{"forge-msg2", func(m []byte) ([]byte, func([]byte) []byte) {
			// The relay answers itself: it cannot read message 1 (sealed to
			// the server's key), so the best it can do is a message 2 of its
			// own making, here from a key pair it holds.
			_, priv, _ := ed25519.GenerateKey(nil)
			return m, func([]byte) []byte {
				init, _ := secure.NewInitiator(priv, server.pub, nil)
				fake, _ := init.WriteMsg1(time.Now(), nil)
				return fake[:len(fake)-32]
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tap.mu.Lock()
			tap.rewrite = c.rw
			tap.mu.Unlock()
			_, err := client.ep.Connect(dialTimeout(t), server.pub, nil)
			if err == nil {
				t.Fatal("connected through a tampering relay")
			}
			if !errors.Is(err, holepunch.ErrHandshake) && !errors.Is(err, holepunch.ErrSignal) {
				t.Fatalf("err = %v, want ErrHandshake or ErrSignal", err)
			}
		})
	}
	if st := server.ep.Stats(); st.Accepted != 0 || st.BadHandshakes == 0 {
		t.Fatalf("server stats %+v: want no accepted and the rewritten message 1 counted", st)
	}
	// The same relay path still works once it stops tampering.
	tap.mu.Lock()
	tap.rewrite = nil
	tap.mu.Unlock()
	c, err := client.ep.Connect(dialTimeout(t), server.pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestWrongKey: dialling a key nobody holds fails, and so does dialling a
// key through the relays of another.
func TestWrongKey(t *testing.T) {
	n := startNet(t, 6)
	server := addPeer(t, n, nil)
	server.listen(t)
	client := addPeer(t, n, nil)
	stranger, _, _ := ed25519.GenerateKey(nil)

	if _, err := client.ep.Connect(dialTimeout(t), stranger, nil); !errors.Is(err, holepunch.ErrNoRelays) {
		t.Fatalf("unknown key: err = %v, want ErrNoRelays", err)
	}
	relays, err := server.link.FindRelays(dialTimeout(t), server.pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.ep.Connect(dialTimeout(t), stranger, relays); !errors.Is(err, holepunch.ErrSignal) {
		t.Fatalf("other key's relays: err = %v, want ErrSignal", err)
	}
	if st := server.ep.Stats(); st.Accepted != 0 {
		t.Fatalf("server accepted %d connections for a key it does not hold", st.Accepted)
	}
}

// TestReplayedHandshake: message 1 captured from a successful dial and sent
// again never opens a second session.
func TestReplayedHandshake(t *testing.T) {
	n := startNet(t, 6)
	server := addPeer(t, n, nil)
	server.listen(t)
	var tap *tapLink
	client := addPeer(t, n, func(c *holepunch.EndpointConfig) {
		tap = &tapLink{Link: c.Link}
		c.Link = tap
	})
	c, err := client.ep.Connect(dialTimeout(t), server.pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := server.accept(t)
	defer s.Close()

	relays, _ := server.link.FindRelays(dialTimeout(t), server.pub)
	tap.mu.Lock()
	msg1 := tap.msg1s[0]
	tap.mu.Unlock()
	attacker := addPeer(t, n, nil)
	for range 3 {
		// The answer, if any, is message 2 of the original handshake,
		// useless without the client's ephemeral key.
		_, _ = attacker.link.Signal(dialTimeout(t), relays[0], server.pub, msg1)
	}
	select {
	case extra := <-server.in:
		extra.Close()
		t.Fatal("replayed message 1 opened a second connection")
	case <-time.After(300 * time.Millisecond):
	}
	if st := server.ep.Stats(); st.Accepted != 1 {
		t.Fatalf("accepted %d, want 1", st.Accepted)
	}
}

// TestGarbageSignaling: random payloads and well-formed handshakes with an
// unknown payload version get no answer, are counted, and break nothing.
func TestGarbageSignaling(t *testing.T) {
	n := startNet(t, 6)
	server := addPeer(t, n, nil)
	relays := func() []netip.AddrPort {
		r, err := server.ep.Listen(dialTimeout(t))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}()
	attacker := addPeer(t, n, nil)
	for i := range 20 {
		junk := make([]byte, 1+i*37)
		_, _ = rand.Read(junk)
		if ans, err := attacker.link.Signal(dialTimeout(t), relays[0], server.pub, junk); err == nil && len(ans) > 0 {
			t.Fatalf("server answered %d garbage bytes", len(junk))
		}
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	init, _ := secure.NewInitiator(priv, server.pub, []byte("swarmdb/holepunch/1"))
	msg1, _ := init.WriteMsg1(time.Now(), []byte{99, 0, 0, 0, 0}) // payload version 99
	if ans, err := attacker.link.Signal(dialTimeout(t), relays[0], server.pub, msg1); err == nil && len(ans) > 0 {
		t.Fatal("server answered an unknown payload version")
	}
	if st := server.ep.Stats(); st.BadHandshakes < 21 {
		t.Fatalf("bad handshakes counted %d, want >= 21", st.BadHandshakes)
	}
	// Still serving.
	client := addPeer(t, n, nil)
	c, err := client.ep.Connect(dialTimeout(t), server.pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestHandshakeFlood: many valid handshakes from one source, from keys the
// server never saw, hold at most MaxHandshakesPerIP slots; an existing
// connection survives and a legitimate peer from elsewhere still connects.
func TestHandshakeFlood(t *testing.T) {
	n := startNet(t, 6)
	const perIP = 4
	server := addPeer(t, n, func(c *holepunch.EndpointConfig) { c.MaxHandshakesPerIP = perIP })
	relays, err := server.ep.Listen(dialTimeout(t))
	if err != nil {
		t.Fatal(err)
	}
	old := addPeer(t, n, nil)
	oc, err := old.ep.Connect(dialTimeout(t), server.pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	os := server.accept(t)
	defer os.Close()

	// The flood: message 1s with fresh keys whose ICE never answers, so each
	// accepted one holds a slot until its ICE times out.
	flooder := addPeer(t, n, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	answered := 0
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, priv, _ := ed25519.GenerateKey(nil)
			init, _ := secure.NewInitiator(priv, server.pub, []byte("swarmdb/holepunch/1"))
			payload := floodPayload()
			msg1, _ := init.WriteMsg1(time.Now(), payload)
			if ans, err := flooder.link.Signal(dialTimeout(t), relays[0], server.pub, msg1); err == nil && len(ans) > 0 {
				mu.Lock()
				answered++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	st := server.ep.Stats()
	t.Logf("flood of 40 from one source: %d answered, %d refused busy, %d in progress", answered, st.Busy, st.HandshakesInProgress)
	if st.HandshakesInProgress > perIP || answered > perIP {
		t.Fatalf("%d handshakes in progress and %d answered from one source, limit %d", st.HandshakesInProgress, answered, perIP)
	}
	if st.Busy == 0 {
		t.Fatal("flood never hit the per-source limit")
	}
	// The old connection still carries data, and a new peer gets in.
	echo(t, oc, os, []byte("still here"))
	fresh := addPeer(t, n, nil)
	fc, err := fresh.ep.Connect(dialTimeout(t), server.pub, nil)
	if err != nil {
		t.Fatalf("legitimate peer during flood: %v", err)
	}
	fc.Close()
}

// floodPayload is a well-formed signaling payload (see signal.go) whose
// only candidate never answers, so the server's ICE session for it runs
// until it times out.
func floodPayload() []byte {
	b := []byte{1, 0, 0, 0, 0}
	b = append(b, make([]byte, 16)...)
	b = append(b, 4)
	b = append(b, "ufrg"...)
	b = append(b, 22)
	b = append(b, "0123456789abcdefghijkl"...)
	b = append(b, 1, 1, 4, 127, 0, 0, 1, 0, 9) // host 127.0.0.1:9
	return b
}

// dupLink sends every message 1 twice at once, as a relay does when the
// client's retransmission reaches it while its forward of the first copy
// is still being retried, and hands the dialer the second copy's answer.
type dupLink struct {
	holepunch.Link
	failed *atomic.Int32 // copies that got no message 2
}

func (l dupLink) Signal(ctx context.Context, relay netip.AddrPort, pub, msg1 []byte) ([]byte, error) {
	var wg sync.WaitGroup
	var ans [2][]byte
	var errs [2]error
	for i := range 2 {
		wg.Go(func() { ans[i], errs[i] = l.Link.Signal(ctx, relay, pub, msg1) })
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		// The dialer would try its next relay: count it, or the test
		// could not tell.
		l.failed.Add(1)
		return nil, errors.Join(errs[0], errs[1])
	}
	if string(ans[0]) != string(ans[1]) {
		return nil, errors.New("the two copies of message 1 got different answers")
	}
	return ans[1], nil
}

// TestConcurrentRetransmission: two copies of one message 1 that reach the
// server at once both get its message 2. The copy that came second used
// to be taken for a replay and answered with nothing ("relay failed"),
// which failed TestLossyLinkNATLab when a lost forward made the relay's
// retry meet the client's retransmission.
func TestConcurrentRetransmission(t *testing.T) {
	n := startNet(t, 6)
	server := addPeer(t, n, nil)
	server.listen(t)
	var failed atomic.Int32
	client := addPeer(t, n, func(c *holepunch.EndpointConfig) { c.Link = dupLink{c.Link, &failed} })
	for i := range 5 {
		c, err := client.ep.Connect(dialTimeout(t), server.pub, nil)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		s := server.accept(t)
		c.Close()
		s.Close()
	}
	st := server.ep.Stats()
	t.Logf("server: accepted %d, answered from the cache %d, replays %d", st.Accepted, st.RetransmittedAnswered, st.Replays)
	if st.Accepted != 5 || failed.Load() != 0 {
		t.Fatalf("accepted %d, want 5; %d signals got no message 2", st.Accepted, failed.Load())
	}
}
