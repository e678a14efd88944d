package dht_test

import (
	"context"
	"crypto/ed25519"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"

	"github.com/swarmdb/swarmdb/dht"
)

// TestRelaysFollowAMovedMapping: a registered node whose NAT mapping
// changes (its packets leave from a new port; packets to the old one are
// lost) stays reachable through its relays. The relays forward to the
// address the registration came from; the keepalive's reply shows the
// node its address moved, and it registers again. Before, signaling went
// to the dead mapping until the next announce.
func TestRelaysFollowAMovedMapping(t *testing.T) {
	std, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	mn := &movingNet{Net: std}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, pub, relays := echoThroughRelays(t, ctx, dht.Config{Net: mn, RelayKeepalive: 200 * time.Millisecond}, dht.Config{})
	signal := func() error {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		ans, err := client.Signal(sctx, relays[0], pub, []byte("hi"))
		if err == nil && string(ans) != "echo:hi" {
			t.Fatalf("answer %q", ans)
		}
		return err
	}
	if err := signal(); err != nil {
		t.Fatalf("before the move: %v", err)
	}
	if err := mn.move(); err != nil {
		t.Fatal(err)
	}
	// Within a few keepalives (200 ms each) the relay forwards to the new
	// mapping.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := signal()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("signaling through relay %s after the move: %v", relays[0], err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// echoThroughRelays starts a DHT, a server (server's config) that registers
// a fresh key at relays and answers every signal with "echo:" and its
// payload, and a client (client's config). It returns the client, the key
// and the relays.
func echoThroughRelays(t *testing.T, ctx context.Context, server, client dht.Config) (*dht.Node, ed25519.PublicKey, []netip.AddrPort) {
	t.Helper()
	nw := startNet(t, 8, nil)
	server.OnSignal = func(_ ed25519.PublicKey, _ netip.AddrPort, p []byte) []byte { return append([]byte("echo:"), p...) }
	s := addEphemeral(t, nw, server)
	c := addEphemeral(t, nw, client)
	key := newKey(t)
	relays, err := s.Register(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return c, key.Public().(ed25519.PublicKey), relays
}

// movingNet is the real network with a NAT in front of its sockets that
// can lose every mapping at once (move): a socket's next packets leave
// from a new port, and packets sent to the old port are lost.
type movingNet struct {
	transport.Net
	mu    sync.Mutex
	conns []*movingConn
}

func (m *movingNet) ListenPacket(network, address string) (net.PacketConn, error) {
	pc, err := m.Net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	c := &movingConn{net: m.Net, network: network, local: pc.LocalAddr(), cur: pc,
		in: make(chan datagram, 256), done: make(chan struct{})}
	go c.pump(pc)
	m.mu.Lock()
	m.conns = append(m.conns, c)
	m.mu.Unlock()
	return c, nil
}

// move gives every socket a new mapping.
func (m *movingNet) move() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.conns {
		if err := c.move(); err != nil {
			return err
		}
	}
	return nil
}

type datagram struct {
	b    []byte
	from net.Addr
}

// movingConn is one socket behind movingNet's NAT: it writes through its
// current mapping (cur) and reads what reaches any mapping still open.
type movingConn struct {
	net     transport.Net
	network string
	local   net.Addr // the address the node bound: it never changes
	in      chan datagram
	done    chan struct{}
	once    sync.Once

	mu  sync.Mutex
	cur net.PacketConn
}

func (c *movingConn) pump(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		select {
		case c.in <- datagram{append([]byte(nil), buf[:n]...), from}:
		case <-c.done:
			return
		}
	}
}

func (c *movingConn) move() error {
	ip := c.local.(*net.UDPAddr).IP
	pc, err := c.net.ListenPacket(c.network, net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		return err
	}
	c.mu.Lock()
	old := c.cur
	c.cur = pc
	c.mu.Unlock()
	go c.pump(pc)
	return old.Close()
}

func (c *movingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-c.in:
		return copy(b, d.b), d.from, nil
	case <-c.done:
		return 0, nil, net.ErrClosed
	}
}

func (c *movingConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	pc := c.cur
	c.mu.Unlock()
	return pc.WriteTo(b, addr)
}

func (c *movingConn) Close() error {
	c.once.Do(func() { close(c.done) })
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur.Close()
}

func (c *movingConn) LocalAddr() net.Addr              { return c.local }
func (c *movingConn) SetDeadline(time.Time) error      { return nil }
func (c *movingConn) SetReadDeadline(time.Time) error  { return nil }
func (c *movingConn) SetWriteDeadline(time.Time) error { return nil }
