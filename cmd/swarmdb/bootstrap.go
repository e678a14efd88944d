package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
)

// DefaultPort is the DHT port public nodes listen on by convention (the
// same number HyperDHT uses, so firewall rules read alike).
const DefaultPort = 49737

// bootstrapStartTimeout bounds the first contact with the other bootstrap
// nodes; a bootstrap node serves even when they do not answer.
const bootstrapStartTimeout = 15 * time.Second

const bootstrapAbout = `Runs a persistent public DHT node: other nodes bootstrap through it, it relays their
hole-punching signaling, answers STUN on its port and serves a TURN relay (DHT port + 1).
Its node id is derived from its public address: give --public-ip when it cannot learn it
(listening on 0.0.0.0 with no other --bootstrap node to tell it).
Events on stdout (JSON lines with --json): ready, stopped. Logs on stderr.
Exit codes: 0 stopped by SIGINT/SIGTERM, 1 error, 2 usage.`

func bootstrapMain(ctx context.Context, args []string, std stdio) int {
	f := newFlags("bootstrap", "", bootstrapAbout)
	listen := f.String("listen", fmt.Sprintf("0.0.0.0:%d", DefaultPort), "UDP address to listen on")
	var bootstrap []netip.AddrPort
	f.list(&bootstrap, "bootstrap", "comma-separated host:port of other bootstrap nodes")
	publicIP := f.String("public-ip", "", "this node's public IP, when it cannot be learned (listening on 0.0.0.0 with no other bootstrap node)")
	turnSpec := f.String("turn", "auto", `TURN relay address: "auto" (the DHT IP, DHT port+1), "off", or [ip]:port`)
	turnPrivate := f.Bool("turn-private", false, "let the TURN relay reach private and loopback peers (LAN-only and test networks)")
	asJSON := f.Bool("json", false, "print one JSON event per line on stdout")
	verbose := f.Bool("v", false, "debug logging")
	if _, code, ok := f.parse(args, 0, std); !ok {
		return code
	}
	if err := checkHostPort("listen", *listen); err != nil {
		return f.usageError(std, "%v", err)
	}
	turnListen, err := turnListenAddr(*turnSpec, *listen)
	if err != nil {
		return f.usageError(std, "%v", err)
	}
	var public netip.AddrPort
	if *publicIP != "" {
		ip, err := netip.ParseAddr(*publicIP)
		if err != nil {
			return f.usageError(std, "--public-ip %q: want an IP address", *publicIP)
		}
		la, err := netip.ParseAddrPort(*listen)
		if err != nil {
			return f.usageError(std, "--listen must be ip:port with --public-ip")
		}
		public = netip.AddrPortFrom(ip, la.Port())
	}
	if err := f.hosts.resolve(ctx); err != nil {
		return failed(std, "bootstrap", fmt.Errorf("--bootstrap: %w", err))
	}
	log := newLogger(std.err, *asJSON, logLevel(*verbose, slog.LevelInfo))
	if err := runBootstrap(ctx, bootstrapConfig{Listen: *listen, Bootstrap: bootstrap, PublicAddr: public,
		TURNListen: turnListen, TURNPrivate: *turnPrivate, Events: eventWriter{json: *asJSON, w: std.out}, Logger: log}); err != nil {
		return failed(std, "bootstrap", err)
	}
	return exitOK
}

// bootstrapConfig is one run of the bootstrap command.
type bootstrapConfig struct {
	Listen      string
	Bootstrap   []netip.AddrPort
	PublicAddr  netip.AddrPort // zero: learned from other nodes
	TURNListen  string         // "" means no relay
	TURNPrivate bool
	Events      eventWriter
	Logger      *slog.Logger
}

// runBootstrap serves until ctx ends.
func runBootstrap(ctx context.Context, cfg bootstrapConfig) error {
	log := cfg.Logger
	var relay atomic.Pointer[holepunch.TURNServer]
	node := dht.New(dht.Config{ListenAddr: cfg.Listen, Bootstrap: cfg.Bootstrap, Mode: dht.ModePersistent, Logger: log,
		OnTURN: turnOffers(&relay), PublicAddr: cfg.PublicAddr})
	if err := node.Start(); err != nil {
		return err
	}
	defer node.Close()
	if len(cfg.Bootstrap) > 0 {
		bctx, cancel := context.WithTimeout(ctx, bootstrapStartTimeout)
		err := node.Bootstrap(bctx)
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			// A bootstrap node must come up even when its peers are down:
			// they will find it when they return.
			log.Warn("bootstrap peers did not answer; serving anyway", "err", err)
		}
	}
	st := node.Stats()
	id, idHuman, public, publicHuman := "", "", "", ""
	if st.Persistent {
		id, idHuman = st.ID.String(), st.ID.String()
	} else {
		idHuman = "not yet: it is derived from the public address"
	}
	if st.PublicAddr.IsValid() {
		public, publicHuman = st.PublicAddr.String(), st.PublicAddr.String()
	} else {
		publicHuman = "unknown until another node reports it (pass --public-ip to set it now)"
		log.Warn("public address unknown: the node id is learned from the first request (pass --public-ip to fix it now)")
	}
	turnAddr, turnHuman := "", "off"
	if cfg.TURNListen != "" {
		srv, err := startTURNRelay(cfg.TURNListen, st.PublicAddr.Addr(), cfg.TURNPrivate, log)
		switch {
		case errors.Is(err, holepunch.ErrTURNNoPublicIP):
			// A relay must advertise an address peers can reach; serve the
			// DHT anyway, as without bootstrap peers.
			log.Warn("TURN relay off: public IP unknown (pass --public-ip)")
			turnHuman = "off: public IP unknown (pass --public-ip)"
		case err != nil:
			return err
		default:
			defer srv.Close()
			relay.Store(srv)
			turnAddr, turnHuman = srv.Addr().String(), srv.Addr().String()
		}
	}
	cfg.Events.emit("ready", fmt.Sprintf("swarmdb bootstrap node ready\n  listening   %s (udp: DHT, STUN, hole-punching signaling)\n  public      %s\n  node id     %s\n  TURN relay  %s",
		st.LocalAddr, publicHuman, idHuman, turnHuman),
		map[string]any{"addr": st.LocalAddr.String(), "public_addr": public, "id": id, "turn": turnAddr})

	<-ctx.Done()
	st = node.Stats()
	log.Info("shutting down", "requests", st.RequestsIn, "records", st.Records, "routing_table", st.RoutingTable)
	stopped := map[string]any{"requests": st.RequestsIn}
	if srv := relay.Load(); srv != nil {
		stopped["turn_allocations"] = srv.Stats().Allocated
	}
	cfg.Events.emit("stopped", "stopped", stopped)
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
