package holepunch_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/transport/v2"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/holepunch/dhtlink"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/secure"
)

// peer is a DHT node with an endpoint on its socket.
type peer struct {
	node *dht.Node
	link *dhtlink.Link
	ep   *holepunch.Endpoint
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
	in   chan *holepunch.Conn
}

func startNet(t testing.TB, persistent int) *testnet.Network {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := testnet.Start(ctx, testnet.Config{Persistent: persistent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// addPeer starts an ephemeral node on the loopback test network with an
// endpoint. tweak may adjust the endpoint config.
func addPeer(t testing.TB, n *testnet.Network, tweak func(*holepunch.EndpointConfig)) *peer {
	t.Helper()
	return addPeerDHT(t, n, nil, tweak)
}

// addPeerDHT is addPeer with the node's DHT config adjusted by dhtTweak.
func addPeerDHT(t testing.TB, n *testnet.Network, dhtTweak func(*dht.Config), tweak func(*holepunch.EndpointConfig)) *peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	link := dhtlink.New()
	cfg := dht.Config{Mode: dht.ModeEphemeral, OnSignal: link.HandleSignal}
	if dhtTweak != nil {
		dhtTweak(&cfg)
	}
	node, err := n.AddNode(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return newPeer(t, node, link, n.Bootstrap, nil, func(c *holepunch.EndpointConfig) {
		c.KeepLoopback = true
		if tweak != nil {
			tweak(c)
		}
	})
}

// newPeer puts an endpoint on a started node whose signaling hook goes to
// link; Attach and the endpoint's Start register the packet handlers.
func newPeer(t testing.TB, node *dht.Node, link *dhtlink.Link, boot []netip.AddrPort, tn transport.Net, tweak func(*holepunch.EndpointConfig)) *peer {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	node.AddBootstrap(boot...) // the NAT check and TURN requests ask these first
	link.Attach(node, tn)
	p := &peer{node: node, link: link, pub: pub, priv: priv, in: make(chan *holepunch.Conn, 8)}
	cfg := holepunch.EndpointConfig{
		Key: priv, Link: link, Net: tn,
		MeasureNAT:   link.MeasureNAT,
		OnConnection: func(c *holepunch.Conn) { p.in <- c },
	}
	if tweak != nil {
		tweak(&cfg)
	}
	ep, err := holepunch.NewEndpoint(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := ep.Start(); err != nil {
		t.Fatal(err)
	}
	p.ep = ep
	t.Cleanup(func() {
		ep.Close()
		for {
			select {
			case c := <-p.in:
				c.Close()
			default:
				return
			}
		}
	})
	return p
}

func (p *peer) listen(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.ep.Listen(ctx); err != nil {
		t.Fatal(err)
	}
}

func (p *peer) accept(t *testing.T) *holepunch.Conn {
	t.Helper()
	select {
	case c := <-p.in:
		return c
	case <-time.After(15 * time.Second):
		t.Fatal("no incoming connection")
		return nil
	}
}

// connectEcho is one cell of the connect grids: client dials server's key
// within timeout, server takes the connection and msg is echoed through
// it. Both ends close when the test ends. A dial that fails marks the cell
// FAIL in results (the grid printed at the end) before the test stops.
func connectEcho(t *testing.T, client, server *peer, timeout time.Duration, msg []byte, results map[string]string, cell string) (conn, accepted *holepunch.Conn) {
	t.Helper()
	conn, accepted, err := dial(t, client, server, timeout)
	if err != nil {
		results[cell] = "FAIL"
		t.Fatal(err)
	}
	echo(t, conn, accepted, msg)
	waitSettled(t, conn)
	return conn, accepted
}

// waitSettled waits until c's path is final (Conn.Settled): a dialled
// connection may move once, to the pair ICE nominates, after Connect.
func waitSettled(t testing.TB, c *holepunch.Conn) {
	t.Helper()
	select {
	case <-c.Settled():
	case <-time.After(testutil.Scaled(10 * time.Second)):
		t.Fatal("the connection's path never settled")
	}
}

// dial connects client to server's key within timeout and returns both
// ends, which close when the test ends; err is the dial's.
func dial(t *testing.T, client, server *peer, timeout time.Duration) (conn, accepted *holepunch.Conn, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err = client.ep.Connect(ctx, server.pub, nil)
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { conn.Close() })
	accepted = server.accept(t)
	t.Cleanup(func() { accepted.Close() })
	return conn, accepted, nil
}

// echo writes msg on the client's stream 0 and checks the server echoes it.
func echo(t *testing.T, client, server *holepunch.Conn, msg []byte) {
	t.Helper()
	go func() {
		buf := make([]byte, 64<<10)
		st := server.Stream0()
		for {
			n, err := st.Read(buf)
			if err != nil {
				return
			}
			if _, err := st.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	st := client.Stream0()
	errc := make(chan error, 1)
	go func() {
		_, err := st.Write(msg)
		errc <- err
	}()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(st, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("echo differs")
	}
}

func TestConnectByKeyLoopback(t *testing.T) {
	n := startNet(t, 8)
	server := addPeer(t, n, nil)
	client := addPeer(t, n, nil)
	server.listen(t)
	c, s, err := dial(t, client, server, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.RemotePublicKey(), server.pub) || !bytes.Equal(s.RemotePublicKey(), client.pub) {
		t.Fatal("wrong identities")
	}
	if c.Path() != holepunch.PathLAN {
		t.Errorf("path = %s, want lan on loopback", c.Path())
	}
	t.Logf("connected in %v over %s", c.ConnectTime, c.Path())
	msg := bytes.Repeat([]byte("swarmdb!"), 128<<10) // 1 MiB
	echo(t, c, s, msg)
	// The session's datagrams went from the node's read loop straight to it,
	// not through pion's ICE data path (ice_direct.go): at least the 1 MiB
	// each way, in packets of at most secure.MaxMTU.
	for name, p := range map[string]*peer{"client": client, "server": server} {
		if got, want := p.ep.Stats().Routed, uint64(len(msg)/secure.MaxMTU); got < want {
			t.Errorf("%s: %d datagrams routed straight to the session, want at least %d", name, got, want)
		}
	}
}

// A session on a routed ICE pair closes its agent agentLinger after it
// settles (retireAgent) and carries on without it: data still flows both
// ways, on the same path.
func TestSessionOutlivesItsAgent(t *testing.T) {
	n := startNet(t, 6)
	server := addPeer(t, n, nil)
	client := addPeer(t, n, nil)
	server.listen(t)
	c, s, err := dial(t, client, server, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]*peer{"client": client, "server": server} {
		deadline := time.Now().Add(15 * time.Second)
		for p.ep.Stats().AgentsRetired == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the agent was not retired within 15 s of the connection", name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	routed := client.ep.Stats().Routed
	echo(t, c, s, bytes.Repeat([]byte("agentless"), 16<<10))
	if got := client.ep.Stats().Routed; got <= routed {
		t.Errorf("no datagrams routed after the agent closed (%d before, %d after)", routed, got)
	}
	select {
	case <-c.Done():
		t.Fatalf("the session ended: %v", c.Err())
	default:
	}
}

// TestConnectRefusedByFirewall: the server's firewall sees the dialler's
// key and hello; a refusal reaches the dialler as ErrRefused, and a dial
// whose hello the firewall likes connects.
func TestConnectRefusedByFirewall(t *testing.T) {
	n := startNet(t, 6)
	errNo := errors.New("not you")
	var hellos [][]byte
	var mu sync.Mutex
	server := addPeer(t, n, func(c *holepunch.EndpointConfig) {
		c.Firewall = func(_ ed25519.PublicKey, hello []byte) error {
			mu.Lock()
			hellos = append(hellos, hello)
			mu.Unlock()
			if string(hello) != "let me in" {
				return errNo
			}
			return nil
		}
	})
	client := addPeer(t, n, nil)
	server.listen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := client.ep.Connect(ctx, server.pub, nil)
	if !errors.Is(err, holepunch.ErrRefused) {
		t.Fatalf("err = %v, want ErrRefused", err)
	}
	if st := server.ep.Stats(); st.Refused != 1 || st.Accepted != 0 {
		t.Fatalf("server stats %+v", st)
	}
	c, err := client.ep.ConnectWith(ctx, server.pub, nil, holepunch.DialOptions{Hello: []byte("let me in")})
	if err != nil {
		t.Fatalf("dial with the right hello: %v", err)
	}
	c.Close()
	if _, err := client.ep.ConnectWith(ctx, server.pub, nil, holepunch.DialOptions{Hello: make([]byte, holepunch.MaxHello+1)}); !errors.Is(err, holepunch.ErrConfig) {
		t.Errorf("hello over MaxHello: err = %v, want ErrConfig", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(hellos) != 2 || hellos[0] != nil || string(hellos[1]) != "let me in" {
		t.Errorf("firewall saw hellos %q, want [nil, \"let me in\"]", hellos)
	}
}

// TestDialGoesOnWithTheMapping: a dial and Listen wait for the NAT's
// mapping, not for the filtering probes. The client's measurement reports
// its mapping early and then hangs in its probes: WaitMapping returns the
// early report, WaitNAT still waits, and the dial connects meanwhile.
func TestDialGoesOnWithTheMapping(t *testing.T) {
	n := startNet(t, 6)
	server := addPeer(t, n, nil)
	server.listen(t)
	early := natcheck.Report{Mapping: natcheck.MappingEndpointIndependent, Class: natcheck.ClassUnknown}
	probing := make(chan struct{})
	client := addPeer(t, n, func(c *holepunch.EndpointConfig) {
		c.MeasureNAT = func(ctx context.Context, mapped func(natcheck.Report)) (natcheck.Report, error) {
			mapped(early)
			select { // the filtering probes, waiting
			case <-probing:
			case <-ctx.Done():
			}
			return natcheck.Report{}, ctx.Err()
		}
	})
	defer close(probing)
	if r := client.ep.WaitMapping(dialTimeout(t)); r.Mapping != early.Mapping || r.Filtering != natcheck.FilteringUnknown {
		t.Fatalf("WaitMapping: %+v, want the early report", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	client.ep.WaitNAT(ctx)
	if ctx.Err() == nil {
		t.Fatal("WaitNAT returned while the measurement was still probing")
	}
	// Waiting for the whole measurement, the dial would wait out natWait (3 s).
	dctx, dcancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer dcancel()
	c, err := client.ep.Connect(dctx, server.pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := server.accept(t)
	defer s.Close()
	echo(t, c, s, []byte("dialled with the mapping alone"))
}

// A connection's setup and its agent's retirement ask the process to return
// freed memory, unless the program keeps it (KeepFreedMemory).
func TestKeepFreedMemory(t *testing.T) {
	var notes atomic.Int64
	defer holepunch.SetReleaseMemory(func() { notes.Add(1) })()
	for _, keep := range []bool{false, true} {
		notes.Store(0)
		n := startNet(t, 6)
		tweak := func(c *holepunch.EndpointConfig) { c.KeepFreedMemory = keep }
		server, client := addPeer(t, n, tweak), addPeer(t, n, tweak)
		server.listen(t)
		if _, _, err := dial(t, client, server, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		// Both sessions are set up; wait for both agents' retirement too.
		deadline := time.Now().Add(15 * time.Second)
		for client.ep.Stats().AgentsRetired == 0 || server.ep.Stats().AgentsRetired == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the agents were not retired within 15 s")
			}
			time.Sleep(50 * time.Millisecond)
		}
		switch got := notes.Load(); {
		case keep && got != 0:
			t.Errorf("KeepFreedMemory: %d requests to release memory, want none", got)
		case !keep && got < 4:
			t.Errorf("%d requests to release memory, want one per session and one per agent (4)", got)
		}
	}
}
