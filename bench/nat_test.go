package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/natlab"
)

// natCell is one client/server placement of the matrix.
type natCell struct {
	key            string // e.g. "symmetric-to-fullcone"
	client, server *natlab.Host
}

// TestNATMatrix is the bench's NAT part, run by `go run ./bench -parts nat`
// (see runNAT): it needs a testing.TB for internal/natlab. Without the
// BENCH_NAT variable it skips at once.
func TestNATMatrix(t *testing.T) {
	raw := os.Getenv(natEnv)
	if raw == "" {
		t.Skip("the NAT matrix runs from `go run ./bench -parts nat` (needs root)")
	}
	var cfg natConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	reps := min(cfg.Reps, 3)
	timeout := time.Duration(cfg.TimeoutSec * float64(time.Second))
	o := options{js: cfg.JS, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	sw := swarmdbBin{path: cfg.Swarmdb, pipe: cfg.SwarmdbNA == "", why: cfg.SwarmdbNA}
	ss := sides(o, sw)

	lab := natlab.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 110*time.Minute)
	defer cancel()

	pr := &PartResult{Setup: []string{
		"internal/natlab: every NAT type is a real Linux namespace router with nftables (open, fullcone, restricted, portrestricted, symmetric; RFC 4787 behaviours), on a 203.0.113.0/24 \"internet\" bridge.",
		"Each side uses only its own DHT on the lab's public segment: Hyperswarm a 6-node HyperDHT testnet on one public host (`bench.js testnet 6 --host IP`); swarmdb 3 `swarmdb bootstrap` nodes on 3 public hosts. No public bootstrap nodes.",
		fmt.Sprintf("Rows: one server host behind a router of each type and one client host behind another router of each type (every ordered pair), plus two hosts behind one port-restricted NAT (same-nat) and a client behind a port-restricted home router behind a port-restricted carrier NAT (double-nat) dialling the port-restricted server. %d runs per side and cell, alternating sides, a fresh topic and fresh processes each run; a run fails when the client reports no connection within %v.", reps, timeout),
		"Connect time: the client's own report (join to first connection), successful runs only. Path: what the client reported (lan, direct, relay). Hyperswarm runs without a blind relay (relayThrough is not set), as in a default deployment.",
		fmt.Sprintf("Loss: %d MiB piped client→server between the two port-restricted hosts while the client's router drops each forwarded packet with the given probability (nftables), %d runs per side.", cfg.LossMiB, reps),
	}}
	save := func() {
		b, _ := json.MarshalIndent(pr, "", " ")
		if err := os.WriteFile(cfg.Out, b, 0o644); err != nil {
			t.Error(err)
		}
	}
	defer save()

	// DHTs on the public segment.
	boots := map[string]string{}
	script := filepath.Join(cfg.JS, "bench.js")
	hsHost := lab.AddPublicHost("hsdht")
	hsDHT := startIn(t, ctx, hsHost, cfg.JS, "node", script, "testnet", "6", "--host", hsHost.IP().String())
	ev, err := hsDHT.Wait("ready", 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	boots["Hyperswarm"] = ev.Str("bootstrap")
	if sw.pipe {
		boots["swarmdb"] = swarmdbLabDHT(t, ctx, lab, sw.path)
	}

	// Topology.
	types := natlab.Types()
	servers := map[natlab.NATType]*natlab.Host{}
	clients := map[natlab.NATType]*natlab.Host{}
	for _, typ := range types {
		servers[typ] = lab.AddRouter(natlab.RouterConfig{Type: typ}).AddHost("s")
		clients[typ] = lab.AddRouter(natlab.RouterConfig{Type: typ}).AddHost("c")
	}
	var cells []natCell
	for _, ct := range types {
		for _, st := range types {
			cells = append(cells, natCell{fmt.Sprintf("%s-to-%s", ct, st), clients[ct], servers[st]})
		}
	}
	home := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted})
	cells = append(cells, natCell{"same-nat", home.AddHost("c"), home.AddHost("s")})
	double := lab.AddDoubleNAT(natlab.RouterConfig{Type: natlab.PortRestricted})
	cells = append(cells, natCell{"double-nat-to-portrestricted", double.AddHost("c"), servers[natlab.PortRestricted]})

	grid := map[string]map[string]string{} // side -> cell -> "3/3 direct 40ms"
	for _, c := range cells {
		ok := Comparison{Name: "success rate " + c.key, Key: "nat-ok-" + c.key, Unit: "%", Higher: true, Other: "Hyperswarm", Detail: true, Exact: true}
		ms := Comparison{Name: "connect time " + c.key, Key: "nat-ms-" + c.key, Unit: "ms", Other: "Hyperswarm", Detail: true}
		paths := map[string]map[string]int{}
		wins := map[string]int{}
		for rep := 0; rep < reps; rep++ {
			for _, s := range ss {
				if s.NA != "" {
					continue
				}
				r, err := pipeOnce(ctx, s, pipeCase{boot: boots[s.Name], serverNS: c.server.Namespace(), clientNS: c.client.Namespace(), timeout: timeout})
				if err != nil && !errors.Is(err, errNoConnection) {
					t.Fatalf("%s %s: %v", s.Name, c.key, err)
				}
				if paths[s.Name] == nil {
					paths[s.Name] = map[string]int{}
				}
				if err == nil {
					wins[s.Name]++
					paths[s.Name][r.path]++
					sideOf(s, &ms).Add(r.connectMs)
				} else {
					paths[s.Name]["failed"]++
				}
				t.Logf("%s %s rep %d: err=%v connect_ms=%.0f path=%s", c.key, s.Name, rep, err, r.connectMs, r.path)
			}
		}
		var notes []string
		for _, s := range ss {
			if s.NA != "" {
				sideOf(s, &ok).NA, sideOf(s, &ms).NA = s.NA, s.NA
				continue
			}
			sideOf(s, &ok).Add(100 * float64(wins[s.Name]) / float64(reps))
			if wins[s.Name] == 0 {
				sideOf(s, &ms).NA = "never connected"
			}
			notes = append(notes, s.Name+": "+pathSummary(paths[s.Name]))
			if grid[s.Name] == nil {
				grid[s.Name] = map[string]string{}
			}
			cellText := fmt.Sprintf("%d/%d", wins[s.Name], reps)
			if m := sideOf(s, &ms); m.OK() {
				cellText += fmt.Sprintf(" %s %.0fms", topPath(paths[s.Name]), m.Median())
			}
			grid[s.Name][c.key] = cellText
		}
		ms.Note = strings.Join(notes, "; ")
		pr.Comparisons = append(pr.Comparisons, ok, ms)
		save()
	}
	// Aggregates for the summary: cells where every run connected, and the
	// median over cells of each cell's median connect time.
	allOK := Comparison{Name: fmt.Sprintf("NAT cells where every run connected (of %d)", len(cells)), Key: "nat-cells", Unit: "cells", Higher: true, Other: "Hyperswarm", Exact: true}
	medMs := Comparison{Name: "connect time, median over NAT cells", Key: "nat-ms-all", Unit: "ms", Other: "Hyperswarm"}
	for _, s := range ss {
		if s.NA != "" {
			sideOf(s, &allOK).NA, sideOf(s, &medMs).NA = s.NA, s.NA
			continue
		}
		var full float64
		var meds Sample
		for _, c := range pr.Comparisons {
			if strings.HasPrefix(c.Key, "nat-ok-") && sideOf(s, &c).Median() == 100 {
				full++
			}
			if strings.HasPrefix(c.Key, "nat-ms-") && sideOf(s, &c).OK() {
				meds.Add(sideOf(s, &c).Median())
			}
		}
		sideOf(s, &allOK).Add(full)
		sideOf(s, &medMs).Values = []float64{meds.Median()}
	}
	pr.Comparisons = append([]Comparison{allOK, medMs}, pr.Comparisons...)
	for _, s := range ss {
		if g := grid[s.Name]; g != nil {
			pr.Notes = append(pr.Notes, s.Name+" grid (rows: client NAT, columns: server NAT; successes/runs, usual path, median connect time):\n\n"+formatNATGrid(types, g))
		}
	}
	save()

	// Loss through the port-restricted pair.
	cr := clients[natlab.PortRestricted].Router()
	for _, rate := range cfg.LossRates {
		if err := cr.SetLoss(rate); err != nil {
			t.Fatal(err)
		}
		c := Comparison{Name: fmt.Sprintf("throughput portrestricted pair, %.1f %% loss", rate*100), Key: fmt.Sprintf("nat-loss-%g", rate),
			Unit: "MiB/s", Higher: true, Other: "Hyperswarm"}
		for rep := 0; rep < reps; rep++ {
			for _, s := range ss {
				if s.NA != "" {
					sideOf(s, &c).NA = s.NA
					continue
				}
				r, err := pipeOnce(ctx, s, pipeCase{boot: boots[s.Name], mib: cfg.LossMiB,
					serverNS: servers[natlab.PortRestricted].Namespace(), clientNS: clients[natlab.PortRestricted].Namespace(), timeout: timeout})
				if err != nil {
					t.Logf("loss %.3f %s rep %d: %v", rate, s.Name, rep, err)
					continue
				}
				sideOf(s, &c).Add(r.mibps)
				t.Logf("loss %.3f %s rep %d: %.1f MiB/s", rate, s.Name, rep, r.mibps)
			}
		}
		pr.Comparisons = append(pr.Comparisons, c)
		save()
	}
	if err := cr.SetLoss(0); err != nil {
		t.Error(err)
	}
}

// swarmdbLabDHT runs three `swarmdb bootstrap` nodes on three public lab
// hosts and returns their addresses, comma-separated.
func swarmdbLabDHT(t *testing.T, ctx context.Context, lab *natlab.Lab, bin string) string {
	t.Helper()
	var addrs []string
	for i := range 3 {
		h := lab.AddPublicHost(fmt.Sprintf("sdht%d", i))
		addr := h.IP().String() + ":49737"
		args := []string{"bootstrap", "--listen", addr, "--public-ip", h.IP().String(), "--json"}
		if i > 0 {
			args = append(args, "--bootstrap", addrs[0])
		}
		p := startIn(t, ctx, h, "", bin, args...)
		if _, err := p.Wait("ready", 30*time.Second); err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, addr)
	}
	return strings.Join(addrs, ",")
}

// startIn starts argv in host's namespace; the test stops it at the end.
func startIn(t *testing.T, ctx context.Context, h *natlab.Host, dir, name string, args ...string) *Proc {
	t.Helper()
	argv := inNS(h.Namespace(), append([]string{name}, args...))
	p, err := startProc(ctx, procOpts{dir: dir}, argv[0], argv[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

func sideOf(s pipeSide, c *Comparison) *Sample {
	if s.Name == "swarmdb" {
		return &c.Swarm
	}
	return &c.Them
}

func topPath(m map[string]int) string {
	best, n := "", 0
	for k, v := range m {
		if k != "failed" && (v > n || (v == n && k < best)) {
			best, n = k, v
		}
	}
	return best
}

// formatNATGrid renders one side's grid as a markdown table.
func formatNATGrid(types []natlab.NATType, g map[string]string) string {
	var b strings.Builder
	b.WriteString("| client \\ server |")
	for _, st := range types {
		fmt.Fprintf(&b, " %s |", st)
	}
	b.WriteString("\n|---|")
	for range types {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, ct := range types {
		fmt.Fprintf(&b, "| %s |", ct)
		for _, st := range types {
			fmt.Fprintf(&b, " %s |", g[fmt.Sprintf("%s-to-%s", ct, st)])
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "\nsame-nat: %s; double-nat-to-portrestricted: %s", g["same-nat"], g["double-nat-to-portrestricted"])
	return b.String()
}
