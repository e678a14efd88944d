package secure

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/internal/udpopt"
)

// udpPeer adapts an unconnected UDP socket to a datagram net.Conn talking to one peer,
// as an ice.Conn over a shared socket does: datagrams from other sources are ignored.
type udpPeer struct {
	*net.UDPConn
	peer *net.UDPAddr
	seg  *udpopt.SegmentWriter // made by the first WriteSegments (the batch writer's goroutine)
}

// WriteSegments makes the sessions over udpPeer send in batches, with UDP segmentation
// offload (secure.SegmentWriter), as they do over the node's socket.
func (u *udpPeer) WriteSegments(b []byte, segSize int) error {
	if u.seg == nil {
		u.seg = udpopt.NewSegmentWriter(u.UDPConn)
	}
	return u.seg.WriteSegments(b, segSize, u.peer.AddrPort())
}

func (u *udpPeer) Read(p []byte) (int, error) {
	for {
		n, from, err := u.ReadFromUDP(p)
		if err != nil {
			return n, err
		}
		if from.Port == u.peer.Port && from.IP.Equal(u.peer.IP) {
			return n, nil
		}
	}
}

func (u *udpPeer) Write(p []byte) (int, error) { return u.WriteToUDP(p, u.peer) }
func (u *udpPeer) RemoteAddr() net.Addr        { return u.peer }

// newUDPPair returns two datagram conns over real loopback UDP sockets with 4 MiB
// buffers (the host's rmem_max/wmem_max).
func newUDPPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadBuffer(4 << 20)
		c.SetWriteBuffer(4 << 20)
		return c
	}
	a, b := listen(), listen()
	return &udpPeer{UDPConn: a, peer: b.LocalAddr().(*net.UDPAddr)}, &udpPeer{UDPConn: b, peer: a.LocalAddr().(*net.UDPAddr)}
}

type sessionPair struct {
	client, server *Session
	pa, pb         *pipeEnd // nil over UDP
}

// newSessions runs a handshake and sets up a session over inner conns a (initiator)
// and b.
func newSessions(t testing.TB, a, b net.Conn, cfg Config) (*Session, *Session) {
	t.Helper()
	ik, rk := testKeys(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type res struct {
		s   *Session
		err error
	}
	srv := make(chan res, 1)
	go func() {
		s, err := Open(ctx, b, rk, cfg)
		srv <- res{s, err}
	}()
	c, err := Open(ctx, a, ik, cfg)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	r := <-srv
	if r.err != nil {
		c.Close()
		t.Fatalf("server: %v", r.err)
	}
	t.Cleanup(func() { c.Close(); r.s.Close() })
	if !c.RemotePublicKey().Equal(ik.Remote) || !r.s.RemotePublicKey().Equal(rk.Remote) {
		t.Fatal("RemotePublicKey wrong")
	}
	return c, r.s
}

func newPipeSessions(t testing.TB, opts pipeOptions, cfg Config) sessionPair {
	t.Helper()
	pa, pb := newPipe(opts)
	c, s := newSessions(t, pa, pb, cfg)
	return sessionPair{c, s, pa, pb}
}

// echo copies everything from st back to it until EOF, then closes its direction.
func echo(st *Stream) error {
	if _, err := io.Copy(st, st); err != nil {
		return err
	}
	return st.CloseWrite()
}

// sendAndCheck writes size pseudo-random bytes on st and checks the echo comes back
// intact.
func sendAndCheck(st *Stream, size int, seed uint64) error {
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	want := sha256.Sum256(data)
	errc := make(chan error, 1)
	go func() {
		for p := data; len(p) > 0; {
			k := min(len(p), 50_000) // not a multiple of anything
			if _, err := st.Write(p[:k]); err != nil {
				errc <- err
				return
			}
			p = p[k:]
		}
		errc <- st.CloseWrite()
	}()
	h := sha256.New()
	n, err := io.Copy(h, st)
	if err != nil {
		return fmt.Errorf("reading echo after %d bytes: %w", n, err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	if n != int64(size) || !bytes.Equal(h.Sum(nil), want[:]) {
		return fmt.Errorf("echo: %d bytes, want %d, hash match %v", n, size, bytes.Equal(h.Sum(nil), want[:]))
	}
	return nil
}

func testEcho(t *testing.T, c, s *Session) {
	// Stream 0: the client sends 1 MiB, the server echoes; then the other way round on
	// an app stream the server opens.
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := echo(s.Stream0()); err != nil {
			t.Errorf("server echo: %v", err)
		}
	})
	if err := sendAndCheck(c.Stream0(), 1<<20, 1); err != nil {
		t.Fatalf("client->server 1 MiB: %v", err)
	}
	wg.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wg.Go(func() {
		st, err := c.AcceptStream(ctx)
		if err != nil {
			t.Errorf("client accept: %v", err)
			return
		}
		if err := echo(st); err != nil {
			t.Errorf("client echo: %v", err)
		}
		st.Close()
	})
	st, err := s.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ID()%2 != 1 {
		t.Fatalf("server opened stream %d, want odd", st.ID())
	}
	if err := sendAndCheck(st, 1<<20, 2); err != nil {
		t.Fatalf("server->client 1 MiB: %v", err)
	}
	st.Close()
	wg.Wait()
}

func TestSessionEchoPipe(t *testing.T) {
	testutil.CheckLeaks(t)
	p := newPipeSessions(t, pipeOptions{}, Config{})
	testEcho(t, p.client, p.server)
}

func TestSessionEchoUDP(t *testing.T) {
	testutil.CheckLeaks(t)
	a, b := newUDPPair(t)
	c, s := newSessions(t, a, b, Config{})
	testEcho(t, c, s)
	if st := c.Stats(); st.BytesSent < 1<<20 || st.Datagram.SentPackets < 800 {
		t.Fatalf("stats look wrong: %+v", st)
	}
}

// A lossy, reordering path: QUIC recovers, the replay window lets reordered datagrams
// through.
func TestSessionEchoLossyPipe(t *testing.T) {
	testutil.CheckLeaks(t)
	p := newPipeSessions(t, pipeOptions{loss: 0.01, reorder: 0.05, seed: 7}, Config{})
	testEcho(t, p.client, p.server)
	if st := p.server.Stats().Datagram; st.Dropped() != 0 {
		t.Fatalf("reordering caused drops: %+v", st)
	}
}

func TestSessionConcurrentStreams(t *testing.T) {
	testutil.CheckLeaks(t)
	a, b := newUDPPair(t)
	c, s := newSessions(t, a, b, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 8
	var wg sync.WaitGroup
	wg.Go(func() {
		var inner sync.WaitGroup
		for range n {
			st, err := s.AcceptStream(ctx)
			if err != nil {
				t.Errorf("accept: %v", err)
				return
			}
			inner.Go(func() {
				if err := echo(st); err != nil {
					t.Errorf("echo %d: %v", st.ID(), err)
				}
				st.Close()
			})
		}
		inner.Wait()
	})
	for i := range n {
		wg.Go(func() {
			st, err := c.OpenStream(ctx)
			if err != nil {
				t.Errorf("open: %v", err)
				return
			}
			defer st.Close()
			if err := sendAndCheck(st, 256<<10, uint64(10+i)); err != nil {
				t.Errorf("stream %d: %v", st.ID(), err)
			}
		})
	}
	wg.Wait()
	if got := c.Stats().StreamsOpened; got != n {
		t.Fatalf("StreamsOpened = %d", got)
	}
}

// An attacker on the path corrupts, forges and replays datagrams; the application sees
// exactly the bytes that were sent, and every bad datagram is counted.
func TestSessionTamperedDatagramsNeverReachApp(t *testing.T) {
	testutil.CheckLeaks(t)
	var n int
	var mu sync.Mutex
	tamper := func(dir int, p []byte) [][]byte {
		mu.Lock()
		defer mu.Unlock()
		n++
		switch n % 4 {
		case 0: // replay
			return [][]byte{p, bytes.Clone(p)}
		case 1: // a corrupted copy first, then the original
			bad := bytes.Clone(p)
			bad[len(bad)/2] ^= 0xff
			return [][]byte{bad, p}
		case 2: // a forged packet with a fresh counter
			forged := bytes.Clone(p)
			forged[1] ^= 0x10
			return [][]byte{forged, p}
		}
		return [][]byte{p}
	}
	p := newPipeSessions(t, pipeOptions{tamper: tamper}, Config{})
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := echo(p.server.Stream0()); err != nil {
			t.Errorf("echo: %v", err)
		}
	})
	if err := sendAndCheck(p.client.Stream0(), 512<<10, 3); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for name, s := range map[string]*Session{"client": p.client, "server": p.server} {
		st := s.Stats().Datagram
		if st.DroppedReplay == 0 || st.DroppedAuth == 0 {
			t.Fatalf("%s: drops not counted: %+v", name, st)
		}
		t.Logf("%s drops: replay %d auth %d malformed %d", name, st.DroppedReplay, st.DroppedAuth, st.DroppedMalformed)
	}
}

// A peer that vanishes (no SHUTDOWN, no ABORT, no datagrams) is declared dead within
// DeadTimeout plus half a keepalive interval, on both sides.
func TestSessionDeadPeerDetected(t *testing.T) {
	testutil.CheckLeaks(t)
	cfg := Config{KeepaliveInterval: 100 * time.Millisecond, DeadTimeout: time.Second}
	p := newPipeSessions(t, pipeOptions{}, cfg)

	// Idle for a while first: keepalives must keep a quiet session alive.
	select {
	case <-p.client.Done():
		t.Fatalf("idle session died: %v", p.client.Err())
	case <-time.After(2 * cfg.DeadTimeout):
	}
	if p.server.Stats().Datagram.RecvPackets == 0 {
		t.Fatal("no keepalive traffic")
	}

	p.pa.blackhole.Store(true)
	p.pb.blackhole.Store(true)
	start := time.Now()
	// The design bound plus slack for a loaded CI machine running -race.
	bound := cfg.DeadTimeout + cfg.KeepaliveInterval/2 + time.Second
	for name, s := range map[string]*Session{"client": p.client, "server": p.server} {
		select {
		case <-s.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: dead peer not detected", name)
		}
		if !errors.Is(s.Err(), ErrPeerDead) {
			t.Fatalf("%s: Err = %v", name, s.Err())
		}
	}
	if el := time.Since(start); el > bound {
		t.Fatalf("detection took %v, bound %v", el, bound)
	}
	// Streams report the reason.
	if _, err := p.client.Stream0().Read(make([]byte, 10)); !errors.Is(err, ErrPeerDead) {
		t.Fatalf("stream read after death: %v", err)
	}
}

// Close on one end is noticed by the other; data written before Close is delivered.
func TestSessionCloseCleanBothEnds(t *testing.T) {
	for _, transport := range []string{"pipe", "udp"} {
		t.Run(transport, func(t *testing.T) {
			testutil.CheckLeaks(t)
			var c, s *Session
			if transport == "pipe" {
				p := newPipeSessions(t, pipeOptions{}, Config{})
				c, s = p.client, p.server
			} else {
				a, b := newUDPPair(t)
				c, s = newSessions(t, a, b, Config{})
			}
			msg := bytes.Repeat([]byte("last words "), 10000)
			if _, err := c.Stream0().Write(msg); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(s.Stream0())
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("server read %d bytes, %v; want %d then EOF", len(got), err, len(msg))
			}
			select {
			case <-s.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("server did not notice the close")
			}
			t.Logf("close noticed after %v", time.Since(start))
			if !errors.Is(s.Err(), ErrRemoteClosed) {
				t.Fatalf("server Err = %v", s.Err())
			}
			if !errors.Is(c.Err(), ErrSessionClosed) {
				t.Fatalf("client Err = %v", c.Err())
			}
			for _, end := range []*Session{c, s} {
				if ctx := end.Context(); ctx.Err() == nil || context.Cause(ctx) != end.Err() {
					t.Fatalf("session ended but its context: %v, cause %v; want cause %v", ctx.Err(), context.Cause(ctx), end.Err())
				}
			}
			if _, err := c.OpenStream(context.Background()); err == nil {
				t.Fatal("OpenStream after Close succeeded")
			}
			if _, err := s.AcceptStream(context.Background()); !errors.Is(err, ErrRemoteClosed) {
				t.Fatalf("AcceptStream after remote close: %v", err)
			}
			if err := c.Close(); err != nil {
				t.Fatal("second Close:", err)
			}
		})
	}
}

// OnEnd's function runs once the session has ended, with Err set: registered before
// the end, after the peer's close is noticed; registered after it, at once.
func TestSessionOnEnd(t *testing.T) {
	testutil.CheckLeaks(t)
	p := newPipeSessions(t, pipeOptions{}, Config{})
	c, s := p.client, p.server
	before := make(chan error, 1)
	s.OnEnd(func() { before <- s.Err() })
	select {
	case err := <-before:
		t.Fatalf("OnEnd ran while the session was up (Err %v)", err)
	default:
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-before:
		if !errors.Is(err, ErrRemoteClosed) {
			t.Fatalf("OnEnd saw Err %v; want ErrRemoteClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnEnd did not run after the peer closed")
	}
	after := make(chan struct{})
	c.OnEnd(func() { close(after) })
	select {
	case <-after:
	case <-time.After(5 * time.Second):
		t.Fatal("OnEnd on an ended session did not run")
	}
}

// One write of at most MaxMessageSize is one message; larger writes are split; a small
// read buffer gets a message in pieces; ReadMessage gets a whole one.
func TestStreamMessageSemantics(t *testing.T) {
	testutil.CheckLeaks(t)
	p := newPipeSessions(t, pipeOptions{}, Config{})
	w, r := p.client.Stream0(), p.server.Stream0()

	sizes := []int{1, 1000, DefaultMaxMessageSize}
	for _, n := range sizes {
		if _, err := w.Write(bytes.Repeat([]byte{byte(n)}, n)); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, DefaultMaxMessageSize)
	for _, n := range sizes {
		got, err := r.Read(buf)
		if err != nil || got != n {
			t.Fatalf("read %d, %v; want one message of %d", got, err, n)
		}
	}

	big := make([]byte, 2*DefaultMaxMessageSize+5)
	w.Write(big)
	for _, want := range []int{DefaultMaxMessageSize, DefaultMaxMessageSize, 5} {
		m, err := r.ReadMessage(nil)
		if err != nil || len(m) != want {
			t.Fatalf("ReadMessage: %d, %v; want %d", len(m), err, want)
		}
	}

	w.Write([]byte("0123456789"))
	small := make([]byte, 4)
	var got []byte
	for len(got) < 10 {
		n, err := r.Read(small)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, small[:n]...)
	}
	if string(got) != "0123456789" {
		t.Fatalf("pieces %q", got)
	}

	if n, err := w.Write(nil); n != 0 || err != nil {
		t.Fatalf("empty write: %d %v", n, err)
	}
}

// An idle stream holds no read buffer: it borrows one for a message and gives it back
// once the message is read and nothing more is buffered. Messages whose length prefix
// and body arrive in several pieces still come out whole.
func TestStreamIdleHoldsNoReadBuffer(t *testing.T) {
	testutil.CheckLeaks(t)
	p := newPipeSessions(t, pipeOptions{}, Config{})
	w, r := p.client.Stream0(), p.server.Stream0()
	holds := func() bool {
		r.rmu.Lock()
		defer r.rmu.Unlock()
		return r.br != nil
	}
	if holds() {
		t.Fatal("stream 0 holds a read buffer before any message")
	}
	// 300 bytes have a two-byte length prefix, streamReadBuffer fills the buffer,
	// MaxMessageSize exceeds it, and a write above MaxMessageSize arrives as two messages.
	for _, n := range []int{1, 300, streamReadBuffer, DefaultMaxMessageSize, DefaultMaxMessageSize + 7} {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		if _, err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		var got []byte
		for len(got) < n {
			m, err := r.ReadMessage(nil)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, m...)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("%d-byte message came out as %d bytes", n, len(got))
		}
		if holds() {
			t.Fatalf("after a %d-byte message the idle stream still holds a read buffer", n)
		}
	}
}

func TestStreamCloseAndBacklog(t *testing.T) {
	testutil.CheckLeaks(t)
	p := newPipeSessions(t, pipeOptions{}, Config{AcceptBacklog: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Close: the peer reads the data, then EOF; our pending Read unblocks.
	st, err := p.client.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("bye"))
	peer, err := p.server.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := st.Read(make([]byte, 10))
		readErr <- err
	}()
	st.Close()
	if err := <-readErr; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("pending Read after Close: %v", err)
	}
	got, err := io.ReadAll(peer)
	if err != nil || string(got) != "bye" {
		t.Fatalf("peer read %q %v", got, err)
	}
	peer.Close()

	// Backlog of 2: the third and later unaccepted streams are reset.
	for range 4 {
		if _, err := p.client.OpenStream(ctx); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Poll(5*time.Second, 0, func() bool { return p.server.Stats().StreamsRefused >= 2 }) // a counter: no event to wait on
	if got := p.server.Stats().StreamsRefused; got != 2 {
		t.Fatalf("StreamsRefused = %d, want 2", got)
	}
}

// The client's setup needs no round trip (the Noise handshake did the establishing),
// so it succeeds even when the server never hears it; the server's waits for stream 0
// and gives up with its context.
func TestSessionSetupCancelled(t *testing.T) {
	testutil.CheckLeaks(t)
	ik, rk := testKeys(t)
	pa, pb := newPipe(pipeOptions{})
	pa.blackhole.Store(true) // the server never hears the client
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	type result struct {
		s   *Session
		err error
	}
	client, server := make(chan result, 1), make(chan result, 1)
	go func() {
		s, err := Open(ctx, pa, ik, Config{CloseTimeout: 200 * time.Millisecond})
		client <- result{s, err}
	}()
	go func() { s, err := Open(ctx, pb, rk, Config{}); server <- result{s, err} }()
	select {
	case r := <-server:
		if !errors.Is(r.err, context.DeadlineExceeded) {
			t.Fatalf("server setup error %v", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server setup ignored its context")
	}
	r := <-client
	if r.err != nil {
		t.Fatalf("client setup: %v", r.err)
	}
	start := time.Now()
	r.s.Close()
	// Its hello is never acknowledged: the goodbye waits out CloseTimeout, no more.
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close took %v with a CloseTimeout of 200ms", took)
	}
}
