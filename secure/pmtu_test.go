package secure

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	quic "github.com/apernet/quic-go"
)

// Path MTU discovery over the in-memory pipe, whose "path" drops every datagram larger
// than a limit: the session finds the largest packet that fits (within quic-go's
// 20-byte search tolerance), keeps DefaultMTU without the option, and keeps it when the
// DatagramConn could not carry the largest probe.
func TestPathMTUDiscovery(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pathLimit  int // largest sealed datagram the path carries; 0: any
		cfg        Config
		lo, hi     uint64 // PacketSize after the transfer
		wantProbes bool
	}{
		{"unlimited path", 0, Config{PathMTUDiscovery: true}, MaxMTU - 21, MaxMTU, true},
		{"1300-byte path", 1300, Config{PathMTUDiscovery: true}, 1300 - PacketOverhead - 21, 1300 - PacketOverhead, true},
		{"option off", 0, Config{}, DefaultMTU, DefaultMTU, false},
		{"no room for probes", 0, Config{PathMTUDiscovery: true, Datagram: DatagramConfig{MaxPayload: 1400}}, DefaultMTU, DefaultMTU, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var largest atomic.Int64
			opts := pipeOptions{tamper: func(_ int, b []byte) [][]byte {
				if tc.pathLimit > 0 && len(b) > tc.pathLimit {
					return nil
				}
				if int64(len(b)) > largest.Load() {
					largest.Store(int64(len(b)))
				}
				return [][]byte{b}
			}}
			p := newPipeSessions(t, opts, tc.cfg)
			transfer(t, p, 4<<20, nil)
			got := p.client.Stats().PacketSize
			if got < tc.lo || got > tc.hi {
				t.Errorf("packet size %d, want %d-%d", got, tc.lo, tc.hi)
			}
			if probed := largest.Load() > DefaultMTU+PacketOverhead; probed != tc.wantProbes {
				t.Errorf("largest datagram delivered: %d bytes; probes wanted: %v", largest.Load(), tc.wantProbes)
			}
		})
	}
}

// fakeProgress stands in for quic-go's connection in the back-pressure tests.
type fakeProgress struct {
	done atomic.Uint64
	ctx  context.Context
}

func (f *fakeProgress) ConnectionStats() quic.ConnectionStats {
	return quic.ConnectionStats{BytesReceived: f.done.Load()}
}
func (f *fakeProgress) Context() context.Context { return f.ctx }

// newBackPressure returns a sealedPacketConn over a pipe whose peer has queued a
// datagram, so every ReadFrom that gets past awaitQUIC returns at once.
func newBackPressure(t *testing.T) (*sealedPacketConn, *fakeProgress, context.CancelFunc) {
	t.Helper()
	pa, pb := newPipe(pipeOptions{})
	ik, rk := testKeys(t)
	a, b := NewDatagramConn(pa, ik, DatagramConfig{}), NewDatagramConn(pb, rk, DatagramConfig{})
	t.Cleanup(func() { a.Close(); b.Close() })
	for range 4 {
		if _, err := a.Write([]byte("datagram")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f := &fakeProgress{ctx: ctx}
	c := newSealedPacketConn(b)
	c.attach(f)
	return c, f, cancel
}

// readFromAsync runs c.ReadFrom in a goroutine and reports when it returned.
func readFromAsync(c *sealedPacketConn) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, _, err := c.ReadFrom(make([]byte, 2048))
		done <- err
	}()
	return done
}

// ReadFrom hands quic-go nothing while maxUnprocessed bytes wait in it, however long
// that takes as long as it makes progress, and goes on as soon as it catches up.
func TestBackPressureWaitsForQUIC(t *testing.T) {
	c, f, _ := newBackPressure(t)
	c.stuckAfter = time.Hour // this test is about waiting, not about giving up
	c.handed.Store(maxUnprocessed + 10_000)
	done := readFromAsync(c)
	for range 20 { // quic-go works, but not enough
		f.done.Add(100)
		select {
		case err := <-done:
			t.Fatalf("ReadFrom returned (%v) with %d bytes unprocessed", err, c.handed.Load()-f.done.Load())
		case <-time.After(2 * time.Millisecond):
		}
	}
	f.done.Store(10_000) // caught up to exactly maxUnprocessed
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrom still waiting after quic-go caught up")
	}
	if c.handed.Load() != maxUnprocessed+10_000+uint64(len("datagram")) {
		t.Fatalf("handed %d bytes, want the datagram counted", c.handed.Load())
	}
}

// Packets quic-go discards unseen are never counted as processed: with no progress
// for stuckAfter, ReadFrom takes quic-go's count as the truth instead of waiting forever.
func TestBackPressureGivesUpWhenStuck(t *testing.T) {
	c, f, _ := newBackPressure(t)
	c.stuckAfter = 30 * time.Millisecond
	f.done.Store(5000)
	c.handed.Store(5000 + maxUnprocessed + 1)
	start := time.Now()
	if err := <-readFromAsync(c); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < c.stuckAfter {
		t.Fatalf("returned after %v, before stuckAfter (%v)", waited, c.stuckAfter)
	}
	if got := c.handed.Load(); got != 5000+uint64(len("datagram")) {
		t.Fatalf("handed %d after resync, want 5000 + the datagram", got)
	}
}

// A closed connection ends the wait at once.
func TestBackPressureEndsWithTheConnection(t *testing.T) {
	c, _, cancel := newBackPressure(t)
	c.stuckAfter = time.Hour
	c.handed.Store(maxUnprocessed + 1)
	done := readFromAsync(c)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrom still waiting after the connection closed")
	}
}
