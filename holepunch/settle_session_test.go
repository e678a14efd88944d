package holepunch

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/secure"
)

// TestSessionOpensBeforeNomination: a dialled session that started on its
// first answered ICE check is handed out once its handshake is done, on
// that early path, and moves to the pair ICE nominates when the nomination
// comes (Conn.Settled), counted under its new path. openSession used to
// wait for the nomination first: a round trip more for every dial (86 ms
// at 80 ms RTT).
func TestSessionOpensBeforeNomination(t *testing.T) {
	early := netip.MustParseAddrPort("198.51.100.7:4000")
	nominated := pathChoice{PathLAN, netip.MustParseAddrPort("10.0.0.7:4000")}
	ca, cb := udpPair(t) // first, so that it is closed after the sessions
	dialler, answerer := sessionEndpoint(t), sessionEndpoint(t)
	ka, kb := sessionKeys(t)

	final := make(chan pathChoice, 1)
	var retired atomic.Int32
	tr := transportPath{conn: ca, path: PathDirect, remote: early,
		settle: func(ctx context.Context) (Path, netip.AddrPort) {
			c := settleOn(ctx, final, pathChoice{PathDirect, early}, dialler.log)
			return c.path, c.remote
		},
		settled: func() { retired.Add(1) },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	accepted := make(chan error, 1)
	go func() {
		_, err := answerer.openSession(ctx, transportPath{conn: cb, path: PathDirect, remote: ca.LocalAddr().(*net.UDPAddr).AddrPort()}, kb, time.Now(), false)
		accepted <- err
	}()
	c, err := dialler.openSession(ctx, tr, ka, time.Now(), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Settled():
		t.Fatal("settled before ICE nominated")
	default:
	}
	if c.Path() != PathDirect || c.Remote() != early {
		t.Fatalf("opened on %s %s, want the early path direct %s", c.Path(), c.Remote(), early)
	}
	if _, byPath := dialler.conns.stats(); byPath[PathDirect] != 1 {
		t.Fatalf("connections by path %v, want one direct", byPath)
	}
	if n := retired.Load(); n != 0 {
		t.Fatalf("the agent retired %d times before the path settled", n)
	}

	final <- nominated
	select {
	case <-c.Settled():
	case <-time.After(5 * time.Second):
		t.Fatal("never settled after ICE nominated")
	}
	if c.Path() != nominated.path || c.Remote() != nominated.remote {
		t.Fatalf("settled on %s %s, want %v", c.Path(), c.Remote(), nominated)
	}
	if _, byPath := dialler.conns.stats(); byPath[PathLAN] != 1 || len(byPath) != 1 {
		t.Fatalf("connections by path %v after the move, want one lan", byPath)
	}
	deadline := time.Now().Add(5 * time.Second)
	for retired.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // settled runs after Settled closes
	}
	if n := retired.Load(); n != 1 {
		t.Fatalf("the agent's retirement ran %d times, want once", n)
	}
}

// sessionEndpoint is an endpoint with no link: enough for openSession.
func sessionEndpoint(t *testing.T) *Endpoint {
	ctx, cancel := context.WithCancel(context.Background())
	e := &Endpoint{cfg: EndpointConfig{KeepFreedMemory: true}, log: slog.New(slog.DiscardHandler), ctx: ctx, cancel: cancel, conns: newConnTable()}
	t.Cleanup(func() {
		conns, _ := e.conns.close()
		for _, c := range conns {
			_ = c.Close()
		}
		cancel()
		e.wg.Wait()
	})
	return e
}

// sessionKeys returns the two ends' keys of one handshake.
func sessionKeys(t *testing.T) (dialler, answerer secure.Keys) {
	pa, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pb, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var k1, k2 [secure.KeySize]byte
	var h [secure.HashSize]byte
	for _, b := range [][]byte{k1[:], k2[:], h[:]} {
		_, _ = rand.Read(b)
	}
	return secure.Keys{Send: k1, Recv: k2, Hash: h, Remote: pb, Initiator: true},
		secure.Keys{Send: k2, Recv: k1, Hash: h, Remote: pa}
}

// udpPair returns two loopback UDP sockets, each sending to the other.
func udpPair(t *testing.T) (a, b net.Conn) {
	la, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b, err = net.DialUDP("udp", nil, la.LocalAddr().(*net.UDPAddr))
	if err != nil {
		_ = la.Close()
		t.Fatal(err)
	}
	a = peerConn{la, b.LocalAddr()}
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}

// peerConn is a listening UDP socket that writes to one peer.
type peerConn struct {
	*net.UDPConn
	peer net.Addr
}

func (c peerConn) Write(p []byte) (int, error) { return c.WriteTo(p, c.peer) }
func (c peerConn) RemoteAddr() net.Addr        { return c.peer }
