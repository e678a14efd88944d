package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/swarmdb/swarmdb/node"
)

// Demo timeouts.
const (
	// demoTimeout bounds the whole demo; it normally takes a few seconds
	// (the goal is under 15 s), so hitting this means something is broken.
	demoTimeout = 60 * time.Second
	// demoPoll is how often the demo checks that every node's message layer
	// has identified its peers (node has no hook for that, only for swarm
	// connections).
	demoPoll = 20 * time.Millisecond
)

// demoKey and demoValue are what alice writes.
const (
	demoKey   = "demo/greeting"
	demoValue = `{"text":"hello from alice","n":1}`
)

// demoMain starts a whole network on loopback and narrates what happens: a
// small DHT comes up, three nodes with their own stores join one topic,
// find and connect to each other, and a value written on one arrives on
// the other two through their subscriptions.
func demoMain(ctx context.Context, args []string, std stdio) int {
	f := newFlags("demo", "", `Runs a whole swarmdb network on loopback (a small DHT and three nodes with their own
stores, in temporary directories) and shows a write on one node reaching the other two.
Nothing leaves this host. Exit codes: 0 ok, 1 error, 2 usage, 130 interrupted.`)
	size := f.Int("nodes", 6, "DHT nodes to start")
	topic := f.String("topic", "swarmdb-demo", "topic the three nodes join")
	if _, code, ok := f.parse(args, 0, std); !ok {
		return code
	}
	if *size < 1 {
		return f.usageError(std, "--nodes %d: want at least 1", *size)
	}
	if err := demo(ctx, std.out, *size, *topic); err != nil {
		if ctx.Err() != nil {
			return exitInterrupted
		}
		return failed(std, "demo", err)
	}
	return exitOK
}

// demoNames are the three nodes, alice first: she writes.
var demoNames = []string{"alice", "bob", "carol"}

// demoPeer is one of the three nodes.
type demoPeer struct {
	name string
	dir  string
	node *node.Node
}

// demoRun is one run of the demo: the narration and the three nodes.
type demoRun struct {
	w     io.Writer
	start time.Time
	outMu sync.Mutex        // peer events come from the nodes' goroutines
	names map[string]string // public key hex -> name; written before any node starts
	peers []*demoPeer
}

func demo(ctx context.Context, w io.Writer, dhtNodes int, topic string) error {
	d := &demoRun{w: w, start: time.Now(), names: map[string]string{}}
	ctx, cancel := context.WithTimeout(ctx, demoTimeout)
	defer cancel()

	fmt.Fprintln(w, "swarmdb demo: a whole network on loopback (127.x addresses, real UDP sockets, real Pebble stores)")
	nw, err := node.StartLocalDHT(ctx, node.LocalDHTConfig{Nodes: dhtNodes})
	if err != nil {
		return fmt.Errorf("start the DHT: %w", err)
	}
	defer nw.Close()
	d.say("%d DHT nodes up; bootstrap node %s", dhtNodes, nw.Bootstrap()[0])
	defer d.cleanup()
	if err := d.newPeers(topic, nw.Bootstrap()); err != nil {
		return err
	}
	if err := d.startPeers(ctx); err != nil {
		return err
	}
	if err := d.waitMesh(ctx); err != nil {
		return err
	}
	if err := d.putAndWatch(ctx); err != nil {
		return err
	}
	if err := d.shutdown(nw); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nRun it for real: swarmdb bootstrap on a public host, then swarmdb node --topic T --bootstrap host:49737")
	fmt.Fprintln(w, "on each machine, and swarmdb put/get/watch --topic T against a node's WebSocket.")
	return nil
}

// say prints one line of the story, stamped with the time since the start.
func (d *demoRun) say(format string, a ...any) {
	d.outMu.Lock()
	defer d.outMu.Unlock()
	fmt.Fprintf(d.w, "[%6.2fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, a...))
}

// nameOf names a peer by its public key.
func (d *demoRun) nameOf(pub []byte) string {
	if n, ok := d.names[hex.EncodeToString(pub)]; ok {
		return n
	}
	return hex.EncodeToString(pub)[:8]
}

// newPeers makes the three nodes, each with a store in a temp dir.
func (d *demoRun) newPeers(topic string, boot []netip.AddrPort) error {
	for _, name := range demoNames {
		dir, err := os.MkdirTemp("", "swarmdb-demo-"+name+"-")
		if err != nil {
			return err
		}
		p := &demoPeer{name: name, dir: dir}
		d.peers = append(d.peers, p)
		p.node, err = node.New(node.Config{
			Topic: topic, DataDir: dir, ListenAddr: "127.0.0.1:0", Bootstrap: boot,
			KeepLoopback: true, DisableLAN: true, OnPeerConnect: d.connected(name),
		})
		if err != nil {
			return err
		}
		d.names[hex.EncodeToString(p.node.PublicKey())] = name
	}
	d.say("topic %q: alice, bob and carol each have a fresh identity and a Pebble store in a temp dir", topic)
	return nil
}

// connected is name's OnPeerConnect: it tells each connection once, on
// the side that dialled.
func (d *demoRun) connected(name string) func(node.PeerEvent) {
	return func(e node.PeerEvent) {
		if e.Role != "client" {
			return
		}
		d.say("%-5s -> %-5s connected: path %s, %.1f ms (DHT lookup, signaling through a relay, Noise handshake)",
			name, d.nameOf(e.PublicKey), e.Path, e.ConnectTime.Seconds()*1000)
	}
}

func (d *demoRun) startPeers(ctx context.Context) error {
	for _, p := range d.peers {
		if err := p.node.Start(ctx); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		d.say("%-5s started: peer id %s, udp %s", p.name, hex.EncodeToString(p.node.PublicKey())[:16], p.node.LocalAddr())
	}
	return nil
}

// waitMesh waits for the full mesh: every node's message layer has both
// connections attached (stream 0 of each, where ping/pong runs).
func (d *demoRun) waitMesh(ctx context.Context) error {
	t0 := time.Now()
	tick := time.NewTicker(demoPoll)
	defer tick.Stop()
	for !demoMeshed(d.peers) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodes did not all connect: %w", ctx.Err())
		case <-tick.C:
		}
	}
	d.say("full mesh: each node has attached both connections to its message layer (%v after the last start)", time.Since(t0).Round(time.Millisecond))
	return nil
}

// demoMeshed reports whether every node's message layer has the other two
// as peers.
func demoMeshed(peers []*demoPeer) bool {
	for _, p := range peers {
		if p.node.Stats().Bridge.Peers < len(peers)-1 {
			return false
		}
	}
	return true
}

// demoArrival is the update one subscriber got.
type demoArrival struct {
	name string
	v    string
	d    time.Duration
	err  error
}

// putAndWatch subscribes bob and carol to the key, has alice write it,
// and tells when the value reached each.
func (d *demoRun) putAndWatch(ctx context.Context) error {
	subscribers := d.peers[1:]
	arrivals := make(chan demoArrival, len(subscribers))
	var putAt time.Time
	var putMu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait() // after the watchers' Close, which ends their Next
	for _, p := range subscribers {
		wt, err := p.node.Subscribe(demoKey)
		if err != nil {
			return err
		}
		defer wt.Close()
		d.say("%-5s subscribed to %q", p.name, demoKey)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev, err := wt.Next(ctx)
			putMu.Lock()
			took := time.Since(putAt)
			putMu.Unlock()
			arrivals <- demoArrival{name: p.name, v: string(ev.Record.Value), d: took, err: err}
		}()
	}
	putMu.Lock()
	putAt = time.Now()
	putMu.Unlock()
	out, err := d.peers[0].node.Put(ctx, demoKey, []byte(demoValue))
	if err != nil {
		return fmt.Errorf("alice put: %w", err)
	}
	d.say("alice put %s = %s (%s, signed by her ToolDb account)", demoKey, demoValue, out)
	for range subscribers {
		a := <-arrivals
		if a.err != nil {
			return fmt.Errorf("%s: no update: %w", a.name, a.err)
		}
		d.say("%-5s got %s = %s, %v after the put", a.name, demoKey, a.v, a.d.Round(time.Microsecond))
	}
	return nil
}

// shutdown closes the three at once (each waits for its sessions'
// graceful SCTP shutdown, bounded by secure's CloseTimeout), then the DHT.
func (d *demoRun) shutdown(nw *node.LocalDHT) error {
	t1 := time.Now()
	errs := make([]error, len(d.peers))
	var wg sync.WaitGroup
	for i, p := range d.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.node.Close()
		}()
	}
	wg.Wait()
	nw.Close()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	d.say("all nodes shut down cleanly in %v", time.Since(t1).Round(time.Millisecond))
	return nil
}

// cleanup closes whatever node is still open and removes the temp dirs.
func (d *demoRun) cleanup() {
	for _, p := range d.peers {
		if p.node != nil {
			_ = p.node.Close()
		}
		_ = os.RemoveAll(p.dir)
	}
}
