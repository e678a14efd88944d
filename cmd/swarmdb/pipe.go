package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/swarmdb/swarmdb/node"
)

const pipeAbout = `Pipes stdin/stdout over an encrypted connection to the peer serving TOPIC: with --server,
announces TOPIC and accepts one connection; without, looks TOPIC up and dials it. Each
direction ends when its sender reaches the end of its input and says so; a transfer the
sender did not finish (stopped, killed, lost) is never reported done.
Events on stderr (JSON lines with --json); stdout carries only the data.
Exit codes: 0 done (both directions complete), 1 error, 2 usage, 3 nobody serves TOPIC,
4 connect failed, 5 connection lost (incomplete transfer), 130 interrupted.`

// errNoBootstrap is returned when pipe or netcheck was given nothing to ask.
var errNoBootstrap = errors.New("--bootstrap is required (host:port,...)")

// pipeMain parses the flags, runs the pipe until it ends or ctx ends
// (SIGINT, SIGTERM), and returns the exit code.
func pipeMain(ctx context.Context, args []string, std stdio) int {
	f := newFlags("pipe", "TOPIC", pipeAbout)
	var cfg node.PipeConfig
	f.BoolVar(&cfg.Server, "server", false, "announce TOPIC and accept one connection")
	f.list(&cfg.Bootstrap, "bootstrap", "comma-separated host:port of DHT nodes (required)")
	f.StringVar(&cfg.ListenAddr, "listen", "0.0.0.0:0", "UDP address of this node's socket")
	keyFile := f.String("key", "", "identity file (hex Ed25519 seed), created if missing; default a random identity")
	mode := f.String("mode", "ephemeral", `DHT mode: "ephemeral" (never stores or routes for others) or "adaptive"`)
	f.DurationVar(&cfg.Timeout, "timeout", node.DefaultPipeTimeout, "give up joining the DHT and announcing (server), or finding and connecting to the server (client), after this long")
	asJSON := f.Bool("json", false, "write one JSON event per line on stderr")
	verbose := f.Bool("v", false, "debug logging on stderr")
	pos, code, ok := f.parse(args, 1, std)
	if !ok {
		return code
	}
	if cfg.Topic = pos[0]; cfg.Topic == "" {
		return f.usageError(std, "empty TOPIC")
	}
	if err := checkHostPort("listen", cfg.ListenAddr); err != nil {
		return f.usageError(std, "%v", err)
	}
	switch *mode {
	case "ephemeral":
	case "adaptive":
		cfg.Adaptive = true
	default:
		return f.usageError(std, "--mode %q: want ephemeral or adaptive", *mode)
	}
	if cfg.Timeout <= 0 {
		return f.usageError(std, "--timeout %v: want a positive duration", cfg.Timeout)
	}
	if err := f.hosts.resolve(ctx); err != nil {
		return failed(std, "pipe", fmt.Errorf("--bootstrap: %w", err))
	}
	if len(cfg.Bootstrap) == 0 {
		return f.usageError(std, "%v", errNoBootstrap)
	}
	cfg.Logger = newLogger(std.err, *asJSON, logLevel(*verbose, slog.LevelWarn))
	ev := &syncEvents{ev: eventWriter{json: *asJSON, w: std.err}}
	return pipeExit(ctx, ev, runPipe(ctx, cfg, *keyFile, std, ev), cfg.Timeout)
}

// pipeExit reports how the pipe ended and returns the exit code.
func pipeExit(ctx context.Context, ev *syncEvents, err error, timeout time.Duration) int {
	var pe *node.PipeError
	switch {
	case err == nil:
		return exitOK
	case ctx.Err() != nil:
		ev.emit("stopped", "interrupted; shut down cleanly", map[string]any{"reason": "signal"})
		return exitInterrupted
	case errors.As(err, &pe):
		cause := pe.Err
		if pe.Timeout && pe.Reason == "bootstrap-failed" {
			cause = fmt.Errorf("--timeout %v passed while joining the DHT: %w", timeout, cause)
		}
		ev.emit("error", fmt.Sprintf("error (%s): %v", pe.Reason, cause), map[string]any{"reason": pe.Reason, "error": cause.Error()})
		return pipeExitCode[pe.Kind]
	default:
		ev.emit("error", fmt.Sprintf("error: %v", err), map[string]any{"reason": "error", "error": err.Error()})
		return exitError
	}
}

// pipeExitCode is the exit code of each kind of pipe failure.
var pipeExitCode = map[node.PipeErrorKind]int{
	node.PipeFailed:        exitError,
	node.PipeNotFound:      exitNotFound,
	node.PipeConnectFailed: exitConnect,
	node.PipeLost:          exitLost,
}

// runPipe joins, connects and transfers, reporting each step. Everything
// it starts is closed before it returns, except a read of std.in that
// never ends (the process exits anyway).
func runPipe(ctx context.Context, cfg node.PipeConfig, keyFile string, std stdio, ev *syncEvents) error {
	key, err := loadOrCreateKey(keyFile)
	if err != nil {
		return &node.PipeError{Kind: node.PipeFailed, Reason: "key", Err: err}
	}
	cfg.Key = key
	cfg.OnConnect = func(c *node.PipeConn) { emitPipeConnection(ev, c) }
	p, err := node.StartPipe(ctx, cfg)
	if err != nil {
		return err
	}
	defer p.Close()
	emitPipeReady(ev, p.Info())
	nat := reportPipeNAT(ctx, p, ev)
	defer nat.stop()
	conn, err := p.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	st, err := conn.Transfer(ctx, std.in, std.out)
	if err != nil {
		return err
	}
	nat.wait()
	ev.emit("done", fmt.Sprintf("done: sent %d bytes, received %d bytes", st.Sent, st.Received),
		map[string]any{"sent": st.Sent, "received": st.Received, "duration_ms": st.Duration.Milliseconds()})
	return nil
}

// emitPipeReady reports a joined client, or an announced server.
func emitPipeReady(ev *syncEvents, in node.PipeInfo) {
	ready := map[string]any{
		"role": "client", "topic": in.Topic, "public_key": hex.EncodeToString(in.PublicKey),
		"addr": in.LocalAddr.String(), "public_addr": in.PublicAddr.String(), "nat": string(in.NAT),
	}
	if !in.Server {
		ev.emit("ready", fmt.Sprintf("joined the DHT as %x (NAT %s); looking for %q", []byte(in.PublicKey[:8]), in.NAT, in.Topic), ready)
		return
	}
	ready["role"], ready["relays"], ready["stored"] = "server", addrStrings(in.Relays), in.Stored
	ev.emit("ready", fmt.Sprintf("serving %q as %x (NAT %s), announced on %d nodes; waiting for a peer", in.Topic, []byte(in.PublicKey[:8]), in.NAT, in.Stored), ready)
}

// reportPipeNAT emits a "nat" event once the pipe's NAT measurement has
// ended, which may be after "ready": its filtering probes run beside the
// announce or the lookup.
func reportPipeNAT(ctx context.Context, p *node.Pipe, ev *syncEvents) *natReporter {
	ctx, cancel := context.WithTimeout(ctx, natReportTimeout)
	n := &natReporter{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		if r := p.WaitNAT(ctx); ctx.Err() == nil {
			emitNAT(ev, r)
		}
	}()
	return n
}

// natReporter is reportPipeNAT's goroutine.
type natReporter struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// wait waits for the "nat" event (a finished transfer reports it before
// "done"), or for natReportTimeout.
func (n *natReporter) wait() { <-n.done }

// stop gives up on the event and waits for the goroutine to end.
func (n *natReporter) stop() {
	n.cancel()
	<-n.done
}

// emitPipeConnection reports the one connection, as soon as it is made.
func emitPipeConnection(ev *syncEvents, c *node.PipeConn) {
	ev.emit("connection", fmt.Sprintf("connected to %x over %s (%d ms)", []byte(c.RemotePublicKey()[:8]), c.Path(), c.ConnectTime.Milliseconds()),
		map[string]any{"peer": hex.EncodeToString(c.RemotePublicKey()), "path": string(c.Path()),
			"connect_ms": c.ConnectTime.Milliseconds(), "remote_addr": c.RemoteAddr().String(), "cipher": c.Cipher().String()})
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
		return createKey(path)
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

// createKey writes a new identity to path, which must not exist.
func createKey(path string) (ed25519.PrivateKey, error) {
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

func addrStrings(as []netip.AddrPort) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}
