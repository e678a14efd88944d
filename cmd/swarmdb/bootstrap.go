package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
)

// DefaultPort is the DHT port public nodes listen on by convention (the
// same number HyperDHT uses, so firewall rules read alike).
const DefaultPort = 49737

func runBootstrap(args []string) error {
	fs := flag.NewFlagSet("bootstrap", flag.ContinueOnError)
	listen := fs.String("listen", fmt.Sprintf("0.0.0.0:%d", DefaultPort), "UDP address to listen on")
	boot := fs.String("bootstrap", "", "comma-separated host:port of other bootstrap nodes")
	publicIP := fs.String("public-ip", "", "this node's public IP, when it cannot be learned (listening on 0.0.0.0 with no other bootstrap node)")
	turnSpec := fs.String("turn", "auto", `TURN relay address: "auto" (the DHT IP, DHT port+1), "off", or [ip]:port`)
	turnPrivate := fs.Bool("turn-private", false, "let the TURN relay reach private and loopback peers (LAN-only and test networks)")
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
	turnListen, err := turnListenAddr(*turnSpec, *listen)
	if err != nil {
		return err
	}
	var relay atomic.Pointer[holepunch.TURNServer]
	cfg := dht.Config{ListenAddr: *listen, Bootstrap: bootstrap, Mode: dht.ModePersistent, Logger: log,
		OnTURN: turnOffers(&relay)}
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
	turnAddr, turnHuman := "", "TURN relay off"
	if turnListen != "" {
		srv, err := startTURNRelay(turnListen, st.PublicAddr.Addr(), *turnPrivate, log)
		switch {
		case errors.Is(err, holepunch.ErrTURNNoPublicIP):
			// A relay must advertise an address peers can reach; serve the
			// DHT anyway, as without bootstrap peers.
			log.Warn("TURN relay off: public IP unknown (pass --public-ip)")
		case err != nil:
			return err
		default:
			defer srv.Close()
			relay.Store(srv)
			turnAddr, turnHuman = srv.Addr().String(), "TURN relay on "+srv.Addr().String()
		}
	}
	out.emit("ready", fmt.Sprintf("swarmdb bootstrap node listening on %s (public %s)\nnode id %s\n%s", st.LocalAddr, st.PublicAddr, id, turnHuman),
		map[string]any{"addr": st.LocalAddr.String(), "public_addr": st.PublicAddr.String(), "id": id, "turn": turnAddr})

	<-ctx.Done()
	st = node.Stats()
	log.Info("shutting down", "requests", st.RequestsIn, "records", st.Records, "routing_table", st.RoutingTable)
	stopped := map[string]any{"requests": st.RequestsIn}
	if srv := relay.Load(); srv != nil {
		stopped["turn_allocations"] = srv.Stats().Allocated
	}
	out.emit("stopped", "stopped", stopped)
	return nil
}

// turnListenAddr turns the --turn flag into the relay's listen address, or
// "" for off. "auto" is the DHT listen IP with the DHT port+1 (port 0, a
// random port, when the DHT port is 0); ":port" listens on every interface.
func turnListenAddr(spec, dhtListen string) (string, error) {
	switch spec {
	case "off", "":
		return "", nil
	case "auto":
		host, port, err := net.SplitHostPort(dhtListen)
		if err != nil {
			return "", fmt.Errorf("--turn auto: --listen %q: %w", dhtListen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65534 {
			return "", fmt.Errorf("--turn auto: --listen port %q has no next port (pass --turn [ip]:port)", port)
		}
		if p != 0 {
			p++
		}
		if host == "" {
			host = "0.0.0.0"
		}
		return net.JoinHostPort(host, strconv.Itoa(p)), nil
	}
	host, port, err := net.SplitHostPort(spec)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err == nil && host != "" {
		_, err = netip.ParseAddr(host)
	}
	if err != nil {
		return "", fmt.Errorf(`--turn %q: want "auto", "off" or [ip]:port`, spec)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return net.JoinHostPort(host, port), nil
}

// startTURNRelay starts the TURN relay on listen, advertised at public (the
// DHT node's public address) or else at the listen IP (ErrTURNNoPublicIP
// when that is unspecified). Credentials are issued only through the DHT (turnOffers),
// with a random per-process secret.
func startTURNRelay(listen string, public netip.Addr, allowPrivate bool, log *slog.Logger) (*holepunch.TURNServer, error) {
	cfg := holepunch.TURNConfig{ListenAddr: listen, AllowPrivatePeers: allowPrivate, Logger: log}
	if public.IsValid() && !public.IsUnspecified() {
		cfg.PublicIP = public // behind a 1:1 NAT (cloud VMs) the listen IP is not it
	}
	srv := holepunch.NewTURNServer(cfg)
	if err := srv.Start(); err != nil {
		if errors.Is(err, holepunch.ErrTURNNoPublicIP) {
			return nil, err
		}
		return nil, fmt.Errorf("--turn: %w", err)
	}
	return srv, nil
}

// turnOffers is the DHT's OnTURN hook: a credential for the requester
// (tagged with its IP) on the relay, once the relay runs.
func turnOffers(relay *atomic.Pointer[holepunch.TURNServer]) dht.TURNHandler {
	return func(requester netip.AddrPort) (dht.TURNOffer, bool) {
		srv := relay.Load()
		if srv == nil {
			return dht.TURNOffer{}, false
		}
		user, pass, exp := srv.Credentials(requester.Addr().String())
		return dht.TURNOffer{Server: srv.Addr(), Username: user, Password: pass, Expires: exp}, true
	}
}
