package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/swarmdb/swarmdb/internal/testnet"
)

// A pipeSide is one stack behind the `pipe` interface: `pipe [--server]
// --bootstrap H:P,... --json TOPIC`, events on stderr ("ready", then
// "connection" with peer, path, connect_ms), data on stdin/stdout.
type pipeSide struct {
	Name string
	NA   string // non-empty: this side cannot run, and why
	// command returns the argv of a pipe process.
	command func(server bool, topic, bootstrap string) []string
	// holder returns the argv of a process that joins topic with the side's
	// swarm library and holds every connection (the same events as pipe);
	// nil when there is none.
	holder func(server bool, topic, bootstrap string) []string
	// dhtNode returns the argv of one idle persistent DHT node joining bootstrap.
	dhtNode func(bootstrap string) []string
	// startDHT starts a small DHT for this side on loopback.
	startDHT func(ctx context.Context) (bootstrap string, stop func(), err error)
	dir      string
}

// loopbackDHTSize is the number of DHT nodes each side's connections use.
const loopbackDHTSize = 5

func sides(o options, sw swarmdbBin) []pipeSide {
	swarm := pipeSide{
		Name: "swarmdb",
		NA:   sw.why,
		command: func(server bool, topic, boot string) []string {
			argv := []string{sw.path, "pipe"}
			if server {
				argv = append(argv, "--server")
			}
			return append(argv, "--bootstrap", boot, "--json", topic)
		},
		dhtNode: func(boot string) []string {
			return []string{sw.path, "bootstrap", "--listen", "127.0.0.1:0", "--bootstrap", boot, "--json"}
		},
		startDHT: func(ctx context.Context) (string, func(), error) {
			nw, err := testnet.Start(ctx, testnet.Config{Persistent: loopbackDHTSize})
			if err != nil {
				return "", nil, err
			}
			var b []string
			for _, a := range nw.Bootstrap {
				b = append(b, a.String())
			}
			return strings.Join(b, ","), nw.Close, nil
		},
		dir: o.root,
	}
	if sw.path == "" {
		swarm.NA = sw.why
	}
	if sw.hold != "" {
		swarm.holder = func(server bool, topic, boot string) []string {
			argv := []string{sw.hold}
			if server {
				argv = append(argv, "--server")
			}
			return append(argv, "--bootstrap", boot, topic)
		}
	}
	script := filepath.Join(o.js, "bench.js")
	hs := pipeSide{
		Name: "Hyperswarm",
		command: func(server bool, topic, boot string) []string {
			argv := []string{"node", script, "pipe"}
			if server {
				argv = append(argv, "--server")
			}
			return append(argv, "--bootstrap", boot, "--json", topic)
		},
		dhtNode: func(boot string) []string {
			return []string{"node", script, "dht-node", "--bootstrap", boot}
		},
		startDHT: func(ctx context.Context) (string, func(), error) {
			p, err := startProc(ctx, procOpts{dir: o.js}, "node", script, "testnet", fmt.Sprint(loopbackDHTSize))
			if err != nil {
				return "", nil, err
			}
			ev, err := p.Wait("ready", 60*time.Second)
			if err != nil {
				p.Stop()
				return "", nil, err
			}
			return ev.Str("bootstrap"), p.Stop, nil
		},
		dir: o.js,
	}
	// bench.js pipe holds every connection it accepts: it is Hyperswarm's
	// holder as it stands.
	hs.holder = hs.command
	return []pipeSide{swarm, hs}
}

func randomTopic() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "bench-" + hex.EncodeToString(b)
}

func (s pipeSide) start(ctx context.Context, argv []string) (*Proc, error) {
	return startProc(ctx, procOpts{eventsOnStderr: true, dir: s.dir}, argv[0], argv[1:]...)
}

// pipeRun is one repetition's outcome.
type pipeRun struct {
	readyMs   float64 // server process start to its "ready" event (joined and announced)
	connectMs float64 // as reported by the client: join to first connection
	wallMs    float64 // client process start to its connection event
	mibps     float64
	path      string
}

// errNoConnection marks a client that never reported a connection.
var errNoConnection = errors.New("no connection")

// pipeCase says where and how one pipe repetition runs.
type pipeCase struct {
	boot               string
	mib                int           // MiB to pipe after connecting; 0: none
	serverNS, clientNS string        // network namespaces ("": this one)
	timeout            time.Duration // for the client's connection; zero: 30 s
}

// inNS prefixes argv with `ip netns exec ns` when ns is set.
func inNS(ns string, argv []string) []string {
	if ns == "" {
		return argv
	}
	return append([]string{"ip", "netns", "exec", ns}, argv...)
}

// pipeOnce starts a server and a client on a fresh topic, waits for the
// client's first connection and pipes c.mib MiB from the client's stdin to
// the server's stdout.
func pipeOnce(ctx context.Context, s pipeSide, c pipeCase) (pipeRun, error) {
	var r pipeRun
	if c.timeout == 0 {
		c.timeout = 30 * time.Second
	}
	topic := randomTopic()
	srv, err := s.start(ctx, inNS(c.serverNS, s.command(true, topic, c.boot)))
	if err != nil {
		return r, err
	}
	defer srv.Stop()
	if _, err := srv.Wait("ready", 30*time.Second); err != nil {
		return r, fmt.Errorf("server: %w", err)
	}
	r.readyMs = float64(time.Since(srv.Started).Microseconds()) / 1000
	cli, err := s.start(ctx, inNS(c.clientNS, s.command(false, topic, c.boot)))
	if err != nil {
		return r, err
	}
	defer cli.Stop()
	ev, err := cli.Wait("connection", c.timeout)
	if err != nil {
		return r, fmt.Errorf("%w: %v", errNoConnection, err)
	}
	r.wallMs = float64(time.Since(cli.Started).Microseconds()) / 1000
	r.connectMs = ev.Num("connect_ms")
	r.path = ev.Str("path")
	if c.mib == 0 {
		return r, nil
	}
	n := int64(c.mib) << 20
	full := srv.WhenBytes(n)
	start := time.Now()
	go writeN(cli.Stdin(), n)
	select {
	case <-full:
	case <-time.After(5 * time.Minute):
		return r, fmt.Errorf("%d MiB not through within 5 min", c.mib)
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.mibps = float64(c.mib) / time.Since(start).Seconds()
	return r, nil
}

// writeN writes n pseudo-random bytes (so no layer can compress them).
func writeN(w io.Writer, n int64) {
	buf := make([]byte, 64<<10)
	_, _ = rand.Read(buf)
	for n > 0 {
		k := min(int64(len(buf)), n)
		if _, err := w.Write(buf[:k]); err != nil {
			return
		}
		n -= k
	}
}

// runLoopback alternates swarmdb and Hyperswarm pipes on loopback.
func runLoopback(ctx context.Context, o options, sw swarmdbBin) (*PartResult, error) {
	ss := sides(o, sw)
	pr := &PartResult{Setup: []string{
		fmt.Sprintf("Each side gets its own %d-node DHT on loopback (swarmdb: internal/testnet in the bench process; Hyperswarm: `bench.js testnet`, HyperDHT nodes in one Node.js process).", loopbackDHTSize),
		"Per repetition: a fresh random topic; a server `pipe --server` announces it; then a client `pipe` process starts and joins it. " +
			"Connect time is the client's own report (join to first connection); \"wall\" adds process start-up.",
		fmt.Sprintf("Throughput: %d MiB of random bytes written into the client's stdin, timed until the server's stdout has carried them all (one encrypted stream).", o.mib),
		"Hyperswarm's side is bench/js/bench.js pipe: Hyperswarm 4 with the same flags and JSON events as `swarmdb pipe`.",
	}}
	connect := Comparison{Name: "join to first connection (client's report)", Key: "loop-connect-ms", Unit: "ms", Other: "Hyperswarm"}
	wall := Comparison{Name: "client process start to first connection", Key: "loop-wall-ms", Unit: "ms", Other: "Hyperswarm"}
	tput := Comparison{Name: fmt.Sprintf("one-stream throughput, %d MiB", o.mib), Key: "loop-mibps", Unit: "MiB/s", Higher: true, Other: "Hyperswarm"}
	samples := map[string][3]*Sample{
		ss[0].Name: {&connect.Swarm, &wall.Swarm, &tput.Swarm},
		ss[1].Name: {&connect.Them, &wall.Them, &tput.Them},
	}
	paths := map[string]map[string]int{}
	type dhtUp struct {
		boot string
		stop func()
	}
	up := map[string]dhtUp{}
	defer func() {
		for _, d := range up {
			d.stop()
		}
	}()
	for _, s := range ss {
		if s.NA != "" {
			for _, p := range samples[s.Name] {
				p.NA = s.NA
			}
			continue
		}
		boot, stop, err := s.startDHT(ctx)
		if err != nil {
			return pr, fmt.Errorf("%s DHT: %w", s.Name, err)
		}
		up[s.Name] = dhtUp{boot, stop}
		paths[s.Name] = map[string]int{}
	}
	for rep := 0; rep < o.reps; rep++ {
		for _, s := range ss {
			if s.NA != "" {
				continue
			}
			r, err := pipeOnce(ctx, s, pipeCase{boot: up[s.Name].boot, mib: o.mib})
			if err != nil {
				return pr, fmt.Errorf("%s rep %d: %w", s.Name, rep, err)
			}
			smp := samples[s.Name]
			smp[0].Add(r.connectMs)
			smp[1].Add(r.wallMs)
			smp[2].Add(r.mibps)
			paths[s.Name][r.path]++
			o.log.Info("loopback run", "side", s.Name, "rep", rep, "connect_ms", num(r.connectMs), "wall_ms", num(r.wallMs), "MiB/s", num(r.mibps), "path", r.path)
		}
	}
	for _, s := range ss {
		if p := paths[s.Name]; p != nil {
			pr.Notes = append(pr.Notes, fmt.Sprintf("%s paths reported: %s", s.Name, pathSummary(p)))
		}
	}
	pr.Comparisons = append(pr.Comparisons, connect, wall, tput)
	return pr, nil
}

// measureWindow is how long CPU use is sampled for; settle is how long a
// process is left alone first (start-up work done, heap settled).
const (
	measureWindow = 10 * time.Second
	settle        = 3 * time.Second
)

// usageOver returns the RSS at the end of a window and the CPU share (% of
// one core) used during it.
func usageOver(ctx context.Context, pid int, window time.Duration) (rss float64, cpuPct float64, err error) {
	u0, err := usageOf(pid)
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	u1, err := usageOf(pid)
	if err != nil {
		return 0, 0, err
	}
	return float64(u1.RSS), 100 * (u1.CPU - u0.CPU).Seconds() / time.Since(t0).Seconds(), nil
}

func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runResources measures, alternating sides: an idle DHT node (no pipe
// needed), an idle pipe server, and the server's growth per connection.
func runResources(ctx context.Context, o options, sw swarmdbBin) (*PartResult, error) {
	ss := sides(o, sw)
	reps := min(o.reps, 3)
	pr := &PartResult{Setup: []string{
		fmt.Sprintf("Each side on its own %d-node loopback DHT. RSS from /proc/PID/status (VmRSS) after %v of settling; CPU = user+system time over a %v window, in %% of one core.", loopbackDHTSize, settle, measureWindow),
		"Idle DHT node: `swarmdb bootstrap --listen 127.0.0.1:0` vs `bench.js dht-node` (one persistent HyperDHT node), each joined to its side's DHT.",
		fmt.Sprintf("Idle pipe server: `pipe --server` announced, no connections. Per connection: %d client process(es) connect to that server; the server's RSS growth and extra CPU over idle, divided by %d (`swarmdb pipe --server` accepts one connection, so the default is 1 on both sides).", o.conns, o.conns),
		fmt.Sprintf("Swarm server, %d connections: a server that joins a topic with the side's library and holds every connection (`bench/hold`, on the `swarm` package, vs `bench.js pipe --server`, which holds all it accepts), and %d clients of the same program; RSS growth over the idle server, divided by %d. The one-connection figure above is mostly one-time costs: code pages the first connection touches, and its setup garbage, which a Go process below its 4 MB heap goal has not yet collected (V8's collections, just as unrelated to the connection, make Hyperswarm's swing both ways); over %d connections they are spread thin. The server is also measured at %d connections: the growth from there to %d, divided by %d, is what each further connection costs, without the one-time costs the first connections pay (code paths run once, the first GC's metadata, a heap growing to its minimum goal).", o.holdConns, o.holdConns, o.holdConns, o.holdConns, o.holdConns/2, o.holdConns, o.holdConns-o.holdConns/2),
		fmt.Sprintf("%d repetitions per side, alternating.", reps),
	}}
	other := "Hyperswarm"
	nodeRSS := Comparison{Name: "idle DHT node RSS", Key: "res-dht-rss", Unit: "MiB", Other: "HyperDHT"}
	nodeCPU := Comparison{Name: "idle DHT node CPU", Key: "res-dht-cpu", Unit: "% core", Other: "HyperDHT"}
	idleRSS := Comparison{Name: "idle pipe server RSS", Key: "res-idle-rss", Unit: "MiB", Other: other}
	idleCPU := Comparison{Name: "idle pipe server CPU", Key: "res-idle-cpu", Unit: "% core", Other: other}
	connRSS := Comparison{Name: "server RSS per connection", Key: "res-conn-rss", Unit: "KiB", Other: other}
	connCPU := Comparison{Name: "server CPU per idle connection", Key: "res-conn-cpu", Unit: "% core", Other: other}
	holdRSS := Comparison{Name: fmt.Sprintf("swarm server RSS per connection, %d connections", o.holdConns), Key: "res-hold-rss", Unit: "KiB", Other: other}
	holdMarginal := Comparison{Name: fmt.Sprintf("swarm server RSS per further connection, %d → %d connections", o.holdConns/2, o.holdConns), Key: "res-hold-marginal", Unit: "KiB", Other: other}
	holdTotal := Comparison{Name: fmt.Sprintf("swarm server RSS with %d connections", o.holdConns), Key: "res-hold-total", Unit: "MiB", Other: other}
	holdCPU := Comparison{Name: fmt.Sprintf("swarm server CPU per idle connection, %d connections", o.holdConns), Key: "res-hold-cpu", Unit: "% core", Other: other}
	pick := func(s pipeSide, c *Comparison) *Sample {
		if s.Name == "swarmdb" {
			return &c.Swarm
		}
		return &c.Them
	}
	for _, s := range ss {
		if s.NA != "" {
			for _, c := range []*Comparison{&idleRSS, &idleCPU, &connRSS, &connCPU} {
				pick(s, c).NA = s.NA
			}
		}
		if s.holder == nil || s.NA != "" || o.holdConns < 1 {
			why := "not measured: bench/hold did not build"
			switch {
			case s.NA != "":
				why = s.NA
			case o.holdConns < 1:
				why = "not measured: -hold-conns 0"
			}
			pick(s, &holdRSS).NA, pick(s, &holdMarginal).NA, pick(s, &holdTotal).NA, pick(s, &holdCPU).NA = why, why, why, why
		}
	}
	boots := map[string]string{}
	for _, s := range ss {
		if s.Name == "swarmdb" && sw.path == "" {
			pick(s, &nodeRSS).NA, pick(s, &nodeCPU).NA = sw.why, sw.why
			continue
		}
		boot, stop, err := s.startDHT(ctx)
		if err != nil {
			return pr, fmt.Errorf("%s DHT: %w", s.Name, err)
		}
		defer stop()
		boots[s.Name] = boot
	}
	for rep := 0; rep < reps; rep++ {
		for _, s := range ss {
			boot, ok := boots[s.Name]
			if !ok {
				continue
			}
			rss, cpu, err := idleDHTNode(ctx, s, boot)
			if err != nil {
				return pr, fmt.Errorf("%s idle DHT node: %w", s.Name, err)
			}
			pick(s, &nodeRSS).Add(rss / (1 << 20))
			pick(s, &nodeCPU).Add(cpu)
			o.log.Info("idle dht node", "side", s.Name, "rep", rep, "rss_MiB", num(rss/(1<<20)), "cpu_%", num(cpu))
			if s.NA != "" {
				continue
			}
			m, err := serverUsage(ctx, s, s.command, boot, o.conns, 0)
			if err != nil {
				return pr, fmt.Errorf("%s server: %w", s.Name, err)
			}
			pick(s, &idleRSS).Add(m.idleRSS / (1 << 20))
			pick(s, &idleCPU).Add(m.idleCPU)
			pick(s, &connRSS).Add(m.perConnRSS / 1024)
			pick(s, &connCPU).Add(m.perConnCPU)
			o.log.Info("pipe server", "side", s.Name, "rep", rep, "idle_MiB", num(m.idleRSS/(1<<20)), "idle_cpu_%", num(m.idleCPU),
				"per_conn_KiB", num(m.perConnRSS/1024), "per_conn_cpu_%", num(m.perConnCPU))
			if s.holder == nil || o.holdConns < 1 {
				continue
			}
			h, err := serverUsage(ctx, s, s.holder, boot, o.holdConns, o.holdConns/2)
			if err != nil {
				return pr, fmt.Errorf("%s swarm server: %w", s.Name, err)
			}
			pick(s, &holdRSS).Add(h.perConnRSS / 1024)
			pick(s, &holdMarginal).Add(h.marginalRSS / 1024)
			pick(s, &holdTotal).Add((h.idleRSS + h.perConnRSS*float64(o.holdConns)) / (1 << 20))
			pick(s, &holdCPU).Add(h.perConnCPU)
			o.log.Info("swarm server", "side", s.Name, "rep", rep, "conns", o.holdConns, "idle_MiB", num(h.idleRSS/(1<<20)),
				"per_conn_KiB", num(h.perConnRSS/1024), "marginal_KiB", num(h.marginalRSS/1024), "per_conn_cpu_%", num(h.perConnCPU))
		}
	}
	pr.Comparisons = append(pr.Comparisons, nodeRSS, nodeCPU, idleRSS, idleCPU, connRSS, connCPU, holdRSS, holdMarginal, holdTotal, holdCPU)
	return pr, nil
}

func idleDHTNode(ctx context.Context, s pipeSide, boot string) (rss, cpu float64, err error) {
	argv := s.dhtNode(boot)
	p, err := startProc(ctx, procOpts{dir: s.dir}, argv[0], argv[1:]...)
	if err != nil {
		return 0, 0, err
	}
	defer p.Stop()
	if _, err := p.Wait("ready", 30*time.Second); err != nil {
		return 0, 0, err
	}
	if err := pause(ctx, settle); err != nil {
		return 0, 0, err
	}
	return usageOver(ctx, p.PID(), measureWindow)
}

type serverMeasure struct {
	idleRSS, idleCPU       float64
	perConnRSS, perConnCPU float64
	// marginalRSS is the RSS growth per connection from mid connections to
	// all of them (serverUsage); 0 when mid is 0.
	marginalRSS float64
}

// clientWave is how many clients serverUsage starts at once: a wave of
// Node.js processes starting takes this 2-core machine a few seconds.
const clientWave = 8

// serverUsage starts a server with command, measures it idle, connects conns
// clients of the same command and measures it again. With mid > 0 it also
// measures it once mid clients are connected: the growth from there to conns
// is what each further connection costs, without the one-time costs that the
// first connections pay (code paths run once, the first GC's metadata, a
// heap growing to its minimum goal).
func serverUsage(ctx context.Context, s pipeSide, command func(server bool, topic, boot string) []string, boot string, conns, mid int) (serverMeasure, error) {
	var m serverMeasure
	topic := randomTopic()
	srv, err := s.start(ctx, command(true, topic, boot))
	if err != nil {
		return m, err
	}
	defer srv.Stop()
	if _, err := srv.Wait("ready", 30*time.Second); err != nil {
		return m, err
	}
	if err := pause(ctx, settle); err != nil {
		return m, err
	}
	if m.idleRSS, m.idleCPU, err = usageOver(ctx, srv.PID(), measureWindow); err != nil {
		return m, err
	}
	var clients []*Proc
	defer func() {
		for _, c := range clients {
			c.Stop()
		}
	}()
	// connect brings the server from len(clients) connections to n: clients
	// start in waves, each waiting for its connection before the next.
	connect := func(n int) error {
		from := len(clients)
		for len(clients) < n {
			first := len(clients)
			for range min(clientWave, n-first) {
				c, err := s.start(ctx, command(false, topic, boot))
				if err != nil {
					return err
				}
				clients = append(clients, c)
			}
			for i, c := range clients[first:] {
				if _, err := c.Wait("connection", 60*time.Second); err != nil {
					return fmt.Errorf("client %d: %w", first+i, err)
				}
			}
		}
		for i := from; i < n; i++ {
			if _, err := srv.Wait("connection", 30*time.Second); err != nil {
				return fmt.Errorf("server saw %d of %d connections: %w", i, n, err)
			}
		}
		return pause(ctx, settle)
	}
	var midRSS float64
	if mid > 0 && mid < conns {
		if err := connect(mid); err != nil {
			return m, err
		}
		if midRSS, _, err = usageOver(ctx, srv.PID(), measureWindow); err != nil {
			return m, err
		}
	}
	if err := connect(conns); err != nil {
		return m, err
	}
	rss, cpu, err := usageOver(ctx, srv.PID(), measureWindow)
	if err != nil {
		return m, err
	}
	m.perConnRSS = (rss - m.idleRSS) / float64(conns)
	m.perConnCPU = (cpu - m.idleCPU) / float64(conns)
	if midRSS > 0 {
		m.marginalRSS = (rss - midRSS) / float64(conns-mid)
	}
	return m, nil
}

// pathSummary renders path counts as "direct×2 lan×1".
func pathSummary(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
