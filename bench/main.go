// Command bench measures swarmdb side by side with Hyperswarm/HyperDHT and
// ToolDb on this machine and writes bench/results/REPORT.md plus PNG charts.
//
// Every comparison runs both sides alternately in the same run (several
// repetitions), and reports the median, the min–max and the ratio
// swarmdb/other. The Node.js side lives in bench/js (pinned by its
// package-lock.json; run `npm ci` there first). The swarmdb side of the
// connection comparisons drives the `swarmdb pipe` command, built once from
// ./cmd/swarmdb; when that command is missing the report says "not
// available" for that side instead of showing numbers.
//
//	go run ./bench                         all parts
//	go run ./bench -parts dht,db -reps 3   some parts; the others keep their last results
//
// Parts: dht (lookup time and hops vs network size), db (verified durable
// writes and reads), loopback (join-to-connection time, one-stream
// throughput), resources (RSS and CPU, idle and per connection), nat (NAT
// matrix and loss runs in the NAT lab; needs root), wan (one stream between
// two port-restricted NATs whose uplinks add delay, RTT × loss, plus setup
// times at each RTT; needs root), replication (put on one
// swarmdb node, seen by a subscriber on another, through two NATs; needs
// root), mainline (time to the first peer found over the BitTorrent
// mainline DHT, against discovery-channel; memory per mainline node). Results accumulate in
// bench/results/results.json, from which the report and charts are
// rendered, so a part can be rerun alone.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// partOrder is the order parts run and appear in the report.
var partOrder = []string{"dht", "db", "loopback", "resources", "nat", "wan", "replication", "mainline"}

// options are the command's flags.
type options struct {
	parts   []string
	reps    int
	lookups int
	sizes   []int
	records int
	mib     int
	wanMiB  int
	conns   int
	// holdConns: connections to one swarm server (resources, bench/hold)
	holdConns int
	out       string
	js        string
	tmp       string
	root      string
	log       *slog.Logger
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var o options
	parts := flag.String("parts", strings.Join(partOrder, ","), "comma-separated parts to run: "+strings.Join(partOrder, ","))
	flag.IntVar(&o.reps, "reps", 5, "repetitions per side of each comparison (db, loopback, resources, nat)")
	flag.IntVar(&o.lookups, "lookups", 40, "lookups per side and network size (dht)")
	sizes := flag.String("sizes", "100,1000,3000", "DHT network sizes (dht)")
	flag.IntVar(&o.records, "records", 5000, "records per write run (db)")
	flag.IntVar(&o.mib, "mib", 64, "MiB piped through one stream (loopback)")
	flag.IntVar(&o.wanMiB, "wan-mib", 64, "MiB piped through one stream per WAN cell (wan)")
	flag.IntVar(&o.conns, "conns", 1, "connections opened to one pipe server (resources); `swarmdb pipe --server` accepts one")
	flag.IntVar(&o.holdConns, "hold-conns", 60, "connections opened to one swarm server (resources: bench/hold vs Hyperswarm; both allow 64 peers)")
	render := flag.Bool("render", false, "only re-render REPORT.md and the charts from results.json")
	verbose := flag.Bool("v", false, "debug logging")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	o.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	root, err := repoRoot()
	if err != nil {
		return err
	}
	o.root = root
	o.out = filepath.Join(root, "bench", "results")
	o.js = filepath.Join(root, "bench", "js")
	o.tmp = filepath.Join(o.out, "tmp")
	for _, p := range strings.Split(*parts, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(partOrder, p) {
			return fmt.Errorf("unknown part %q (have %s)", p, strings.Join(partOrder, ","))
		}
		o.parts = append(o.parts, p)
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 10 {
			return fmt.Errorf("bad -sizes entry %q (want integers >= 10)", s)
		}
		o.sizes = append(o.sizes, n)
	}
	if o.reps < 1 {
		return errors.New("-reps must be at least 1")
	}

	res, err := loadResults(filepath.Join(o.out, "results.json"))
	if err != nil {
		return err
	}
	if !*render {
		if err := os.MkdirAll(o.tmp, 0o755); err != nil {
			return err
		}
		defer os.RemoveAll(o.tmp)
		if _, err := os.Stat(filepath.Join(o.js, "node_modules", "hyperswarm")); err != nil {
			return fmt.Errorf("the Node.js side is not installed: run `(cd bench/js && npm ci)`")
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		res.Machine = describeMachine(ctx, o)
		sw := buildSwarmdb(ctx, o)
		for _, p := range partOrder {
			if !slices.Contains(o.parts, p) {
				continue
			}
			if (p == "nat" || p == "wan" || p == "replication") && os.Geteuid() != 0 {
				o.log.Warn("skipping a part that needs root (NAT lab); its last results stay in the report", "name", p)
				continue
			}
			o.log.Info("part", "name", p)
			start := time.Now()
			loadBefore := loadAvg()
			pr, err := runPart(ctx, o, sw, p)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				o.log.Error("part failed", "name", p, "err", err)
				pr = &PartResult{Error: err.Error()}
			}
			pr.When = time.Now().UTC().Format(time.RFC3339)
			pr.Seconds = time.Since(start).Seconds()
			pr.Commit = res.Machine.Commit
			pr.Load = fmt.Sprintf("1-minute load average %s before, %s after", loadBefore, loadAvg())
			pr.Command = strings.TrimSpace("go run ./bench " + strings.Join(os.Args[1:], " "))
			res.Parts[p] = pr
			if err := res.save(filepath.Join(o.out, "results.json")); err != nil {
				return err
			}
		}
	}
	if err := writeCharts(o.out, res); err != nil {
		return err
	}
	return writeReport(filepath.Join(o.out, "REPORT.md"), res)
}

func runPart(ctx context.Context, o options, sw swarmdbBin, part string) (*PartResult, error) {
	switch part {
	case "dht":
		return runDHT(ctx, o)
	case "db":
		return runDB(ctx, o)
	case "loopback":
		return runLoopback(ctx, o, sw)
	case "resources":
		return runResources(ctx, o, sw)
	case "nat":
		return runNAT(ctx, o, sw, "TestNATMatrix")
	case "wan":
		return runNAT(ctx, o, sw, "TestWANMatrix")
	case "replication":
		return runNAT(ctx, o, sw, "TestReplication")
	case "mainline":
		return runMainline(ctx, o)
	}
	return nil, fmt.Errorf("unknown part %q", part)
}

// repoRoot finds the module root (the directory holding go.mod) from the
// working directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the swarmdb module (no go.mod found)")
		}
		dir = parent
	}
}

// swarmdbBin is the built command and whether it has `pipe`, and the bench's
// swarm holder (bench/hold).
type swarmdbBin struct {
	path string
	pipe bool
	why  string // why pipe is unavailable
	hold string // "" when it did not build
}

// buildSwarmdb builds ./cmd/swarmdb once and checks for the pipe command.
func buildSwarmdb(ctx context.Context, o options) swarmdbBin {
	bin := filepath.Join(o.tmp, "swarmdb")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/swarmdb")
	cmd.Dir = o.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return swarmdbBin{why: "not available: `go build ./cmd/swarmdb` failed: " + firstLine(string(out))}
	}
	out, _ := exec.CommandContext(ctx, bin, "pipe", "-h").CombinedOutput()
	if strings.Contains(string(out), "unknown command") {
		return swarmdbBin{path: bin, why: "not available: `swarmdb pipe` is not implemented yet (issue 4)"}
	}
	sw := swarmdbBin{path: bin, pipe: true}
	hold := filepath.Join(o.tmp, "hold")
	cmd = exec.CommandContext(ctx, "go", "build", "-o", hold, "./bench/hold")
	cmd.Dir = o.root
	if out, err := cmd.CombinedOutput(); err != nil {
		o.log.Warn("bench/hold did not build; the many-connection measurement is skipped", "err", firstLine(string(out)))
	} else {
		sw.hold = hold
	}
	return sw
}

// loadAvg returns the 1-minute load average from /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Comparison is one case measured on both sides.
type Comparison struct {
	Name   string `json:"name"`   // e.g. "lookup time, 1000 nodes"
	Key    string `json:"key"`    // stable id for charts and notes
	Unit   string `json:"unit"`   // "ms", "writes/s", ...
	Higher bool   `json:"higher"` // higher is better
	Other  string `json:"other"`  // the other side's name
	Swarm  Sample `json:"swarmdb"`
	Them   Sample `json:"other_sample"`
	Note   string `json:"note,omitempty"`
	// Detail marks one cell of a larger grid: shown in its part's table,
	// left out of the summary (which shows the grid's aggregate).
	Detail bool `json:"detail,omitempty"`
	// Exact: counts and success rates, where only equality is a tie.
	Exact bool `json:"exact,omitempty"`
}

// Verdict says who won: "swarmdb", the other side's name, "tie" (within
// 5 %, or equal for Exact comparisons), or "" when a side is missing.
func (c Comparison) Verdict() string {
	r := Ratio(c.Swarm, c.Them)
	if math.IsNaN(r) {
		return ""
	}
	if r == 1 || (!c.Exact && r > 0.95 && r < 1.05) {
		return "tie"
	}
	if (r > 1) == c.Higher {
		return "swarmdb"
	}
	return c.Other
}

// PartResult is one part's outcome.
type PartResult struct {
	When        string       `json:"when"`
	Seconds     float64      `json:"seconds"`
	Command     string       `json:"command"`
	Commit      string       `json:"commit,omitempty"` // HEAD when run (the binary is built from the working tree)
	Load        string       `json:"load,omitempty"`   // load averages before and after: the machine may be shared
	Setup       []string     `json:"setup,omitempty"`  // how it was measured
	Comparisons []Comparison `json:"comparisons,omitempty"`
	Notes       []string     `json:"notes,omitempty"`
	Error       string       `json:"error,omitempty"`
}

// Results is everything measured so far, by part.
type Results struct {
	Machine Machine                `json:"machine"`
	Parts   map[string]*PartResult `json:"parts"`
}

func loadResults(path string) (*Results, error) {
	r := &Results{Parts: map[string]*PartResult{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Parts == nil {
		r.Parts = map[string]*PartResult{}
	}
	return r, nil
}

func (r *Results) save(path string) error {
	b, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
