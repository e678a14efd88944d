package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"

	"github.com/swarmdb/swarmdb/node"
)

// DefaultPort is the DHT port public nodes listen on by convention (the
// same number HyperDHT uses, so firewall rules read alike).
const DefaultPort = 49737

const bootstrapAbout = `Runs a persistent public DHT node: other nodes bootstrap through it, it relays their
hole-punching signaling, answers STUN on its port and serves a TURN relay (DHT port + 1).
Its node id is derived from its public address: give --public-ip when it cannot learn it
(listening on 0.0.0.0 with no other --bootstrap node to tell it). With --mainline or --public
it announces itself on the BitTorrent mainline DHT under a fixed name, so that nodes find it
with no address given (and it finds other bootstrap nodes there); --data keeps the DHT nodes
it knew for the next start.
Events on stdout (JSON lines with --json): ready, mainline_peer, stopped. Logs on stderr.
Exit codes: 0 stopped by SIGINT/SIGTERM, 1 error, 2 usage.`

func bootstrapMain(ctx context.Context, args []string, std stdio) int {
	f := newFlags("bootstrap", "", bootstrapAbout)
	listen := f.String("listen", fmt.Sprintf("0.0.0.0:%d", DefaultPort), "UDP address to listen on")
	listen6 := listen6Flag(f)
	var bootstrap []netip.AddrPort
	f.list(&bootstrap, "bootstrap", "comma-separated host:port of other bootstrap nodes")
	publicIP := f.String("public-ip", "", "this node's public IP, when it cannot be learned (listening on 0.0.0.0 with no other bootstrap node)")
	turnSpec := f.String("turn", "auto", `TURN relay address: "auto" (the DHT IP, DHT port+1), "off", or [ip]:port`)
	turnPrivate := f.Bool("turn-private", false, "let the TURN relay reach private and loopback peers (LAN-only and test networks)")
	dataDir := f.String("data", "", "directory to keep the DHT nodes it knew (nodes.json) across restarts; none means none kept")
	ml := addMainlineFlags(f)
	asJSON := f.Bool("json", false, "print one JSON event per line on stdout")
	verbose := f.Bool("v", false, "debug logging")
	if _, code, ok := f.parse(args, 0, std); !ok {
		return code
	}
	if err := checkHostPort("listen", *listen); err != nil {
		return f.usageError(std, "%v", err)
	}
	if err := checkListen6(*listen6); err != nil {
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
	routers, err := ml.routers()
	if err != nil {
		return f.usageError(std, "%v", err)
	}
	if err := f.hosts.resolve(ctx); err != nil {
		return failed(std, "bootstrap", fmt.Errorf("--bootstrap: %w", err))
	}
	log := newLogger(std.err, *asJSON, logLevel(*verbose, slog.LevelInfo))
	if *ml.public {
		log.Warn("joining the public BitTorrent mainline DHT: this node's IP address is published there")
	}
	if err := runBootstrap(ctx, bootstrapConfig{BootstrapConfig: node.BootstrapConfig{
		ListenAddr: *listen, ListenAddr6: *listen6, Bootstrap: bootstrap, PublicAddr: public, TURNAddr: turnListen, TURNPrivate: *turnPrivate,
		Mainline: routers, DataDir: *dataDir, Logger: log,
	}, Events: &syncEvents{ev: eventWriter{json: *asJSON, w: std.out}}}); err != nil {
		return failed(std, "bootstrap", err)
	}
	return exitOK
}

// bootstrapConfig is one run of the bootstrap command.
type bootstrapConfig struct {
	node.BootstrapConfig
	Events *syncEvents
}

// runBootstrap serves until ctx ends.
func runBootstrap(ctx context.Context, cfg bootstrapConfig) error {
	cfg.OnMainlinePeer = mainlinePeerEvent(cfg.Events)
	b := node.NewBootstrap(cfg.BootstrapConfig)
	if err := b.Start(ctx); err != nil {
		return err
	}
	defer b.Close()
	st := b.Status()
	if !st.PublicAddr.IsValid() {
		cfg.Logger.Warn("public address unknown: the node id is learned from the first request (pass --public-ip to fix it now)")
	}
	ms, mlOn := b.MainlineStats()
	human, ready := bootstrapReady(st, ms, mlOn)
	cfg.Events.emit("ready", human, ready)

	<-ctx.Done()
	st = b.Status()
	cfg.Logger.Info("shutting down", "requests", st.RequestsIn, "records", st.Records, "routing_table", st.RoutingTable)
	stopped := map[string]any{"requests": st.RequestsIn}
	if st.TURNAddr.IsValid() {
		stopped["turn_allocations"] = st.TURNAllocated
	}
	cfg.Events.emit("stopped", "stopped", stopped)
	return nil
}

// bootstrapReady is the ready event of a bootstrap node: its human text
// and its fields.
func bootstrapReady(st node.BootstrapStatus, ms node.MainlineStats, mlOn bool) (string, map[string]any) {
	idHuman, public, publicHuman := st.ID, "", "unknown until another node reports it (pass --public-ip to set it now)"
	if st.ID == "" {
		idHuman = "not yet: it is derived from the public address"
	}
	if st.PublicAddr.IsValid() {
		public, publicHuman = st.PublicAddr.String(), st.PublicAddr.String()
	}
	turnAddr, turnHuman := "", "off"
	switch {
	case st.TURNAddr.IsValid():
		turnAddr, turnHuman = st.TURNAddr.String(), st.TURNAddr.String()
	case errors.Is(st.TURNOff, node.ErrTURNNoPublicIP):
		turnHuman = "off: public IP unknown (pass --public-ip)"
	}
	mainlineHuman := "off"
	if mlOn {
		mainlineHuman = fmt.Sprintf("on (%d routers and cached nodes to start from)", ms.Routers)
	}
	ready := map[string]any{"addr": st.LocalAddr.String(), "public_addr": public, "id": st.ID, "turn": turnAddr, "mainline": mainlineReady(ms, mlOn)}
	human := fmt.Sprintf("swarmdb bootstrap node ready\n  listening   %s (udp: DHT, STUN, hole-punching signaling)\n%s  public      %s\n  node id     %s\n  TURN relay  %s\n  mainline    %s",
		st.LocalAddr, bootstrapIPv6(st, ready), publicHuman, idHuman, turnHuman, mainlineHuman)
	return human, ready
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
