// Command hold joins a topic with the swarm package and holds every
// connection it makes or accepts open and idle, until SIGTERM or SIGINT. The
// bench's resources part measures a server's memory per connection with it:
// `swarmdb pipe --server` accepts one connection, and a Go program that
// embeds swarmdb holds its peers through swarm, as a Hyperswarm program does
// through Hyperswarm.
//
//	hold [--server] --bootstrap H:P,... [--json] TOPIC
//
// Events on stderr, one JSON object per line, as `swarmdb pipe --json`
// writes them: "ready" once joined (a server: announced), then "connection"
// for each peer with connect_ms (from the join) and path.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/swarm"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hold:", err)
		os.Exit(1)
	}
}

func run() error {
	server := flag.Bool("server", false, "announce TOPIC and accept connections (default: look it up and dial)")
	bootstrap := flag.String("bootstrap", "", "comma-separated host:port of DHT nodes (required)")
	flag.Bool("json", true, "accepted for `pipe` compatibility; events are always JSON")
	flag.Parse()
	if flag.NArg() != 1 || *bootstrap == "" {
		return errors.New("usage: hold [--server] --bootstrap H:P,... TOPIC")
	}
	var boot []netip.AddrPort
	for _, s := range strings.Split(*bootstrap, ",") {
		a, err := netip.ParseAddrPort(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("--bootstrap: %w", err)
		}
		boot = append(boot, a)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	events := json.NewEncoder(os.Stderr)
	var joined time.Time
	sw, err := swarm.New(swarm.Config{
		ListenAddr:   "127.0.0.1:0",
		Bootstrap:    boot,
		DHT:          dht.Config{Mode: dht.ModeEphemeral}, // as `swarmdb pipe`: no routing for others
		DisableLAN:   true,                                // no multicast outside a lab namespace
		KeepLoopback: true,                                // every peer is on 127.0.0.1
		// OnConnection runs on one goroutine, in order: the encoder needs no lock.
		OnConnection: func(c *swarm.Conn, info swarm.PeerInfo) {
			_ = events.Encode(map[string]any{
				"event": "connection", "peer": hex.EncodeToString(info.PublicKey),
				"path": string(info.Path), "remote_addr": info.Remote.String(),
				"connect_ms": time.Since(joined).Milliseconds(),
			})
		},
	})
	if err != nil {
		return err
	}
	defer sw.Close()
	if err := sw.Start(ctx); err != nil {
		return err
	}
	joined = time.Now()
	d, err := sw.Join(flag.Arg(0), swarm.JoinOptions{Server: *server, Client: !*server})
	if err != nil {
		return err
	}
	if *server {
		if err := d.Flushed(ctx); err != nil {
			return fmt.Errorf("announce: %w", err)
		}
	}
	_ = events.Encode(map[string]any{"event": "ready", "public_key": hex.EncodeToString(sw.PublicKey()), "server": *server})
	<-ctx.Done()
	return nil
}
