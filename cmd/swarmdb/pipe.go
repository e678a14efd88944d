package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/holepunch/dhtlink"
	"github.com/swarmdb/swarmdb/secure"
)

// Timeouts of `swarmdb pipe`.
const (
	// pipeJoinTimeout bounds joining the DHT: the NAT measurement (about a
	// second per filtering probe) and the bootstrap round trips.
	pipeJoinTimeout = 20 * time.Second
	// pipeDefaultTimeout bounds everything before the connection: joining
	// the DHT, then the server's announce or the client's lookup and
	// connect (one direct attempt, holepunch.DefaultConnectTimeout, plus a
	// relay attempt).
	pipeDefaultTimeout = 30 * time.Second
	// pipeAnnounceInterval re-announces the topic; dht records live 20 min.
	pipeAnnounceInterval = 10 * time.Minute
	// pipeUnannounceTimeout bounds the best-effort unannounce once the one
	// connection is taken or the server exits.
	pipeUnannounceTimeout = 3 * time.Second
	// pipeEndGrace: once the session has ended and the peer's direction is
	// drained, our sending direction gets this long to report that it had
	// finished (its CloseWrite returned) before we call the connection lost.
	// It only races a channel send, so a second is ample.
	pipeEndGrace = time.Second
)

// pipeConfig is one run of the pipe command.
type pipeConfig struct {
	Topic     string
	Server    bool
	KeyFile   string // "" means a random identity
	Bootstrap []netip.AddrPort
	Listen    string
	Mode      dht.Mode
	Timeout   time.Duration // join, then announce (server) or lookup + connect (client)
	Net       transport.Net // nil means the real network
	In        io.Reader
	Out       io.Writer
	Events    eventWriter
	Logger    *slog.Logger
}

const pipeAbout = `Pipes stdin/stdout over an encrypted connection to the peer serving TOPIC: with --server,
announces TOPIC and accepts one connection; without, looks TOPIC up and dials it. Each
direction ends when its sender reaches the end of its input and says so; a transfer the
sender did not finish (stopped, killed, lost) is never reported done.
Events on stderr (JSON lines with --json); stdout carries only the data.
Exit codes: 0 done (both directions complete), 1 error, 2 usage, 3 nobody serves TOPIC,
4 connect failed, 5 connection lost (incomplete transfer), 130 interrupted.`

// pipeMain parses the flags, runs the pipe until it ends or ctx ends
// (SIGINT, SIGTERM), and returns the exit code.
func pipeMain(ctx context.Context, args []string, std stdio) int {
	f := newFlags("pipe", "TOPIC", pipeAbout)
	server := f.Bool("server", false, "announce TOPIC and accept one connection")
	var bootstrap []netip.AddrPort
	f.list(&bootstrap, "bootstrap", "comma-separated host:port of DHT nodes (required)")
	listen := f.String("listen", "0.0.0.0:0", "UDP address of this node's socket")
	keyFile := f.String("key", "", "identity file (hex Ed25519 seed), created if missing; default a random identity")
	mode := f.String("mode", "ephemeral", `DHT mode: "ephemeral" (never stores or routes for others) or "adaptive"`)
	timeout := f.Duration("timeout", pipeDefaultTimeout, "give up joining the DHT and announcing (server), or finding and connecting to the server (client), after this long")
	asJSON := f.Bool("json", false, "write one JSON event per line on stderr")
	verbose := f.Bool("v", false, "debug logging on stderr")
	pos, code, ok := f.parse(args, 1, std)
	if !ok {
		return code
	}
	if pos[0] == "" {
		return f.usageError(std, "empty TOPIC")
	}
	if err := checkHostPort("listen", *listen); err != nil {
		return f.usageError(std, "%v", err)
	}
	var dm dht.Mode
	switch *mode {
	case "ephemeral":
		dm = dht.ModeEphemeral
	case "adaptive":
		dm = dht.ModeAdaptive
	default:
		return f.usageError(std, "--mode %q: want ephemeral or adaptive", *mode)
	}
	if *timeout <= 0 {
		return f.usageError(std, "--timeout %v: want a positive duration", *timeout)
	}
	if err := f.hosts.resolve(ctx); err != nil {
		return failed(std, "pipe", fmt.Errorf("--bootstrap: %w", err))
	}
	if len(bootstrap) == 0 {
		return f.usageError(std, "%v", errNoBootstrap)
	}
	return pipe(ctx, pipeConfig{
		Topic: pos[0], Server: *server, KeyFile: *keyFile, Bootstrap: bootstrap, Listen: *listen,
		Mode: dm, Timeout: *timeout, In: std.in, Out: std.out,
		Events: eventWriter{json: *asJSON, w: std.err}, Logger: newLogger(std.err, *asJSON, logLevel(*verbose, slog.LevelWarn)),
	})
}

// pipeFailure is a failed pipe: the exit code and the reason code of the
// error event.
type pipeFailure struct {
	code   int
	reason string
	err    error
}

func (f *pipeFailure) Error() string { return f.reason + ": " + f.err.Error() }
func (f *pipeFailure) Unwrap() error { return f.err }

func fail(code int, reason string, err error) *pipeFailure {
	return &pipeFailure{code: code, reason: reason, err: err}
}

// pipe runs the command with cfg and returns the exit code. Everything it
// starts is closed before it returns, except a read of cfg.In that never
// ends (the process exits anyway).
func pipe(ctx context.Context, cfg pipeConfig) int {
	ev := cfg.Events
	err := runPipeSession(ctx, cfg)
	var f *pipeFailure
	switch {
	case err == nil:
		return exitOK
	case ctx.Err() != nil:
		ev.emit("stopped", "interrupted; shut down cleanly", map[string]any{"reason": "signal"})
		return exitInterrupted
	case errors.As(err, &f):
		ev.emit("error", fmt.Sprintf("error (%s): %v", f.reason, f.err), map[string]any{"reason": f.reason, "error": f.err.Error()})
		return f.code
	default:
		ev.emit("error", fmt.Sprintf("error: %v", err), map[string]any{"reason": "error", "error": err.Error()})
		return exitError
	}
}

func runPipeSession(ctx context.Context, cfg pipeConfig) error {
	ev := cfg.Events
	key, err := loadOrCreateKey(cfg.KeyFile)
	if err != nil {
		return fail(exitError, "key", err)
	}
	if cfg.Net == nil {
		if cfg.Net, err = stdnet.NewNet(); err != nil {
			return fail(exitError, "network", err)
		}
	}
	pub := key.Public().(ed25519.PublicKey)

	// The node, then the endpoint, as in holepunch's lab tests: the
	// endpoint measures the NAT before the node joins the DHT (its Discover
	// step bootstraps), so the filtering probes come from nodes that never
	// heard from us.
	link := dhtlink.New()
	node := dht.New(dht.Config{
		Net: cfg.Net, ListenAddr: cfg.Listen, Bootstrap: cfg.Bootstrap, Mode: cfg.Mode,
		OnSignal: link.HandleSignal, OnPacket: link.HandlePacket, Logger: cfg.Logger.With("component", "dht"),
	})
	if err := node.Start(); err != nil {
		return fail(exitError, "listen", err)
	}
	defer node.Close()
	link.Attach(node, cfg.Net)

	var taken atomic.Bool // the server's one connection is spoken for
	incoming := make(chan *holepunch.Conn, 1)
	epCfg := holepunch.EndpointConfig{
		Key: key, Link: link, Net: cfg.Net, MeasureNAT: link.MeasureNAT,
		KeepLoopback: keepLoopback(cfg.Listen, cfg.Bootstrap),
		Logger:       cfg.Logger.With("component", "holepunch"),
	}
	if cfg.Server {
		epCfg.Firewall = func(ed25519.PublicKey, []byte) error {
			if taken.Load() {
				return errors.New("already piping to a peer")
			}
			return nil
		}
		epCfg.OnConnection = func(c *holepunch.Conn) {
			if !taken.CompareAndSwap(false, true) {
				_ = c.Close() // a second handshake that was already past the firewall
				return
			}
			incoming <- c
		}
	}
	ep, err := holepunch.NewEndpoint(epCfg)
	if err != nil {
		return fail(exitError, "endpoint", err)
	}
	if err := ep.Start(); err != nil {
		return fail(exitError, "endpoint", err)
	}
	defer ep.Close()

	// --timeout bounds everything up to the connection, the join included.
	tctx, cancelT := context.WithTimeout(ctx, cfg.Timeout)
	defer cancelT()
	jctx, cancel := context.WithTimeout(tctx, pipeJoinTimeout)
	nat := ep.WaitNAT(jctx)
	err = node.Bootstrap(jctx)
	cancel()
	if err != nil {
		if tctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("--timeout %v passed while joining the DHT: %w", cfg.Timeout, err)
		}
		return fail(exitError, "bootstrap-failed", err)
	}
	ready := map[string]any{
		"role": "client", "topic": cfg.Topic, "public_key": hex.EncodeToString(pub),
		"addr": node.LocalAddr().String(), "public_addr": node.PublicAddr().String(), "nat": string(nat.Class),
	}
	if !cfg.Server {
		ev.emit("ready", fmt.Sprintf("joined the DHT as %x (NAT %s); looking for %q", []byte(pub[:8]), nat.Class, cfg.Topic), ready)
		return pipeClient(ctx, tctx, cfg, node, ep, pub)
	}

	topic := dht.TopicKey(cfg.Topic)
	jctx, cancel = context.WithTimeout(tctx, pipeJoinTimeout)
	relays, err := ep.Listen(jctx)
	var res *dht.AnnounceResult
	if err == nil {
		res, err = node.Announce(jctx, topic, key)
	}
	cancel()
	if err != nil {
		return fail(exitError, "announce-failed", err)
	}
	ready["role"] = "server"
	ready["relays"] = addrStrings(relays)
	ready["stored"] = res.Stored
	ev.emit("ready", fmt.Sprintf("serving %q as %x (NAT %s), announced on %d nodes; waiting for a peer", cfg.Topic, []byte(pub[:8]), nat.Class, res.Stored), ready)

	// Keep the record alive until the one connection arrives, then take it
	// down so later clients do not find a busy server.
	actx, stopAnnounce := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		reannounce(actx, node, topic, key, cfg.Logger)
	}()
	unannounce := sync.OnceFunc(func() {
		stopAnnounce()
		wg.Wait()
		uctx, cancel := context.WithTimeout(context.Background(), pipeUnannounceTimeout)
		defer cancel()
		if err := node.Unannounce(uctx, topic, key); err != nil {
			cfg.Logger.Debug("unannounce failed", "topic", cfg.Topic, "err", err)
		}
	})
	defer unannounce()

	var conn *holepunch.Conn
	select {
	case conn = <-incoming:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer conn.Close()
	ev.emit("connection", fmt.Sprintf("connected to %x over %s (%d ms)", []byte(conn.RemotePublicKey()[:8]), conn.Path, conn.ConnectTime.Milliseconds()),
		connFields(conn, conn.ConnectTime))
	unannounce()
	return pipeConn(ctx, cfg, conn)
}

// pipeClient looks the topic up and connects to the first peer that
// answers, in the order the DHT returned them; cctx (--timeout) bounds
// both, ctx the connection.
func pipeClient(ctx, cctx context.Context, cfg pipeConfig, node *dht.Node, ep *holepunch.Endpoint, self ed25519.PublicKey) error {
	start := time.Now()
	res, err := node.Lookup(cctx, dht.TopicKey(cfg.Topic))
	if err != nil {
		if cctx.Err() != nil && ctx.Err() == nil {
			return fail(exitConnect, "timeout", err)
		}
		return fail(exitError, "lookup-failed", err)
	}
	var peers []dht.PeerRecord
	for _, p := range res.Peers {
		if !p.PublicKey.Equal(self) {
			peers = append(peers, p)
		}
	}
	if len(peers) == 0 {
		return fail(exitNotFound, "no-peers", fmt.Errorf("nobody announced %q (%d DHT nodes asked)", cfg.Topic, res.Queried))
	}
	var lastErr error
	for _, p := range peers {
		conn, err := ep.Connect(cctx, p.PublicKey, p.AllRelays())
		if err != nil {
			cfg.Logger.Debug("connect failed", "peer", hex.EncodeToString(p.PublicKey[:4]), "err", err)
			lastErr = err
			if cctx.Err() != nil {
				break
			}
			continue
		}
		defer conn.Close()
		took := time.Since(start)
		cfg.Events.emit("connection", fmt.Sprintf("connected to %x over %s (%d ms)", []byte(conn.RemotePublicKey()[:8]), conn.Path, took.Milliseconds()),
			connFields(conn, took))
		return pipeConn(ctx, cfg, conn)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fail(exitConnect, connectReason(lastErr, cctx.Err() != nil), lastErr)
}

// connectReason names why Connect failed, most specific cause first:
// a both-symmetric dial that then found no relay is "both-sides-symmetric"
// (the error says the relay part too).
func connectReason(err error, timedOut bool) string {
	switch {
	case errors.Is(err, holepunch.ErrRefused):
		return "refused"
	case errors.Is(err, holepunch.ErrBusy):
		return "busy"
	case errors.Is(err, holepunch.ErrBothSymmetric):
		return "both-sides-symmetric"
	case errors.Is(err, holepunch.ErrPunchFailed):
		return "punch-failed"
	case errors.Is(err, holepunch.ErrNoTURN):
		return "no-turn"
	case timedOut, errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, holepunch.ErrNoRelays):
		return "no-relays"
	case errors.Is(err, holepunch.ErrHandshake):
		return "handshake-failed"
	case errors.Is(err, holepunch.ErrSignal):
		return "signal-failed"
	case errors.Is(err, holepunch.ErrSimultaneous), errors.Is(err, holepunch.ErrDialInProgress):
		return "simultaneous"
	}
	return "connect-failed"
}

func connFields(c *holepunch.Conn, took time.Duration) map[string]any {
	return map[string]any{
		"peer": hex.EncodeToString(c.RemotePublicKey()), "path": string(c.Path),
		"connect_ms": took.Milliseconds(), "remote_addr": c.RemoteAddr().String(),
	}
}

// pipeConn sends cfg.In to the peer and writes what the peer sends to
// cfg.Out, in pipe frames (pipe_frame.go), until both directions are
// complete: ours when cfg.In reached EOF and the end frame went out (then
// CloseWrite, a half-close), theirs when their end frame arrived. A peer
// direction that ends without its end frame is a lost connection, never a
// finished transfer.
func pipeConn(ctx context.Context, cfg pipeConfig, conn *holepunch.Conn) error {
	st := conn.Stream0()
	start := time.Now()
	var sent, received atomic.Int64
	upDone, downDone := make(chan error, 1), make(chan error, 1)
	go func() { upDone <- sendPipe(st, cfg.In, &sent) }()
	go func() { downDone <- receivePipe(st, cfg.Out, &received) }()
	up, down := upDone, downDone
	ended := conn.Done()       // nil once the session has ended
	var grace <-chan time.Time // runs once the session ended and only our direction is open
	for up != nil || down != nil {
		if ended == nil && down == nil && grace == nil {
			grace = time.After(pipeEndGrace)
		}
		select {
		case err := <-up:
			if err != nil {
				return pipeIOFailure("send", err, conn)
			}
			up = nil
		case err := <-down:
			if errors.Is(err, errPipeTruncated) {
				return fail(exitLost, "connection-lost", fmt.Errorf("%w after %d bytes (sent %d): the sender was stopped or lost before the end of its input",
					err, received.Load(), sent.Load()))
			}
			if errors.Is(err, errPipeFrame) {
				return fail(exitError, "protocol", fmt.Errorf("receive: %w (is the peer a swarmdb pipe of this version?)", err))
			}
			if err != nil {
				return pipeIOFailure("receive", err, conn)
			}
			down = nil
		case <-ended:
			// Data the peer sent before closing is still queued in the
			// stream: the receiving direction ends by itself, at its end
			// frame or with the session's error.
			ended = nil
		case <-grace:
			return fail(exitLost, "connection-lost", fmt.Errorf("peer closed the connection before our input ended (sent %d, received %d bytes): %w", sent.Load(), received.Load(), conn.Err()))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	cfg.Events.emit("done", fmt.Sprintf("done: sent %d bytes, received %d bytes", sent.Load(), received.Load()),
		map[string]any{"sent": sent.Load(), "received": received.Load(), "duration_ms": time.Since(start).Milliseconds()})
	return nil
}

// errPipeTruncated: the peer's direction ended without its end frame.
var errPipeTruncated = errors.New("the peer's stream ended without an end of input")

// sendPipe copies in to st as data frames; at EOF of in it sends the end
// frame and half-closes. An error reading in is returned as is, so the
// caller can tell local I/O from the connection.
func sendPipe(st *secure.Stream, in io.Reader, sent *atomic.Int64) error {
	buf := make([]byte, pipeFrameMax)
	buf[0] = pipeFrameData
	for {
		n, rerr := in.Read(buf[1:])
		if n > 0 {
			if _, err := st.Write(buf[:1+n]); err != nil {
				return err
			}
			sent.Add(int64(n))
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if _, err := st.Write(appendPipeEnd(nil, uint64(sent.Load()))); err != nil {
		return err
	}
	return st.CloseWrite()
}

// receivePipe writes the data frames arriving on st to out. It returns nil
// at the end frame (when its total matches what arrived), errPipeTruncated
// when the stream ends before it, and errPipeFrame for anything else the
// peer should not have sent.
func receivePipe(st *secure.Stream, out io.Writer, received *atomic.Int64) error {
	buf := make([]byte, pipeFrameMax)
	for {
		msg, err := st.ReadMessage(buf)
		if errors.Is(err, io.EOF) {
			return errPipeTruncated
		}
		if err != nil {
			return err
		}
		buf = msg
		f, err := parsePipeFrame(msg)
		if err != nil {
			return err
		}
		if f.end {
			if got := uint64(received.Load()); f.total != got {
				return fmt.Errorf("%w: the peer sent %d bytes, %d arrived", errPipeFrame, f.total, got)
			}
			return nil
		}
		if _, err := out.Write(f.data); err != nil {
			return err
		}
		received.Add(int64(len(f.data)))
	}
}

// pipeIOFailure classifies a copy error: the session's end, or local I/O.
// A peer that stopped answering (secure.ErrPeerDead) is a lost connection
// too; the error says so.
func pipeIOFailure(dir string, err error, conn *holepunch.Conn) error {
	select {
	case <-conn.Done():
		if errors.Is(conn.Err(), secure.ErrPeerDead) {
			err = fmt.Errorf("%w (the peer stopped answering)", err)
		}
		return fail(exitLost, "connection-lost", fmt.Errorf("%s: %w", dir, err))
	default:
	}
	if errors.Is(err, io.ErrClosedPipe) {
		return fail(exitLost, "connection-lost", fmt.Errorf("%s: %w", dir, err))
	}
	return fail(exitError, "io", fmt.Errorf("%s: %w", dir, err))
}

// reannounce refreshes the topic record until ctx ends.
func reannounce(ctx context.Context, node *dht.Node, topic dht.ID, key ed25519.PrivateKey, log *slog.Logger) {
	t := time.NewTicker(pipeAnnounceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := node.Announce(ctx, topic, key); err != nil && ctx.Err() == nil {
				log.Warn("re-announce failed", "err", err)
			}
		}
	}
}

// keepLoopback says whether loopback ICE candidates matter: the node or
// its DHT lives on 127.0.0.0/8 (tests, a demo on one machine).
func keepLoopback(listen string, boot []netip.AddrPort) bool {
	if ap, err := netip.ParseAddrPort(listen); err == nil && ap.Addr().IsLoopback() {
		return true
	}
	for _, b := range boot {
		if b.Addr().Unmap().IsLoopback() {
			return true
		}
	}
	return false
}

// loadOrCreateKey returns the identity in path (a hex Ed25519 seed), a new
// one written there (mode 0600) if path does not exist, or a random one
// when path is "".
func loadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	if path == "" {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("--key: %w", err)
		}
		_, werr := fmt.Fprintln(f, hex.EncodeToString(priv.Seed()))
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, fmt.Errorf("--key: %w", werr)
		}
		return priv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--key: %w", err)
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("--key %s: want %d hex-encoded bytes (an Ed25519 seed)", path, ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

func addrStrings(as []netip.AddrPort) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}
