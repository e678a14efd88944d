package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/swarmdb/swarmdb/node"
	"github.com/swarmdb/swarmdb/secure"
	"github.com/swarmdb/swarmdb/swarm"
)

// Exit codes of `swarmdb node`.
const (
	nodeExitOK    = 0 // stopped by SIGINT or SIGTERM, cleanly
	nodeExitError = 1 // could not start (data dir, identity, sockets), or an unclean stop
	nodeExitUsage = 2
)

// Timeouts of `swarmdb node`.
const (
	// nodeStartTimeout bounds Start: opening the store, the first DHT
	// bootstrap (the swarm gives up after 10 s and retries later) and the
	// listeners.
	nodeStartTimeout = 30 * time.Second
	// natReportTimeout bounds the wait for the first NAT measurement, which
	// is reported in its own "nat" event when it lands after "ready".
	natReportTimeout = 30 * time.Second
	// natPollInterval is how often the node is asked for that first
	// measurement (the swarm has no hook for it).
	natPollInterval = 250 * time.Millisecond
	// metricsShutdownTimeout bounds the metrics server's graceful stop.
	metricsShutdownTimeout = 2 * time.Second
)

func runNode(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if code := nodeMain(ctx, args, os.Stdout, os.Stderr); code != nodeExitOK {
		os.Exit(code)
	}
	return nil
}

// nodeMain runs a node until ctx ends and returns the exit code. Events go
// to stdout (one JSON object per line with --json, a line of text without);
// logs go to stderr.
func nodeMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: swarmdb node --topic TOPIC [flags]")
		fmt.Fprintln(stderr, "\nRuns a swarmdb node: joins TOPIC on the DHT (--bootstrap) or on the LAN only (none given),")
		fmt.Fprintln(stderr, "connects to its peers through NATs and replicates the database with them; ToolDb clients,")
		fmt.Fprintln(stderr, "browsers and `swarmdb put/get/watch` connect over WebSocket (--ws).")
		fmt.Fprintln(stderr, "Events on stdout (JSON lines with --json): ready, nat, peer_connected, peer_disconnected,")
		fmt.Fprintln(stderr, "error, stopped. Logs on stderr. Exit codes: 0 stopped by a signal, 1 error, 2 usage.\n\nflags:")
		fs.PrintDefaults()
	}
	topic := fs.String("topic", "", "topic to join (required); ToolDb clients must use the same topic")
	dataDir := fs.String("data", "./swarmdb-data", "data directory: identity.json (the node's keys) and the store")
	boot := fs.String("bootstrap", "", "comma-separated host:port of DHT bootstrap nodes; none means LAN discovery only")
	listen := fs.String("listen", "0.0.0.0:0", "UDP address of the node's socket (DHT, STUN, hole punching, sessions)")
	ws := fs.String("ws", "127.0.0.1:9000", `WebSocket address for ToolDb clients and browsers ("off" for none; ":9000" for every interface)`)
	origins := fs.String("origin", "", "comma-separated browser origins the WebSocket accepts (host patterns, or scheme://host); none means any")
	server := fs.Bool("server", false, "announce the topic (accept connections); with neither --server nor --client, both")
	client := fs.Bool("client", false, "look the topic up and dial its peers; with neither --server nor --client, both")
	mode := fs.String("mode", "", `"server", "client" or "both" (instead of --server/--client)`)
	metricsAddr := fs.String("metrics", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9100)")
	keepLoopback := fs.Bool("loopback", false, "keep loopback ICE candidates (several nodes on one host, tests)")
	noLAN := fs.Bool("no-lan", false, "turn LAN discovery (mDNS) off")
	maxPeers := fs.Int("max-peers", swarm.DefaultMaxPeers, "most swarm connections at once; a larger swarm stays one network through the membership protocol")
	asJSON := fs.Bool("json", false, "print events as one JSON object per line on stdout; logs as JSON on stderr")
	verbose := fs.Bool("v", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nodeExitOK
		}
		return nodeExitUsage
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "swarmdb node: "+format+"\n", a...)
		return nodeExitUsage
	}
	if fs.NArg() != 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}
	if *topic == "" {
		return usageErr("--topic is required")
	}
	if *maxPeers < 1 {
		return usageErr("--max-peers %d: want at least 1", *maxPeers)
	}
	bootstrap, err := parseAddrList(*boot)
	if err != nil {
		return usageErr("%v", err)
	}
	switch *mode {
	case "":
	case "server":
		*server, *client = true, false
	case "client":
		*server, *client = false, true
	case "both":
		*server, *client = true, true
	default:
		return usageErr("--mode %q: want server, client or both", *mode)
	}
	if *ws == "off" {
		*ws = ""
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logOpts := &slog.HandlerOptions{Level: level}
	log := slog.New(slog.NewTextHandler(stderr, logOpts))
	if *asJSON {
		log = slog.New(slog.NewJSONHandler(stderr, logOpts))
	}
	out := &syncEvents{ev: eventWriter{json: *asJSON, w: stdout}}
	fail := func(reason string, err error) int {
		out.emit("error", fmt.Sprintf("error (%s): %v", reason, err), map[string]any{"reason": reason, "error": err.Error()})
		return nodeExitError
	}

	conns := newConnMetrics()
	cfg := node.Config{
		Topic: *topic, DataDir: *dataDir, ListenAddr: *listen, Bootstrap: bootstrap,
		WebSocketAddr: *ws, AllowedOrigins: splitList(*origins),
		Server: *server, Client: *client, KeepLoopback: *keepLoopback, DisableLAN: *noLAN,
		MaxPeers: *maxPeers, Logger: log,
		OnPeerConnect: func(e node.PeerEvent) {
			conns.observe(e)
			peer := hex.EncodeToString(e.PublicKey)
			ms := e.ConnectTime.Seconds() * 1000
			out.emit("peer_connected", fmt.Sprintf("peer %s connected (%s, %s) in %.1f ms", peer[:16], e.Path, e.Role, ms),
				map[string]any{"peer": peer, "path": string(e.Path), "role": e.Role, "connect_ms": ms})
		},
		OnPeerDisconnect: func(e node.PeerEvent) {
			peer := hex.EncodeToString(e.PublicKey)
			reason := disconnectReason(e.Err)
			fields := map[string]any{"peer": peer, "path": string(e.Path), "role": e.Role, "reason": reason}
			human := fmt.Sprintf("peer %s disconnected (%s)", peer[:16], reason)
			if e.Err != nil {
				fields["error"] = e.Err.Error()
				human += ": " + e.Err.Error()
			}
			out.emit("peer_disconnected", human, fields)
		},
	}
	nd, err := node.New(cfg)
	if err != nil {
		if errors.Is(err, node.ErrConfig) {
			return usageErr("%v", err)
		}
		return fail("identity", err)
	}
	var metricsLn net.Listener
	if *metricsAddr != "" {
		// Listen before Start so a taken port fails fast, before joining.
		if metricsLn, err = net.Listen("tcp", *metricsAddr); err != nil {
			return fail("metrics", err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, nodeStartTimeout)
	err = nd.Start(sctx)
	cancel()
	if err != nil {
		if metricsLn != nil {
			metricsLn.Close()
		}
		if ctx.Err() != nil {
			out.emit("stopped", "interrupted while starting", map[string]any{"reason": "signal"})
			return nodeExitOK
		}
		return fail("start", err)
	}
	started := time.Now()
	var wg sync.WaitGroup
	var metricsSrv *http.Server
	if metricsLn != nil {
		metricsSrv = &http.Server{Handler: metricsHandler(nd, conns), ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := metricsSrv.Serve(metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				out.emit("error", "metrics server stopped: "+err.Error(), map[string]any{"reason": "metrics", "error": err.Error()})
			}
		}()
	}

	out.emit("ready", readyHuman(nd, *topic, bootstrap, metricsLn), readyFields(nd, *topic, *dataDir, bootstrap, metricsLn))
	if len(bootstrap) > 0 && nd.NAT().Class == "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reportNAT(ctx, nd, out)
		}()
	}

	<-ctx.Done()
	if metricsSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
		_ = metricsSrv.Shutdown(sctx)
		cancel()
	}
	wg.Wait()
	st := nd.Stats()
	cerr := nd.Close()
	fields := map[string]any{"reason": "signal", "uptime_s": time.Since(started).Seconds(),
		"records_accepted": st.Store.Accepted, "messages_in": st.Bridge.MessagesIn}
	if cerr != nil {
		fields["error"] = cerr.Error()
		out.emit("stopped", "stopped with an error: "+cerr.Error(), fields)
		return nodeExitError
	}
	out.emit("stopped", "stopped cleanly", fields)
	return nodeExitOK
}

// syncEvents serialises event lines: peer events come from the swarm's
// goroutine, the rest from nodeMain's.
type syncEvents struct {
	mu sync.Mutex
	ev eventWriter
}

func (s *syncEvents) emit(event, human string, fields map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ev.emit(event, human, fields)
}

func readyFields(nd *node.Node, topic, dataDir string, bootstrap []netip.AddrPort, metricsLn net.Listener) map[string]any {
	f := map[string]any{
		"public_key": hex.EncodeToString(nd.PublicKey()),
		"address":    nd.Address(),
		"topic":      topic,
		"data":       dataDir,
		"udp":        nd.LocalAddr().String(),
		"ws":         "",
		"lan_only":   len(bootstrap) == 0,
		"nat":        natClass(nd, bootstrap),
	}
	if a := nd.WebSocketAddr(); a != nil {
		f["ws"] = "ws://" + a.String()
	}
	if metricsLn != nil {
		f["metrics"] = "http://" + metricsLn.Addr().String() + "/metrics"
	}
	return f
}

func readyHuman(nd *node.Node, topic string, bootstrap []netip.AddrPort, metricsLn net.Listener) string {
	var b strings.Builder
	fmt.Fprintf(&b, "swarmdb node ready on topic %q\n", topic)
	fmt.Fprintf(&b, "  public key  %s\n", hex.EncodeToString(nd.PublicKey()))
	fmt.Fprintf(&b, "  ToolDb addr %s\n", nd.Address())
	fmt.Fprintf(&b, "  udp         %s\n", nd.LocalAddr())
	if a := nd.WebSocketAddr(); a != nil {
		fmt.Fprintf(&b, "  websocket   ws://%s\n", a)
	} else {
		fmt.Fprintf(&b, "  websocket   off\n")
	}
	if metricsLn != nil {
		fmt.Fprintf(&b, "  metrics     http://%s/metrics\n", metricsLn.Addr())
	}
	if len(bootstrap) == 0 {
		fmt.Fprintf(&b, "  LAN only: no --bootstrap nodes, peers are found on the local network")
	} else {
		fmt.Fprintf(&b, "  nat         %s", natClass(nd, bootstrap))
	}
	return b.String()
}

// natClass is the node's NAT class for the ready event: "lan-only" without
// a DHT to measure against, "measuring" until the first report.
func natClass(nd *node.Node, bootstrap []netip.AddrPort) string {
	if len(bootstrap) == 0 {
		return "lan-only"
	}
	if c := nd.NAT().Class; c != "" {
		return string(c)
	}
	return "measuring"
}

// reportNAT emits a "nat" event once the first measurement lands.
func reportNAT(ctx context.Context, nd *node.Node, out *syncEvents) {
	ctx, cancel := context.WithTimeout(ctx, natReportTimeout)
	defer cancel()
	t := time.NewTicker(natPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r := nd.NAT()
		if r.Class == "" {
			continue
		}
		out.emit("nat", fmt.Sprintf("NAT: %s (public %s, mapping %s, filtering %s)", r.Class, r.PublicAddr, r.Mapping, r.Filtering),
			map[string]any{"nat": string(r.Class), "public_addr": r.PublicAddr.String(), "mapping": r.Mapping.String(), "filtering": r.Filtering.String()})
		return
	}
}

// disconnectReason names why a swarm connection ended, for the
// peer_disconnected event.
func disconnectReason(err error) string {
	switch {
	case err == nil, errors.Is(err, secure.ErrSessionClosed):
		return "closed"
	case errors.Is(err, swarm.ErrClosed):
		return "shutdown"
	case errors.Is(err, secure.ErrRemoteClosed):
		return "remote_closed"
	case errors.Is(err, secure.ErrPeerDead):
		return "timeout"
	case errors.Is(err, swarm.ErrDuplicate):
		return "duplicate"
	case errors.Is(err, swarm.ErrDead):
		return "dead_after_network_change"
	case errors.Is(err, swarm.ErrStale):
		return "silent"
	case errors.Is(err, swarm.ErrDemoted):
		return "demoted"
	case errors.Is(err, swarm.ErrBanned):
		return "banned"
	case errors.Is(err, swarm.ErrFirewalled):
		return "firewall"
	}
	return "error"
}

// splitList splits a comma-separated flag value, dropping empty entries.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
