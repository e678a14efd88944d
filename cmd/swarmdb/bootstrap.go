package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/swarmdb/swarmdb/dht"
)

// DefaultPort is the DHT port public nodes listen on by convention (the
// same number HyperDHT uses, so firewall rules read alike).
const DefaultPort = 49737

func runBootstrap(args []string) error {
	fs := flag.NewFlagSet("bootstrap", flag.ContinueOnError)
	listen := fs.String("listen", fmt.Sprintf("0.0.0.0:%d", DefaultPort), "UDP address to listen on")
	boot := fs.String("bootstrap", "", "comma-separated host:port of other bootstrap nodes")
	publicIP := fs.String("public-ip", "", "this node's public IP, when it cannot be learned (listening on 0.0.0.0 with no other bootstrap node)")
	asJSON := fs.Bool("json", false, "print one JSON event per line on stdout")
	verbose := fs.Bool("v", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	bootstrap, err := parseAddrList(*boot)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := newLogger(*asJSON, level)
	cfg := dht.Config{ListenAddr: *listen, Bootstrap: bootstrap, Mode: dht.ModePersistent, Logger: log}
	if *publicIP != "" {
		ip, err := netip.ParseAddr(*publicIP)
		if err != nil {
			return fmt.Errorf("--public-ip: %w", err)
		}
		la, err := netip.ParseAddrPort(*listen)
		if err != nil {
			return fmt.Errorf("--listen must be ip:port with --public-ip: %w", err)
		}
		cfg.PublicAddr = netip.AddrPortFrom(ip, la.Port())
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	node := dht.New(cfg)
	if err := node.Start(); err != nil {
		return err
	}
	defer node.Close()
	if len(bootstrap) > 0 {
		bctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := node.Bootstrap(bctx)
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			// A bootstrap node must come up even when its peers are down:
			// they will find it when they return.
			log.Warn("bootstrap peers did not answer; serving anyway", "err", err)
		}
	}
	out := eventWriter{json: *asJSON, w: os.Stdout}
	st := node.Stats()
	id := ""
	if st.Persistent {
		id = st.ID.String()
	} else {
		log.Warn("public address unknown: the node id is learned from the first request (pass --public-ip to fix it now)")
	}
	out.emit("ready", fmt.Sprintf("swarmdb bootstrap node listening on %s (public %s)\nnode id %s", st.LocalAddr, st.PublicAddr, id),
		map[string]any{"addr": st.LocalAddr.String(), "public_addr": st.PublicAddr.String(), "id": id})

	<-ctx.Done()
	st = node.Stats()
	log.Info("shutting down", "requests", st.RequestsIn, "records", st.Records, "routing_table", st.RoutingTable)
	out.emit("stopped", "stopped", map[string]any{"requests": st.RequestsIn})
	return nil
}
