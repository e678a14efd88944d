package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/swarmdb/swarmdb/node"
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
	// metricsShutdownTimeout bounds the metrics server's graceful stop.
	metricsShutdownTimeout = 2 * time.Second
)

// nodeAbout is node's usage text.
const nodeAbout = `Runs a swarmdb node: joins TOPIC on the DHT (--bootstrap, or found on the BitTorrent mainline
DHT with --mainline or --public) or on the LAN only (none given), connects to its peers through
NATs and replicates the database with them; ToolDb clients, browsers and swarmdb put/get/watch
connect over WebSocket (--ws). With --mainline or --public it also finds (and is found by) ToolDb
servers and clients that use discovery-channel on the same topic.
It asks its router to forward its UDP port (PCP, NAT-PMP or UPnP-IGD; --no-portmap turns this
off) and, with --map-ws, the WebSocket's TCP port too, so that a node behind a home router
becomes reachable; the ready event reports the mapping ("portmap").
Events on stdout (JSON lines with --json): ready, nat, peer_connected, peer_disconnected,
mainline_peer, error, stopped. Logs and errors on stderr.
Exit codes: 0 stopped by SIGINT/SIGTERM, 1 error (could not start, unclean stop), 2 usage.`

// nodeMain runs a node until ctx ends and returns the exit code.
func nodeMain(ctx context.Context, args []string, std stdio) int {
	nf := newNodeFlags()
	if code, ok := nf.parse(ctx, args, std); !ok {
		return code
	}
	r := newNodeRun(nf, std)
	nd, err := node.New(r.cfg)
	if err != nil {
		if errors.Is(err, node.ErrConfig) {
			return nf.f.usageError(std, "%v", err)
		}
		return r.fail("identity", err)
	}
	r.nd = nd
	if code, ok := r.start(ctx); !ok {
		return code
	}
	r.out.emit("ready", readyHuman(nd, r.cfg.Topic, r.lanOnly, r.metricsLn), readyFields(nd, r.cfg.Topic, r.cfg.DataDir, r.lanOnly, r.metricsLn))
	r.watchNAT(ctx)
	<-ctx.Done()
	return r.stop()
}

// nodeFlags are node's flags; most land in cfg directly.
type nodeFlags struct {
	f   *flags
	cfg node.Config
	ml  mainlineFlags

	// The flags that are not cfg's fields as they are.
	listen6, ws, origins, mode, metricsAddr *string
	asJSON, verbose                         *bool
}

func newNodeFlags() *nodeFlags {
	f := newFlags("node", "", nodeAbout)
	nf := &nodeFlags{f: f}
	cfg := &nf.cfg
	f.StringVar(&cfg.Topic, "topic", "", "topic to join (required); ToolDb clients must use the same topic")
	f.StringVar(&cfg.DataDir, "data", "./swarmdb-data", "data directory: identity.json (the node's keys), the store (db/) and the lock")
	f.list(&cfg.Bootstrap, "bootstrap", "comma-separated host:port of DHT bootstrap nodes; none (and no --mainline or --public) means LAN discovery only")
	nf.ml = addMainlineFlags(f)
	f.StringVar(&cfg.ListenAddr, "listen", "0.0.0.0:0", "UDP address of the node's socket (DHT, STUN, hole punching, sessions)")
	nf.listen6 = listen6Flag(f)
	nf.ws = f.String("ws", "127.0.0.1:9000", `WebSocket address for ToolDb clients and browsers: host:port, ":9000" (every interface), ws://host:port, or "off"`)
	nf.origins = f.String("origin", "", "comma-separated browser origins the WebSocket accepts (host patterns, or scheme://host); none means any")
	f.StringVar(&cfg.PublicWebSocketURL, "public-ws", "", "the URL browsers reach this node's WebSocket at from outside (ws://host:port or wss://host:port); announced on the DHT and listed in /peers.json")
	f.StringVar(&cfg.TLSCertFile, "tls-cert", "", "PEM certificate: serve HTTPS and WSS on --ws (read again when the file changes)")
	f.StringVar(&cfg.TLSKeyFile, "tls-key", "", "PEM private key of --tls-cert")
	f.BoolVar(&cfg.Server, "server", false, "announce the topic (accept connections); with neither --server nor --client, both")
	f.BoolVar(&cfg.Client, "client", false, "look the topic up and dial its peers; with neither --server nor --client, both")
	nf.mode = f.String("mode", "", `"server", "client" or "both" (instead of --server/--client)`)
	f.BoolVar(&cfg.RepairStore, "repair", false, "open a store whose write-ahead log is damaged: keep a copy of it, drop the writes after the damage (peers send back what they hold)")
	nf.metricsAddr = f.String("metrics", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9100)")
	f.BoolVar(&cfg.KeepLoopback, "loopback", false, "keep loopback ICE candidates (several nodes on one host, tests)")
	f.BoolVar(&cfg.DisableLAN, "no-lan", false, "turn LAN discovery (mDNS) off")
	f.IntVar(&cfg.MaxPeers, "max-peers", node.DefaultMaxPeers, "most swarm connections at once; a larger swarm stays one network through the membership protocol")
	f.BoolVar(&cfg.DisablePortMap, "no-portmap", false, "do not ask the router (PCP, NAT-PMP, UPnP-IGD) to forward the node's UDP port")
	f.BoolVar(&cfg.MapWebSocket, "map-ws", false, "also map the WebSocket's TCP port on the router and announce it there on the mainline DHT (--ws must listen on a LAN address, e.g. :9000)")
	nf.asJSON = f.Bool("json", false, "print events as one JSON object per line on stdout; logs as JSON on stderr")
	nf.verbose = f.Bool("v", false, "debug logging")
	return nf
}

// parse parses and checks the flags and resolves --bootstrap. It returns
// ok false with the exit code when the command must stop.
func (nf *nodeFlags) parse(ctx context.Context, args []string, std stdio) (code int, ok bool) {
	if _, code, ok := nf.f.parse(args, 0, std); !ok {
		return code, false
	}
	if err := nf.check(); err != nil {
		return nf.f.usageError(std, "%v", err), false
	}
	if err := nf.f.hosts.resolve(ctx); err != nil {
		return failed(std, "node", fmt.Errorf("--bootstrap: %w", err)), false
	}
	return exitOK, true
}

// check checks the flags, in the order usage errors are reported, and
// fills the rest of cfg.
func (nf *nodeFlags) check() error {
	cfg := &nf.cfg
	switch {
	case cfg.Topic == "":
		return errors.New("--topic is required")
	case cfg.MaxPeers < 1:
		return fmt.Errorf("--max-peers %d: want at least 1", cfg.MaxPeers)
	}
	if err := nf.checkMode(); err != nil {
		return err
	}
	var err error
	if cfg.WebSocketAddr, err = nodeWSListen(*nf.ws); err != nil {
		return err
	}
	if err := checkMapWS(*cfg); err != nil {
		return err
	}
	if err := checkHostPort("listen", cfg.ListenAddr); err != nil {
		return err
	}
	if cfg.ListenAddr6 = *nf.listen6; checkListen6(cfg.ListenAddr6) != nil {
		return checkListen6(cfg.ListenAddr6)
	}
	if *nf.metricsAddr != "" {
		if err := checkHostPort("metrics", *nf.metricsAddr); err != nil {
			return err
		}
	}
	cfg.AllowedOrigins = splitList(*nf.origins)
	cfg.Mainline, err = nf.ml.routers()
	return err
}

// checkMode applies --mode over --server and --client.
func (nf *nodeFlags) checkMode() error {
	switch *nf.mode {
	case "":
	case "server":
		nf.cfg.Server, nf.cfg.Client = true, false
	case "client":
		nf.cfg.Server, nf.cfg.Client = false, true
	case "both":
		nf.cfg.Server, nf.cfg.Client = true, true
	default:
		return fmt.Errorf("--mode %q: want server, client or both", *nf.mode)
	}
	return nil
}

// nodeRun is one run of a node: its config, events and metrics server.
type nodeRun struct {
	std         stdio
	asJSON      bool
	cfg         node.Config
	lanOnly     bool
	metricsAddr string
	out         *syncEvents
	conns       *connMetrics
	// natReports holds the first NAT report (node.Config.OnNATChange):
	// the one the "nat" event shows; later ones find it full.
	natReports chan node.NATReport

	nd         *node.Node
	started    time.Time
	metricsLn  net.Listener
	metricsSrv *http.Server
	wg         sync.WaitGroup // the metrics server and the NAT report
}

// newNodeRun sets up logging and the event hooks of cfg.
func newNodeRun(nf *nodeFlags, std stdio) *nodeRun {
	r := &nodeRun{std: std, asJSON: *nf.asJSON, cfg: nf.cfg, metricsAddr: *nf.metricsAddr,
		lanOnly: len(nf.cfg.Bootstrap) == 0 && len(nf.cfg.Mainline) == 0,
		out:     &syncEvents{ev: eventWriter{json: *nf.asJSON, w: std.out}}, conns: newConnMetrics()}
	r.cfg.Logger = newLogger(std.err, r.asJSON, logLevel(*nf.verbose, slog.LevelInfo))
	if *nf.ml.public {
		r.cfg.Logger.Warn("joining the public BitTorrent mainline DHT: this node's IP address is published there")
	}
	r.cfg.OnMainlinePeer = mainlinePeerEvent(r.out)
	r.natReports = make(chan node.NATReport, 1)
	r.cfg.OnNATChange = func(rep node.NATReport) {
		select {
		case r.natReports <- rep:
		default:
		}
	}
	r.cfg.OnPeerConnect = r.peerConnected
	r.cfg.OnPeerDisconnect = r.peerDisconnected
	return r
}

func (r *nodeRun) peerConnected(e node.PeerEvent) {
	r.conns.observe(e)
	peer := hex.EncodeToString(e.PublicKey)
	ms := e.ConnectTime.Seconds() * 1000
	r.out.emit("peer_connected", fmt.Sprintf("peer %s connected (%s over %s, %s) in %.1f ms", peer[:16], e.Path, familyOf(e.Remote), e.Role, ms),
		map[string]any{"peer": peer, "path": string(e.Path), "family": familyOf(e.Remote), "role": e.Role, "connect_ms": ms})
}

func (r *nodeRun) peerDisconnected(e node.PeerEvent) {
	peer := hex.EncodeToString(e.PublicKey)
	reason := e.Reason()
	fields := map[string]any{"peer": peer, "path": string(e.Path), "role": e.Role, "reason": reason}
	human := fmt.Sprintf("peer %s disconnected (%s)", peer[:16], reason)
	if e.Err != nil {
		fields["error"] = e.Err.Error()
		human += ": " + e.Err.Error()
	}
	r.out.emit("peer_disconnected", human, fields)
}

// report tells of an error: an event for --json readers (on stdout, with
// the other events), a line on stderr for people.
func (r *nodeRun) report(reason string, err error) {
	if r.asJSON {
		r.out.emit("error", "", map[string]any{"reason": reason, "error": err.Error()})
		return
	}
	failed(r.std, "node", err)
}

// fail reports why the node could not start and returns exitError.
func (r *nodeRun) fail(reason string, err error) int {
	if !r.asJSON {
		err = nodeStartError(reason, err)
	}
	r.report(reason, err)
	return exitError
}

// start opens the metrics listener (before Start, so that a taken port
// fails fast, before joining), starts the node and serves the metrics.
func (r *nodeRun) start(ctx context.Context) (code int, ok bool) {
	if r.metricsAddr != "" {
		ln, err := net.Listen("tcp", r.metricsAddr)
		if err != nil {
			return r.fail("metrics", err), false
		}
		r.metricsLn = ln
	}
	sctx, cancel := context.WithTimeout(ctx, nodeStartTimeout)
	err := r.nd.Start(sctx)
	cancel()
	if err != nil {
		if r.metricsLn != nil {
			r.metricsLn.Close()
		}
		if ctx.Err() != nil {
			r.out.emit("stopped", "interrupted while starting", map[string]any{"reason": "signal"})
			return exitOK, false
		}
		return r.fail("start", err), false
	}
	r.started = time.Now()
	r.serveMetrics()
	return exitOK, true
}

func (r *nodeRun) serveMetrics() {
	if r.metricsLn == nil {
		return
	}
	r.metricsSrv = &http.Server{Handler: metricsHandler(r.nd, r.conns), ReadHeaderTimeout: 10 * time.Second}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := r.metricsSrv.Serve(r.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.report("metrics", fmt.Errorf("metrics server stopped: %w", err))
		}
	}()
}

// watchNAT reports the first NAT measurement in a "nat" event when it was
// not ready for the ready event.
func (r *nodeRun) watchNAT(ctx context.Context) {
	if r.lanOnly || r.nd.NAT().Class != "" {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		reportNAT(ctx, r.natReports, r.out)
	}()
}

// stop stops the metrics server and the node, and reports how it went.
func (r *nodeRun) stop() int {
	if r.metricsSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
		_ = r.metricsSrv.Shutdown(sctx)
		cancel()
	}
	r.wg.Wait()
	st := r.nd.Stats()
	cerr := r.nd.Close()
	fields := map[string]any{"reason": "signal", "uptime_s": time.Since(r.started).Seconds(),
		"records_accepted": st.Store.Accepted, "messages_in": st.Bridge.MessagesIn}
	if cerr != nil {
		fields["error"] = cerr.Error()
		r.out.emit("stopped", "stopped with an error: "+cerr.Error(), fields)
		return exitError
	}
	r.out.emit("stopped", "stopped cleanly", fields)
	return exitOK
}

// checkMapWS refuses --map-ws where it cannot work: without port mapping,
// without a WebSocket, or with the WebSocket on loopback, where no router
// can forward to it.
func checkMapWS(cfg node.Config) error {
	if !cfg.MapWebSocket {
		return nil
	}
	switch {
	case cfg.DisablePortMap:
		return errors.New("--map-ws needs port mapping (drop --no-portmap)")
	case cfg.WebSocketAddr == "":
		return errors.New("--map-ws needs the WebSocket (--ws)")
	}
	host, _, err := net.SplitHostPort(cfg.WebSocketAddr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		return fmt.Errorf("--map-ws: the WebSocket listens on %s, which the router cannot forward to; listen on a LAN address (--ws :9000)", cfg.WebSocketAddr)
	}
	return nil
}

// nodeStartError says what went wrong for a person (after "swarmdb node: ",
// so without the node package's own "node: " prefix), and what to do where
// there is something to do.
func nodeStartError(reason string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "node: ")
	switch {
	case errors.Is(err, node.ErrWALCorrupt):
		msg += "\nNothing was changed. Start with --repair to keep a copy of the store and open what precedes the damage" +
			"\n(the node's peers send back the records they hold), or restore the data directory from a backup."
	case errors.Is(err, node.ErrStoreCorrupt):
		msg += "\nNothing was changed. Restore the data directory from a backup, or move its db/ away" +
			"\n(keep identity.json) and start: the node's peers send back the records they hold."
	case errors.Is(err, node.ErrDataDirInUse), errors.Is(err, node.ErrIdentity):
	default:
		msg = fmt.Sprintf("could not start (%s): %s", reason, msg)
	}
	return errors.New(msg)
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

func readyFields(nd *node.Node, topic, dataDir string, lanOnly bool, metricsLn net.Listener) map[string]any {
	f := map[string]any{
		"public_key": hex.EncodeToString(nd.PublicKey()),
		"address":    nd.Address(),
		"topic":      topic,
		"data":       dataDir,
		"udp":        nd.LocalAddr().String(),
		"ws":         "",
		"lan_only":   lanOnly,
		"nat":        natClass(nd, lanOnly),
	}
	ipv6Fields(nd, f)
	f["ws"] = nd.WebSocketURL()
	f["public_ws"] = nd.Status().PublicWebSocket
	ms, ok := nd.MainlineStats()
	f["mainline"] = mainlineReady(ms, ok)
	f["portmap"] = "off"
	if st, ok := nd.PortMap(); ok {
		f["portmap"] = st
	}
	if metricsLn != nil {
		f["metrics"] = "http://" + metricsLn.Addr().String() + "/metrics"
	}
	return f
}

func readyHuman(nd *node.Node, topic string, lanOnly bool, metricsLn net.Listener) string {
	var b strings.Builder
	fmt.Fprintf(&b, "swarmdb node ready on topic %q\n", topic)
	fmt.Fprintf(&b, "  public key  %s\n", hex.EncodeToString(nd.PublicKey()))
	fmt.Fprintf(&b, "  ToolDb addr %s\n", nd.Address())
	fmt.Fprintf(&b, "  udp         %s\n", nd.LocalAddr())
	b.WriteString(ipv6Human(nd))
	if u := nd.WebSocketURL(); u != "" {
		fmt.Fprintf(&b, "  websocket   %s (page: %s/)\n", u, strings.Replace(strings.Replace(u, "wss://", "https://", 1), "ws://", "http://", 1))
	} else {
		fmt.Fprintf(&b, "  websocket   off\n")
	}
	if metricsLn != nil {
		fmt.Fprintf(&b, "  metrics     http://%s/metrics\n", metricsLn.Addr())
	}
	if ms, ok := nd.MainlineStats(); ok {
		fmt.Fprintf(&b, "  mainline    on (%d routers and cached nodes to start from)\n", ms.Routers)
	}
	if st, ok := nd.PortMap(); ok {
		fmt.Fprintf(&b, "  portmap     %s\n", portMapLine(st))
	}
	if lanOnly {
		fmt.Fprintf(&b, "  LAN only: no --bootstrap nodes and no --mainline, peers are found on the local network")
	} else {
		fmt.Fprintf(&b, "  nat         %s", natClass(nd, lanOnly))
	}
	return b.String()
}

// natClass is the node's NAT class for the ready event: "lan-only" without
// a DHT to measure against, "measuring" until the first report.
func natClass(nd *node.Node, lanOnly bool) string {
	if lanOnly {
		return "lan-only"
	}
	if c := nd.NAT().Class; c != "" {
		return string(c)
	}
	return "measuring"
}

// reportNAT emits a "nat" event once the first measurement lands.
func reportNAT(ctx context.Context, reports <-chan node.NATReport, out *syncEvents) {
	ctx, cancel := context.WithTimeout(ctx, natReportTimeout)
	defer cancel()
	var r node.NATReport
	select {
	case <-ctx.Done():
		return
	case r = <-reports:
	}
	emitNAT(out, r)
}

// emitNAT emits a "nat" event reporting r.
func emitNAT(out *syncEvents, r node.NATReport) {
	human, fields := natIPv6(fmt.Sprintf("NAT: %s (public %s, mapping %s, filtering %s)", r.Class, r.PublicAddr, r.Mapping, r.Filtering),
		map[string]any{"nat": string(r.Class), "public_addr": r.PublicAddr.String(), "mapping": r.Mapping.String(), "filtering": r.Filtering.String()}, r)
	out.emit("nat", human, fields)
}
