package secure

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// testKeys returns matching initiator and responder keys from a real handshake.
func testKeys(t testing.TB) (Keys, Keys) {
	t.Helper()
	return handshake(t, newKeyPair(t), newKeyPair(t), nil)
}

// keysFor are the keys of a handshake, set to seal with c whatever this machine would
// negotiate.
func keysFor(t testing.TB, c Cipher) (Keys, Keys) {
	t.Helper()
	ik, rk := testKeys(t)
	ik.Cipher, rk.Cipher = c, c
	return ik, rk
}

// datagramsBothWays sends a few datagrams each way over a pipe between DatagramConns
// built from ik and rk.
func datagramsBothWays(t *testing.T, ik, rk Keys) {
	t.Helper()
	pa, pb := newPipe(pipeOptions{})
	a, b := NewDatagramConn(pa, ik, DatagramConfig{}), NewDatagramConn(pb, rk, DatagramConfig{})
	defer a.Close()
	defer b.Close()
	if a.Cipher() != ik.Cipher || b.Stats().Cipher != rk.Cipher {
		t.Fatalf("conns seal with %s and %s, keys say %s and %s", a.Cipher(), b.Stats().Cipher, ik.Cipher, rk.Cipher)
	}
	for i := range 3 {
		for _, d := range []struct {
			from, to *DatagramConn
			name     string
		}{{a, b, "initiator->responder"}, {b, a, "responder->initiator"}} {
			msg := fmt.Appendf(nil, "%s %d", d.name, i)
			if _, err := d.from.Write(msg); err != nil {
				t.Fatal(err)
			}
			if got, err := readWithin(t, d.to, 5*time.Second); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("%s: read %q, %v", d.name, got, err)
			}
		}
	}
}

// Both ciphers carry datagrams both ways, and the conns say which they use.
func TestDatagramCiphers(t *testing.T) {
	for _, cc := range bothCiphers {
		t.Run(cc.String(), func(t *testing.T) {
			ik, rk := keysFor(t, cc)
			datagramsBothWays(t, ik, rk)
		})
	}
}

func newDatagramPair(t testing.TB, opts pipeOptions) (*DatagramConn, *DatagramConn, *pipeEnd, *pipeEnd) {
	t.Helper()
	ik, rk := testKeys(t)
	pa, pb := newPipe(opts)
	var ia, ib net.Conn = pa, pb
	if opts.push {
		ia, ib = &pushEnd{pipeEnd: pa}, &pushEnd{pipeEnd: pb}
	}
	a := NewDatagramConn(ia, ik, DatagramConfig{QueueLen: opts.queueLen})
	b := NewDatagramConn(ib, rk, DatagramConfig{QueueLen: opts.queueLen})
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b, pa, pb
}

// pushEnd is a pipe end that hands its datagrams over (PacketSource), from a goroutine
// of its own as holepunch's routed conn does from the node's read loop.
type pushEnd struct {
	*pipeEnd
	once sync.Once
}

func (e *pushEnd) SetReceiver(f func(b []byte)) {
	e.once.Do(func() {
		go func() {
			buf := make([]byte, 2048)
			for {
				n, err := e.pipeEnd.Read(buf)
				if err != nil {
					return
				}
				f(buf[:n])
			}
		}()
	})
}

// inBothModes runs test with the conn reading its inner conn and with the inner conn
// handing datagrams over (PacketSource).
func inBothModes(t *testing.T, test func(t *testing.T, push bool)) {
	t.Run("read", func(t *testing.T) { test(t, false) })
	t.Run("push", func(t *testing.T) { test(t, true) })
}

func readWithin(t *testing.T, c net.Conn, d time.Duration) ([]byte, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	return buf[:n], err
}

func TestDatagramRoundTrip(t *testing.T) { inBothModes(t, testDatagramRoundTrip) }

func testDatagramRoundTrip(t *testing.T, push bool) {
	a, b, _, _ := newDatagramPair(t, pipeOptions{push: push})
	for i := range 100 {
		msg := fmt.Appendf(nil, "a->b %d", i)
		if _, err := a.Write(msg); err != nil {
			t.Fatal(err)
		}
		got, err := readWithin(t, b, 5*time.Second)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("b read %q, %v", got, err)
		}
		msg = fmt.Appendf(nil, "b->a %d", i)
		b.Write(msg)
		got, err = readWithin(t, a, 5*time.Second)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("a read %q, %v", got, err)
		}
	}
	if s := b.Stats(); s.RecvPackets != 100 || s.Dropped() != 0 {
		t.Fatalf("stats %+v", s)
	}
	if _, err := a.Write(make([]byte, DefaultMaxPayload+1)); !errors.Is(err, ErrDatagramTooLarge) {
		t.Fatalf("oversize write: %v", err)
	}
}

// Tampered, forged, replayed, truncated and stale datagrams never reach Read, and each
// is counted under its reason.
func TestDatagramDropsBadPackets(t *testing.T) { inBothModes(t, testDatagramDropsBadPackets) }

func testDatagramDropsBadPackets(t *testing.T, push bool) {
	var mu sync.Mutex
	var captured [][]byte
	a, b, _, pb := newDatagramPair(t, pipeOptions{push: push, tamper: func(dir int, p []byte) [][]byte {
		if dir == 0 {
			mu.Lock()
			captured = append(captured, bytes.Clone(p))
			mu.Unlock()
		}
		return [][]byte{p}
	}})

	a.Write([]byte("first"))
	if got, err := readWithin(t, b, 5*time.Second); err != nil || string(got) != "first" {
		t.Fatalf("%q %v", got, err)
	}
	mu.Lock()
	first := captured[0]
	mu.Unlock()

	flipped := bytes.Clone(first)
	flipped[len(flipped)-20] ^= 1 // in the ciphertext
	counterFlip := bytes.Clone(first)
	counterFlip[8] ^= 1 // counter 0 -> 1: not replayed, but the tag no longer matches
	wrongTag := bytes.Clone(first)
	wrongTag[0] = 0x41 // a DHT tag
	forged := appendSealed(nil, a.Cipher(), testAEAD(t, a.Cipher(), 9), 77, []byte("forged"))

	pb.inject(first)              // replay
	pb.inject(flipped)            // replay too (counter 0 already seen): checked before auth
	pb.inject(counterFlip)        // corrupted
	pb.inject(forged)             // forged with another key
	pb.inject(first[:10])         // truncated
	pb.inject(wrongTag)           // not ours
	pb.inject(make([]byte, 5000)) // oversize

	// Move the window far ahead, then replay something older than it.
	for range ReplayWindowSize + 10 {
		a.Write(nil) // keepalives advance the counter without reaching Read
	}
	pb.inject(first)
	a.Write([]byte("last"))

	got, err := readWithin(t, b, 5*time.Second)
	if err != nil || string(got) != "last" {
		t.Fatalf("read %q, %v: a bad packet reached the application", got, err)
	}
	s := b.Stats()
	want := DatagramStats{
		DroppedReplay: 2, DroppedAuth: 2, DroppedMalformed: 3, DroppedTooOld: 1,
		Keepalives: ReplayWindowSize + 10, RecvPackets: ReplayWindowSize + 12,
	}
	if s.DroppedReplay != want.DroppedReplay || s.DroppedAuth != want.DroppedAuth ||
		s.DroppedMalformed != want.DroppedMalformed || s.DroppedTooOld != want.DroppedTooOld ||
		s.Keepalives != want.Keepalives || s.RecvPackets != want.RecvPackets {
		t.Fatalf("stats\n got %+v\nwant %+v", s, want)
	}
	if !b.LastReceive().After(time.Now().Add(-5 * time.Second)) {
		t.Fatal("LastReceive not updated")
	}
}

// The pipe's deadlines do nothing (like ice.Conn); Close must still unblock Read, and
// our own read deadline must work.
func TestDatagramCloseUnblocksRead(t *testing.T) { inBothModes(t, testDatagramCloseUnblocksRead) }

func testDatagramCloseUnblocksRead(t *testing.T, push bool) {
	a, _, _, _ := newDatagramPair(t, pipeOptions{push: push})

	start := time.Now()
	_, err := readWithin(t, a, 50*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("deadline error is not a net.Error timeout: %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("deadline took too long")
	}

	done := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 100))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // let Read block (not for correctness)
	a.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// A deadline set while a Read is blocked applies to that Read (a transport above may rely on this
// to abort).
func TestDatagramDeadlineWhileBlocked(t *testing.T) { inBothModes(t, testDatagramDeadlineWhileBlocked) }

func testDatagramDeadlineWhileBlocked(t *testing.T, push bool) {
	a, _, _, _ := newDatagramPair(t, pipeOptions{push: push})
	done := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 100))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	a.SetReadDeadline(time.Now())
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SetReadDeadline did not unblock Read")
	}
}

func TestDatagramReorderAndConcurrentWrites(t *testing.T) {
	inBothModes(t, testDatagramReorderAndConcurrentWrites)
}

func testDatagramReorderAndConcurrentWrites(t *testing.T, push bool) {
	a, b, _, _ := newDatagramPair(t, pipeOptions{reorder: 0.3, seed: 1, push: push})
	const writers, per = 4, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				a.Write(fmt.Appendf(nil, "%d/%d", w, i))
			}
		})
	}
	wg.Wait()
	a.Write([]byte("flush")) // releases a held-back datagram
	seen := map[string]bool{}
	for len(seen) < writers*per {
		got, err := readWithin(t, b, 5*time.Second)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(seen), err)
		}
		if seen[string(got)] {
			t.Fatalf("duplicate %q", got)
		}
		if string(got) != "flush" {
			seen[string(got)] = true
		}
	}
	if s := b.Stats(); s.Dropped() != 0 {
		t.Fatalf("reordering caused drops: %+v", s)
	}
}

// FuzzDatagramOpen feeds arbitrary datagrams through the receive path (codec plus replay
// window plus stats) of a DatagramConn: never a panic, never a forged payload, and the
// genuine datagram sealed afterwards is still accepted.
func FuzzDatagramOpen(f *testing.F) {
	ik, rk := fuzzSessionKeys()
	f.Add(appendSealed(nil, ik.Cipher, testAEAD(f, ik.Cipher, 0), 1, []byte("x")), []byte("y"))
	f.Add([]byte{PacketTag, 0, 0, 0, 0, 0, 0, 0, 5}, []byte{})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		pa, pb := newPipe(pipeOptions{})
		defer pa.Close()
		defer pb.Close()
		sender := NewDatagramConn(pa, ik, DatagramConfig{})
		recv := NewDatagramConn(pb, rk, DatagramConfig{})
		for _, garbage := range [][]byte{a, b} {
			if p, ok := recv.open(bytes.Clone(garbage)); ok {
				t.Fatalf("garbage %x opened to %x", garbage, p)
			}
		}
		if len(b) > DefaultMaxPayload {
			b = b[:DefaultMaxPayload]
		}
		pkt := appendSealed(nil, sender.cipher, sender.sendKey(3), 3, b)
		p, ok := recv.open(pkt)
		if !ok || !bytes.Equal(p, b) {
			t.Fatalf("genuine datagram rejected: %+v", recv.Stats())
		}
		if _, ok := recv.open(appendSealed(nil, sender.cipher, sender.sendKey(3), 3, b)); ok {
			t.Fatal("replay accepted")
		}
	})
}

// fuzzSessionKeys are fixed keys for fuzzing (no handshake per input).
func fuzzSessionKeys() (Keys, Keys) {
	var ik, rk Keys
	for i := range ik.Send {
		ik.Send[i], ik.Recv[i] = byte(200+i), byte(100+i)
	}
	rk.Send, rk.Recv = ik.Recv, ik.Send
	ik.Cipher, rk.Cipher = CipherAES256GCM, CipherAES256GCM
	ik.Initiator = true
	return ik, rk
}

// Datagrams beyond QueueLen that nobody reads are dropped and counted; the first
// QueueLen still arrive, in order.
func TestDatagramQueueOverflow(t *testing.T) { inBothModes(t, testDatagramQueueOverflow) }

func testDatagramQueueOverflow(t *testing.T, push bool) {
	a, b, _, _ := newDatagramPair(t, pipeOptions{push: push, queueLen: 4})
	b.startReader() // what the first Read does
	for i := range 10 {
		if _, err := a.Write(fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for s := b.Stats(); s.RecvPackets < 10; s = b.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of 10 datagrams arrived: %+v", s.RecvPackets, s)
		}
		time.Sleep(time.Millisecond)
	}
	if s := b.Stats(); s.QueueOverflows != 6 || s.Dropped() != 0 {
		t.Fatalf("stats %+v, want 6 queue overflows and nothing else dropped", s)
	}
	for i := range 4 {
		got, err := readWithin(t, b, time.Second)
		if err != nil || string(got) != fmt.Sprint(i) {
			t.Fatalf("read %q, %v; want %d", got, err, i)
		}
	}
}

// discardConn is an inner conn that drops what is written to it; discardSegments
// also takes runs of datagrams, as the node's socket does.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }
func (discardConn) Close() error                { return nil }

type discardSegments struct{ discardConn }

func (discardSegments) WriteSegments(b []byte, segSize int) error { return nil }

// Write allocates nothing per datagram, over a plain inner conn and over one that takes
// batches, under either cipher; in an AES-256-GCM session also once an epoch's first
// datagram has derived the next key.
func TestDatagramWriteAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops buffers on purpose under the race detector")
	}
	for _, tc := range []struct {
		name  string
		inner net.Conn
	}{{"plain", discardConn{}}, {"batched", discardSegments{}}} {
		for _, cc := range bothCiphers {
			t.Run(tc.name+" "+cc.String(), func(t *testing.T) {
				ik, _ := keysFor(t, cc)
				c := NewDatagramConn(tc.inner, ik, DatagramConfig{})
				defer c.Close()
				payload := make([]byte, 1200)
				write := func() {
					if _, err := c.Write(payload); err != nil {
						t.Fatal(err)
					}
				}
				// AllocsPerRun's warm-up run starts epoch 1.
				for _, start := range []uint64{epochLen - 300, epochLen} {
					c.sendCounter.Store(start)
					if a := testing.AllocsPerRun(200, write); a != 0 {
						t.Fatalf("from counter %d: %.2f allocations per Write", start, a)
					}
				}
			})
		}
	}
}
