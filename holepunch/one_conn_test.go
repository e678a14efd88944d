package holepunch_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/holepunch"
)

// The endpoint keeps one connection per remote key (Endpoint.Connect).
// These tests show the rule on the real path, loopback DHT and ICE.

// barrierLink holds a dial's first message 1 until every dial sharing the
// barrier has sent its own, so the dials meet in glare for sure: each side
// has registered its dial before the other's message 1 arrives.
type barrierLink struct {
	holepunch.Link
	once    sync.Once
	arrived *sync.WaitGroup
}

func (l *barrierLink) Signal(ctx context.Context, relay netip.AddrPort, pub, msg1 []byte) ([]byte, error) {
	l.once.Do(func() {
		l.arrived.Done()
		l.arrived.Wait()
	})
	return l.Link.Signal(ctx, relay, pub, msg1)
}

// TestGlareOneConnection: two peers dial each other at once. The larger
// key's dial makes the one connection; the other dial fails with
// ErrSimultaneous and its side gets the connection as an incoming one.
func TestGlareOneConnection(t *testing.T) {
	n := startNet(t, 6)
	var arrived sync.WaitGroup
	arrived.Add(2)
	barrier := func(c *holepunch.EndpointConfig) { c.Link = &barrierLink{Link: c.Link, arrived: &arrived} }
	a := addPeer(t, n, barrier)
	b := addPeer(t, n, barrier)
	a.listen(t)
	b.listen(t)
	large, small := a, b
	if bytes.Compare(b.pub, a.pub) > 0 {
		large, small = b, a
	}

	type result struct {
		c   *holepunch.Conn
		err error
	}
	var fromLarge, fromSmall result
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		fromLarge.c, fromLarge.err = large.ep.Connect(dialTimeout(t), small.pub, nil)
	}()
	go func() {
		defer wg.Done()
		fromSmall.c, fromSmall.err = small.ep.Connect(dialTimeout(t), large.pub, nil)
	}()
	wg.Wait()
	if fromSmall.c != nil {
		fromSmall.c.Close()
	}
	if fromLarge.err != nil {
		t.Fatalf("the larger key's dial: %v", fromLarge.err)
	}
	defer fromLarge.c.Close()
	if !errors.Is(fromSmall.err, holepunch.ErrSimultaneous) {
		t.Fatalf("the smaller key's dial: err = %v, want ErrSimultaneous", fromSmall.err)
	}
	in := small.accept(t)
	defer in.Close()
	if !in.RemotePublicKey().Equal(large.pub) || in.Initiator {
		t.Fatal("the smaller key's side did not get the larger key's dial as incoming")
	}
	echo(t, fromLarge.c, in, []byte("one connection"))
	select {
	case c := <-large.in:
		c.Close()
		t.Fatal("the larger key's side also accepted a connection")
	default:
	}
	for _, p := range []*peer{large, small} {
		if st := p.ep.Stats(); st.Live != 1 {
			t.Fatalf("%d live connections, want 1", st.Live)
		}
	}
}

// TestNewConnectionReplacesOld: a new connection to a key, dialled by
// either side, replaces the one that exists on both ends, even one that
// carried data both ways: the peer dialled again, so it lost that one.
func TestNewConnectionReplacesOld(t *testing.T) {
	n := startNet(t, 6)
	a := addPeer(t, n, nil)
	b := addPeer(t, n, nil)
	a.listen(t)
	b.listen(t)
	dial := func(from, to *peer) (out, in *holepunch.Conn) {
		t.Helper()
		c, err := from.ep.Connect(dialTimeout(t), to.pub, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		s := to.accept(t)
		t.Cleanup(func() { s.Close() })
		echo(t, c, s, []byte("carried data"))
		return c, s
	}
	closed := func(what string, conns ...*holepunch.Conn) {
		t.Helper()
		for _, c := range conns {
			select {
			case <-c.Done():
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: the replaced connection is still open", what)
			}
		}
	}
	c1, s1 := dial(a, b)
	c2, s2 := dial(a, b)
	closed("same direction", c1, s1)
	dial(b, a)
	closed("other direction", c2, s2)
	for _, p := range []*peer{a, b} {
		if st := p.ep.Stats(); st.Live != 1 {
			t.Fatalf("%d live connections, want 1", st.Live)
		}
	}
}

// TestEndedConnectionLeavesTable: a connection that ends, closed by either
// side, leaves both endpoints' tables (nothing waits on it in a goroutine:
// its session's context does).
func TestEndedConnectionLeavesTable(t *testing.T) {
	n := startNet(t, 6)
	a := addPeer(t, n, nil)
	b := addPeer(t, n, nil)
	b.listen(t)
	c, err := a.ep.Connect(dialTimeout(t), b.pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := b.accept(t)
	defer s.Close()
	echo(t, c, s, []byte("before the close"))
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range []*peer{a, b} {
		for p.ep.Stats().Live != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d live connections after the close, want 0", p.ep.Stats().Live)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
