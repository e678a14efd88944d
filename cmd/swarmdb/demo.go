package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/swarmdb/swarmdb/internal/testnet"
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

// demoPeer is one of the three nodes.
type demoPeer struct {
	name string
	dir  string
	node *node.Node
}

func demo(ctx context.Context, w io.Writer, dhtNodes int, topic string) error {
	start := time.Now()
	var outMu sync.Mutex // peer events come from the nodes' goroutines
	say := func(format string, a ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(w, "[%6.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, a...))
	}
	ctx, cancel := context.WithTimeout(ctx, demoTimeout)
	defer cancel()

	fmt.Fprintln(w, "swarmdb demo: a whole network on loopback (127.x addresses, real UDP sockets, real Pebble stores)")
	nw, err := testnet.Start(ctx, testnet.Config{Persistent: dhtNodes})
	if err != nil {
		return fmt.Errorf("start the DHT: %w", err)
	}
	defer nw.Close()
	say("%d DHT nodes up; bootstrap node %s", dhtNodes, nw.Bootstrap[0])

	names := map[string]string{} // public key hex -> name; written before any node starts
	var peers []*demoPeer
	defer func() {
		for _, p := range peers {
			if p.node != nil {
				_ = p.node.Close()
			}
			_ = os.RemoveAll(p.dir)
		}
	}()
	nameOf := func(pub []byte) string {
		if n, ok := names[hex.EncodeToString(pub)]; ok {
			return n
		}
		return hex.EncodeToString(pub)[:8]
	}
	for _, name := range []string{"alice", "bob", "carol"} {
		dir, err := os.MkdirTemp("", "swarmdb-demo-"+name+"-")
		if err != nil {
			return err
		}
		p := &demoPeer{name: name, dir: dir}
		peers = append(peers, p)
		p.node, err = node.New(node.Config{
			Topic: topic, DataDir: dir, ListenAddr: "127.0.0.1:0", Bootstrap: nw.Bootstrap,
			KeepLoopback: true, DisableLAN: true,
			OnPeerConnect: func(e node.PeerEvent) {
				if e.Role != "client" {
					return // each connection is told once, by the side that dialled
				}
				say("%-5s -> %-5s connected: path %s, %.1f ms (DHT lookup, signaling through a relay, Noise handshake)",
					name, nameOf(e.PublicKey), e.Path, e.ConnectTime.Seconds()*1000)
			},
		})
		if err != nil {
			return err
		}
		names[hex.EncodeToString(p.node.PublicKey())] = name
	}
	say("topic %q: alice, bob and carol each have a fresh identity and a Pebble store in a temp dir", topic)
	for _, p := range peers {
		if err := p.node.Start(ctx); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		say("%-5s started: peer id %s, udp %s", p.name, hex.EncodeToString(p.node.PublicKey())[:16], p.node.LocalAddr())
	}

	// Wait for the full mesh: every node's message layer has both
	// connections attached (stream 0 of each, where ping/pong runs).
	t0 := time.Now()
	tick := time.NewTicker(demoPoll)
	defer tick.Stop()
	for !demoMeshed(peers) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodes did not all connect: %w", ctx.Err())
		case <-tick.C:
		}
	}
	say("full mesh: each node has attached both connections to its message layer (%v after the last start)", time.Since(t0).Round(time.Millisecond))

	type arrival struct {
		name string
		v    string
		d    time.Duration
		err  error
	}
	arrivals := make(chan arrival, 2)
	var wg sync.WaitGroup
	var putAt time.Time
	var putMu sync.Mutex
	for _, p := range peers[1:] {
		wt, err := p.node.Subscribe(demoKey)
		if err != nil {
			return err
		}
		defer wt.Close()
		say("%-5s subscribed to %q", p.name, demoKey)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev, err := wt.Next(ctx)
			putMu.Lock()
			d := time.Since(putAt)
			putMu.Unlock()
			arrivals <- arrival{name: p.name, v: string(ev.Record.Value), d: d, err: err}
		}()
	}
	putMu.Lock()
	putAt = time.Now()
	putMu.Unlock()
	out, err := peers[0].node.Put(ctx, demoKey, []byte(demoValue))
	if err != nil {
		return fmt.Errorf("alice put: %w", err)
	}
	say("alice put %s = %s (%s, signed by her ToolDb account)", demoKey, demoValue, out)
	for range 2 {
		a := <-arrivals
		if a.err != nil {
			wg.Wait()
			return fmt.Errorf("%s: no update: %w", a.name, a.err)
		}
		say("%-5s got %s = %s, %v after the put", a.name, demoKey, a.v, a.d.Round(time.Microsecond))
	}
	wg.Wait()

	// Close the three at once: each waits for its sessions' graceful
	// SCTP shutdown (bounded by secure's CloseTimeout).
	t1 := time.Now()
	errs := make([]error, len(peers))
	var cwg sync.WaitGroup
	for i, p := range peers {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			errs[i] = p.node.Close()
		}()
	}
	cwg.Wait()
	nw.Close()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	say("all nodes shut down cleanly in %v", time.Since(t1).Round(time.Millisecond))
	fmt.Fprintln(w, "\nRun it for real: swarmdb bootstrap on a public host, then swarmdb node --topic T --bootstrap host:49737")
	fmt.Fprintln(w, "on each machine, and swarmdb put/get/watch --topic T against a node's WebSocket.")
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
