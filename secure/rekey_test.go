package secure

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

const epochLen = 1 << aesEpochBits

// TestEpochKeyGolden pins the key schedule and a packet of epoch 1: handshake key
// 00..1f, checked independently with Python's hmac and cryptography packages
// (HKDF-Expand of one SHA-256 block is HMAC(prk, info || 0x01); AESGCM with nonce = 4
// zero bytes + counter big-endian).
func TestEpochKeyGolden(t *testing.T) {
	k := testKey(0)
	k0 := deriveEpochKey(&k, 0)
	k1 := deriveEpochKey(&k0, 1)
	if got := hex.EncodeToString(k0[:]); got != "3c8559772dc9dac1cc44aad00c2ddb5e7ab027ac9616cd8603385932dd92112e" {
		t.Fatalf("k[0] = %s", got)
	}
	if got := hex.EncodeToString(k1[:]); got != "26b28aa005841a40f4dc59a53fa12d764a31cdf110d173cfce329b1cc207436f" {
		t.Fatalf("k[1] = %s", got)
	}
	e := newEpochKeys(CipherAES256GCM, k).advance()
	got := appendSealed(nil, CipherAES256GCM, e.key(1), epochLen, []byte("hi"))
	const want = "e5" + "0000000000800000" + "01cd" + "ea72414152015e73c494cb7cedf639f8"
	if hex.EncodeToString(got) != want {
		t.Fatalf("epoch-1 packet\n got %x\nwant %s", got, want)
	}
}

// epochKeyFor derives k[e] from the handshake key by its definition, independently of
// the epochKeys a conn keeps.
func epochKeyFor(k [KeySize]byte, e uint64) [KeySize]byte {
	for i := uint64(0); i <= e; i++ {
		k = deriveEpochKey(&k, i)
	}
	return k
}

// sealAt seals payload at counter ctr as the sender of key k would, under AES-256-GCM.
func sealAt(k [KeySize]byte, ctr uint64, payload []byte) []byte {
	ek := epochKeyFor(k, ctr>>aesEpochBits)
	return appendSealed(nil, CipherAES256GCM, newAEAD(CipherAES256GCM, &ek), ctr, payload)
}

func aesKeys(t testing.TB) (Keys, Keys) { return keysFor(t, CipherAES256GCM) }

// reverseBatches is a pipe tamper that holds every n datagrams of each direction and
// delivers them in reverse order: a reordering across whatever boundary lies inside.
func reverseBatches(n int) func(dir int, b []byte) [][]byte {
	var mu sync.Mutex
	var held [2][][]byte
	return func(dir int, b []byte) [][]byte {
		mu.Lock()
		defer mu.Unlock()
		held[dir] = append(held[dir], b)
		if len(held[dir]) < n {
			return nil
		}
		out := held[dir]
		held[dir] = nil
		slices.Reverse(out)
		return out
	}
}

// Datagrams cross epoch boundaries in both directions, reordered across each boundary
// (the first datagram of the new epoch arrives before the last ones of the old), and
// the keys change on both sides without a message: twice, so the second epoch's key
// follows from the first's the same way on both.
func TestEpochRekeyRoundTrip(t *testing.T) { inBothModes(t, testEpochRekeyRoundTrip) }

func testEpochRekeyRoundTrip(t *testing.T, push bool) {
	const batch = 8
	ik, rk := aesKeys(t)
	pa, pb := newPipe(pipeOptions{tamper: reverseBatches(batch)})
	var ia, ib net.Conn = pa, pb
	if push {
		ia, ib = &pushEnd{pipeEnd: pa}, &pushEnd{pipeEnd: pb}
	}
	a := NewDatagramConn(ia, ik, DatagramConfig{})
	b := NewDatagramConn(ib, rk, DatagramConfig{})
	defer a.Close()
	defer b.Close()

	for _, boundary := range []uint64{epochLen, 2 * epochLen} {
		for _, d := range []struct {
			from, to *DatagramConn
			name     string
		}{{a, b, "a->b"}, {b, a, "b->a"}} {
			d.from.sendCounter.Store(boundary - batch/2)
			var sent [][]byte
			for i := range batch {
				msg := fmt.Appendf(nil, "%s %d %d", d.name, boundary, i)
				sent = append(sent, msg)
				if _, err := d.from.Write(msg); err != nil {
					t.Fatal(err)
				}
			}
			for i := batch - 1; i >= 0; i-- {
				got, err := readWithin(t, d.to, 5*time.Second)
				if err != nil || !bytes.Equal(got, sent[i]) {
					t.Fatalf("%s across %d: read %q, %v; want %q (stats %+v)", d.name, boundary, got, err, sent[i], d.to.Stats())
				}
			}
			epoch := boundary >> aesEpochBits
			if s := d.from.sendKeys.Load().n; s != epoch {
				t.Fatalf("%s: sender in epoch %d, want %d", d.name, s, epoch)
			}
			d.to.openMu.Lock()
			r := d.to.recvKeys.n
			d.to.openMu.Unlock()
			if r != epoch {
				t.Fatalf("%s: receiver in epoch %d, want %d", d.name, r, epoch)
			}
		}
	}
	for _, c := range []*DatagramConn{a, b} {
		if s := c.Stats(); s.Dropped() != 0 || s.SendErrors != 0 || s.Cipher != CipherAES256GCM {
			t.Fatalf("stats %+v", s)
		}
	}
}

// The receiver takes each datagram with the key of the epoch its counter names: the
// current, the next and the previous one, as far as the replay window reaches. Older
// epochs are behind the window; epochs beyond the next are dropped without deriving a
// key; a datagram sealed with the key of another epoch than its counter's fails
// authentication.
func TestEpochReceiveWindow(t *testing.T) {
	ik, rk := aesKeys(t)
	pa, pb := newPipe(pipeOptions{})
	defer pa.Close()
	c := NewDatagramConn(pb, rk, DatagramConfig{})
	defer c.Close()

	open := func(pkt []byte) bool {
		c.openMu.Lock()
		defer c.openMu.Unlock()
		_, ok := c.open(pkt)
		return ok
	}
	epoch := func() uint64 {
		c.openMu.Lock()
		defer c.openMu.Unlock()
		return c.recvKeys.n
	}
	wrongKey := func(ctr, e uint64) []byte {
		ek := epochKeyFor(ik.Send, e)
		return appendSealed(nil, CipherAES256GCM, newAEAD(CipherAES256GCM, &ek), ctr, []byte("x"))
	}
	steps := []struct {
		name  string
		pkt   []byte
		ok    bool
		epoch uint64 // the receiver's epoch after it
	}{
		{"epoch 0", sealAt(ik.Send, 5, []byte("x")), true, 0},
		{"epoch 0, sealed with epoch 1's key", wrongKey(6, 1), false, 0},
		{"epoch 1 (the next)", sealAt(ik.Send, epochLen+10, []byte("x")), true, 1},
		{"epoch 0 (the previous), inside the window", sealAt(ik.Send, epochLen-1, []byte("x")), true, 1},
		{"epoch 1, sealed with epoch 0's key", wrongKey(epochLen+11, 0), false, 1},
		{"epoch 3 (beyond the next)", sealAt(ik.Send, 3*epochLen, []byte("x")), false, 1},
		{"epoch 2 (the next)", sealAt(ik.Send, 2*epochLen+1, []byte("x")), true, 2},
		{"epoch 1 (the previous), inside the window", sealAt(ik.Send, 2*epochLen-5, []byte("x")), true, 2},
		{"epoch 1, behind the window", sealAt(ik.Send, 2*epochLen-ReplayWindowSize-10, []byte("x")), false, 2},
		{"epoch 0, long stale", sealAt(ik.Send, epochLen-2, []byte("x")), false, 2},
		{"epoch 3 (the next)", sealAt(ik.Send, 3*epochLen, []byte("x")), true, 3},
	}
	for _, s := range steps {
		if ok := open(s.pkt); ok != s.ok {
			t.Fatalf("%s: accepted %v, want %v (stats %+v)", s.name, ok, s.ok, c.Stats())
		}
		if e := epoch(); e != s.epoch {
			t.Fatalf("%s: receiver in epoch %d, want %d", s.name, e, s.epoch)
		}
	}
	st := c.Stats()
	if st.DroppedAuth != 2 || st.DroppedTooOld != 2 || st.DroppedMalformed != 1 || st.RecvPackets != 6 {
		t.Fatalf("stats %+v: want 2 auth, 2 too old, 1 malformed (beyond the next epoch), 6 accepted", st)
	}
	// Nothing older than the previous epoch has a key any more.
	if c.recvKeys.key(2) == nil || c.recvKeys.key(1) != nil || c.recvKeys.key(5) != nil {
		t.Fatal("epoch keys kept beyond previous..next")
	}
}

// A conn holds one AES-256-GCM AEAD per direction until an epoch ends. The receiver
// derives the next epoch's key at that epoch's first datagram, once: a forged one
// derives it too, but further forgeries find it there, and the genuine datagram then
// uses it.
func TestEpochNextKeyDerivedOnce(t *testing.T) {
	ik, rk := aesKeys(t)
	pa, pb := newPipe(pipeOptions{})
	defer pa.Close()
	c := NewDatagramConn(pb, rk, DatagramConfig{})
	defer c.Close()
	if c.recvKeys.next != nil || c.sendKeys.Load().next != nil {
		t.Fatal("next epoch's keys derived ahead of time")
	}
	open := func(pkt []byte) bool {
		c.openMu.Lock()
		defer c.openMu.Unlock()
		_, ok := c.open(pkt)
		return ok
	}
	if !open(sealAt(ik.Send, 5, []byte("x"))) || c.recvKeys.next != nil {
		t.Fatal("epoch 0")
	}
	forged := appendSealed(nil, CipherAES256GCM, testAEAD(t, CipherAES256GCM, 9), epochLen+1, []byte("forged"))
	if open(forged) {
		t.Fatal("forgery accepted")
	}
	next := c.recvKeys.next
	if next == nil {
		t.Fatal("next key not derived for a datagram of the next epoch")
	}
	forged[len(forged)-1] ^= 1
	if open(forged) || c.recvKeys.next != next {
		t.Fatal("next key derived again")
	}
	if !open(sealAt(ik.Send, epochLen+2, []byte("x"))) || c.recvKeys.n != 1 || c.recvKeys.cur != next || c.recvKeys.next != nil {
		t.Fatalf("epoch 1: %+v", c.Stats())
	}
}

// The sender changes keys at the first datagram of an epoch; a Write that took its
// counter before the boundary still seals with the old key after another has crossed;
// one whose epoch is older than that is dropped as lost.
func TestEpochSendKeys(t *testing.T) {
	ik, rk := aesKeys(t)
	pa, pb := newPipe(pipeOptions{})
	defer pb.Close()
	c := NewDatagramConn(pa, ik, DatagramConfig{})
	defer c.Close()
	r := newEpochKeys(CipherAES256GCM, rk.Recv).advance().advance()

	if c.sendKey(epochLen) == nil || c.sendKeys.Load().n != 1 {
		t.Fatal("no advance at the first datagram of epoch 1")
	}
	if k := c.sendKey(epochLen - 1); k == nil {
		t.Fatal("a late Write of epoch 0 found no key")
	}
	c.sendKey(2 * epochLen)
	pkt := appendSealed(nil, CipherAES256GCM, c.sendKey(2*epochLen+1), 2*epochLen+1, []byte("x"))
	if _, p, err := openSealed(nil, CipherAES256GCM, r.cur, pkt); err != nil || string(p) != "x" {
		t.Fatalf("epoch 2 as the receiver derives it: %v", err)
	}
	if c.sendKey(epochLen-1) != nil {
		t.Fatal("a key of epoch 0 kept in epoch 2")
	}
	if c.sendKey(4*epochLen) != nil || c.sendKeys.Load().n != 2 {
		t.Fatal("skipped an epoch")
	}
	c.sendCounter.Store(epochLen - 1) // a Write as stalled as that
	if n, err := c.Write([]byte("late")); err != nil || n != 4 || c.Stats().SendErrors != 1 {
		t.Fatalf("stalled write: %d %v %+v", n, err, c.Stats())
	}
}

// ChaCha20-Poly1305 keeps the handshake key for the whole session.
func TestEpochChaChaNeverRekeys(t *testing.T) {
	k := testKey(3)
	e := newEpochKeys(CipherChaCha20Poly1305, k)
	if e.advance() != e || e.next != nil || epochOf(CipherChaCha20Poly1305, MaxCounter-1) != 0 {
		t.Fatal("ChaCha20-Poly1305 has epochs")
	}
	pkt := appendSealed(nil, CipherChaCha20Poly1305, e.key(0), MaxCounter-1, []byte("x"))
	if _, _, err := openSealed(nil, CipherChaCha20Poly1305, newAEAD(CipherChaCha20Poly1305, &k), pkt); err != nil {
		t.Fatal(err)
	}
}

// The per-datagram path allocates nothing under either cipher: the key lookup, sealing
// into a reused buffer, and the receiver's window, key lookup and in-place open. (Only
// an epoch's first datagram derives a key, once per 2^23.)
func TestEpochHotPathAllocs(t *testing.T) {
	for _, cc := range bothCiphers {
		t.Run(cc.String(), func(t *testing.T) {
			ik, rk := keysFor(t, cc)
			pa, pb := newPipe(pipeOptions{})
			s := NewDatagramConn(pa, ik, DatagramConfig{})
			r := NewDatagramConn(pb, rk, DatagramConfig{})
			defer s.Close()
			defer r.Close()
			payload := make([]byte, 1200)
			buf := make([]byte, 0, 1200+PacketOverhead+nonceSize)
			ctr := uint64(epochLen - 300) // the runs stay inside epoch 0 ...
			step := func() {
				buf = appendSealed(buf[:0], cc, s.sendKey(ctr), ctr, payload)
				if _, ok := r.open(buf); !ok {
					t.Fatalf("counter %d: %+v", ctr, r.Stats())
				}
				ctr++
			}
			if a := testing.AllocsPerRun(100, step); a != 0 {
				t.Fatalf("%.1f allocations per datagram", a)
			}
			ctr = epochLen + 10 // ... and epoch 1, once it has begun
			step()
			if a := testing.AllocsPerRun(100, step); a != 0 {
				t.Fatalf("%.1f allocations per datagram in epoch 1", a)
			}
		})
	}
}

// A whole session, QUIC and all, crosses an epoch boundary in both directions over a
// lossy, reordering path.
func TestSessionAcrossKeyEpochs(t *testing.T) {
	testutil.CheckLeaks(t)
	ik, rk := aesKeys(t)
	pa, pb := newPipe(pipeOptions{loss: 0.01, reorder: 0.05, seed: 7})
	ca, cb := NewDatagramConn(pa, ik, DatagramConfig{}), NewDatagramConn(pb, rk, DatagramConfig{})
	// Start each side a little before a boundary, at different distances: the echo's
	// 1 MiB each way is about 900 datagrams.
	ca.sendCounter.Store(epochLen - 200)
	cb.sendCounter.Store(epochLen - 50)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := make(chan *Session, 1)
	go func() {
		s, err := Server(ctx, cb, Config{})
		if err != nil {
			t.Errorf("server: %v", err)
		}
		srv <- s
	}()
	c, err := Client(ctx, ca, Config{})
	if err != nil {
		t.Fatal(err)
	}
	s := <-srv
	if s == nil {
		c.Close()
		t.FailNow()
	}
	defer s.Close()
	defer c.Close()
	if c.Cipher() != CipherAES256GCM || s.Stats().Datagram.Cipher != CipherAES256GCM {
		t.Fatalf("ciphers %s, %s", c.Cipher(), s.Cipher())
	}
	testEcho(t, c, s)
	for _, dc := range []*DatagramConn{ca, cb} {
		if n := dc.sendKeys.Load().n; n != 1 {
			t.Fatalf("sender in epoch %d after the echo", n)
		}
		dc.openMu.Lock()
		n := dc.recvKeys.n
		dc.openMu.Unlock()
		if n != 1 {
			t.Fatalf("receiver in epoch %d after the echo", n)
		}
		if st := dc.Stats(); st.DroppedAuth != 0 || st.DroppedMalformed != 0 {
			t.Fatalf("datagrams dropped at the boundary: %+v", st)
		}
	}
}
