package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testnet"
)

// runDemo starts a whole network on loopback and narrates what happens:
// DHT nodes come up, three peers announce a topic, find each other by the
// topic alone and exchange signaling through each other's relays.
func runDemo(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	size := fs.Int("nodes", 20, "DHT nodes to start")
	topicName := fs.String("topic", "swarmdb-demo", "topic the peers join")
	if err := fs.Parse(args); err != nil {
		return err
	}
	start := time.Now()
	say := func(format string, a ...any) {
		fmt.Fprintf(os.Stdout, "[%6.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, a...))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	fmt.Println("swarmdb demo: a whole network on loopback (127.x addresses, real UDP sockets)")
	nw, err := testnet.Start(ctx, testnet.Config{Persistent: *size})
	if err != nil {
		return err
	}
	defer nw.Close()
	say("%d persistent DHT nodes up; bootstrap node %s", *size, nw.Bootstrap[0])

	topic := dht.TopicKey(*topicName)
	say("topic %q has key %s (SHA-256 of the string)", *topicName, topic.Short())

	type peer struct {
		name string
		key  ed25519.PrivateKey
		node *dht.Node
	}
	var peers []*peer
	for _, name := range []string{"alice", "bob", "carol"} {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		p := &peer{name: name, key: key}
		p.node, err = nw.AddNode(ctx, dht.Config{
			Mode: dht.ModeEphemeral, // as behind a home router: queries, never routes
			OnSignal: func(to ed25519.PublicKey, from netip.AddrPort, payload []byte) []byte {
				return []byte(fmt.Sprintf("hello %s, this is %s", payload, name))
			},
		})
		if err != nil {
			return err
		}
		peers = append(peers, p)
		say("%-5s joined the DHT as an ephemeral node at %s; peer id %s", name, p.node.LocalAddr(), shortKey(key))
	}
	for _, p := range peers {
		res, err := p.node.Announce(ctx, topic, p.key)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		say("%-5s announced on the topic: stored on %d nodes, relays %v", p.name, res.Stored, res.Relays)
	}
	names := make(map[string]string)
	for _, p := range peers {
		names[string(p.key.Public().(ed25519.PublicKey))] = p.name
	}
	for _, p := range peers {
		t0 := time.Now()
		res, err := p.node.Lookup(ctx, topic)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		say("%-5s looked up the topic in %v (%d hops, %d requests): %d peers", p.name, time.Since(t0).Round(time.Microsecond), res.Hops, res.Queried, len(res.Peers))
		if len(res.Peers) < len(peers) {
			return fmt.Errorf("%s found %d of %d peers", p.name, len(res.Peers), len(peers))
		}
		for _, rec := range res.Peers {
			other := names[string(rec.PublicKey)]
			if other == p.name || other == "" {
				continue
			}
			t0 := time.Now()
			ans, err := p.node.Signal(ctx, rec.Relays[0], rec.PublicKey, []byte(p.name))
			if err != nil {
				return fmt.Errorf("%s -> %s: %w", p.name, other, err)
			}
			say("        %s -> %s through relay %s: %q (%v)", p.name, other, rec.Relays[0], ans, time.Since(t0).Round(time.Microsecond))
		}
	}
	nw.Close()
	say("all nodes shut down cleanly")
	fmt.Println("\nNext steps for the product (Noise-encrypted connections through NATs, the replicated")
	fmt.Println("database) land in later issues; see the README for what exists today.")
	return nil
}

func shortKey(priv ed25519.PrivateKey) string {
	return hex.EncodeToString(priv.Public().(ed25519.PublicKey)[:6])
}
