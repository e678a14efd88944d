package main

import (
	"context"
	"encoding/json"
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

// TestWANMatrix is the bench's wan part, run by `go run ./bench -parts wan`
// (see runNAT): one stream between two hosts behind port-restricted NATs whose
// uplinks add delay (natlab's delay line), for every RTT × loss, both stacks
// alternating; plus start→ready and join→connected at each RTT. Without the
// BENCH_NAT variable it skips at once.
func TestWANMatrix(t *testing.T) {
	raw := os.Getenv(natEnv)
	if raw == "" {
		t.Skip("the WAN matrix runs from `go run ./bench -parts wan` (needs root)")
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
		"internal/natlab: two hosts, each behind its own port-restricted NAT router (Linux namespaces, nftables). Each router's uplink runs through a delay line (a namespace bridging two veths with AF_PACKET sockets that hold every frame for the configured time; the kernel has no netem), adding RTT/4 each way, so host-to-host RTT is the cell's RTT; DHT nodes sit on the lab's public segment, one router hop away.",
		"Each side uses only its own DHT on the lab's public segment: Hyperswarm a 6-node HyperDHT testnet on one public host; swarmdb 3 `swarmdb bootstrap` nodes on 3 public hosts.",
		fmt.Sprintf("Throughput: %d MiB of random bytes piped client→server through one stream (`pipe`), timed from the client's connection to the server's last byte; the client's router drops each forwarded packet with the given probability in both directions (nftables). %d runs per side and cell, alternating sides, fresh processes and topic each run.", cfg.WANMiB, reps),
		"Setup at each RTT (loss-free runs): start→ready is the server process's start to its \"ready\" event (DHT joined, topic announced); join→connected is the client's own report (join to first connection); wall adds the client's process start.",
	}}
	save := func() {
		b, _ := json.MarshalIndent(pr, "", " ")
		if err := os.WriteFile(cfg.Out, b, 0o644); err != nil {
			t.Error(err)
		}
	}
	defer save()

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

	link := &natlab.LinkConfig{}
	rs := lab.AddRouter(natlab.RouterConfig{Name: "wans", Type: natlab.PortRestricted, Link: link})
	rc := lab.AddRouter(natlab.RouterConfig{Name: "wanc", Type: natlab.PortRestricted, Link: link})
	server, client := rs.AddHost("s"), rc.AddHost("c")

	var capacity []string
	for _, rtt := range cfg.WANRTTsMs {
		oneWay := time.Duration(rtt) * time.Millisecond / 4
		for _, r := range []*natlab.Router{rs, rc} {
			if err := r.SetLink(natlab.LinkConfig{Delay: oneWay}); err != nil {
				t.Fatal(err)
			}
		}
		if err := rc.SetLoss(0); err != nil {
			t.Fatal(err)
		}
		capacity = append(capacity, fmt.Sprintf("RTT %d ms: %s", rtt, pathCapacity(t, server, client)))
		ready := Comparison{Name: fmt.Sprintf("start→ready, RTT %d ms", rtt), Key: fmt.Sprintf("wan-ready-%d", rtt), Unit: "ms", Other: "Hyperswarm"}
		connect := Comparison{Name: fmt.Sprintf("join→connected, RTT %d ms", rtt), Key: fmt.Sprintf("wan-connect-%d", rtt), Unit: "ms", Other: "Hyperswarm"}
		wall := Comparison{Name: fmt.Sprintf("client start→connected, RTT %d ms", rtt), Key: fmt.Sprintf("wan-wall-%d", rtt), Unit: "ms", Other: "Hyperswarm", Detail: true}
		for _, loss := range cfg.WANLoss {
			if err := rc.SetLoss(loss); err != nil {
				t.Fatal(err)
			}
			c := Comparison{Name: fmt.Sprintf("one stream, RTT %d ms, %.1f %% loss", rtt, loss*100), Key: fmt.Sprintf("wan-%d-%g", rtt, loss),
				Unit: "MiB/s", Higher: true, Other: "Hyperswarm", Detail: true}
			var notes []string
			for rep := 0; rep < reps; rep++ {
				for _, s := range ss {
					if s.NA != "" {
						sideOf(s, &c).NA = s.NA
						continue
					}
					r, err := pipeOnce(ctx, s, pipeCase{boot: boots[s.Name], mib: cfg.WANMiB,
						serverNS: server.Namespace(), clientNS: client.Namespace(), timeout: timeout})
					if err != nil {
						t.Logf("rtt %d loss %.3f %s rep %d: %v", rtt, loss, s.Name, rep, err)
						notes = append(notes, fmt.Sprintf("%s rep %d failed: %s", s.Name, rep, firstLine(err.Error())))
						continue
					}
					sideOf(s, &c).Add(r.mibps)
					if loss == 0 {
						sideOf(s, &ready).Add(r.readyMs)
						sideOf(s, &connect).Add(r.connectMs)
						sideOf(s, &wall).Add(r.wallMs)
					}
					t.Logf("rtt %d loss %.3f %s rep %d: %.1f MiB/s, ready %.0f ms, connect %.0f ms, wall %.0f ms, path %s",
						rtt, loss, s.Name, rep, r.mibps, r.readyMs, r.connectMs, r.wallMs, r.path)
				}
			}
			c.Note = strings.Join(notes, "; ")
			pr.Comparisons = append(pr.Comparisons, c)
			save()
		}
		pr.Comparisons = append(pr.Comparisons, ready, connect, wall)
		save()
	}
	if err := rc.SetLoss(0); err != nil {
		t.Error(err)
	}
	pr.Notes = append(pr.Notes, "Throughput grid (median MiB/s, swarmdb / Hyperswarm = ratio):\n\n"+formatWANGrid(cfg, pr.Comparisons),
		fmt.Sprintf("What the path carries without a transport (natlab.Blast: %d-byte UDP datagrams, client→server through both NATs and lines, as fast as a sender that batches up to 48 per system call can send, for %v; no loss; best of %d): %s. A transport on the same two cores also spends CPU on encryption and acknowledgements, so this is a ceiling that neither side can reach.",
			wanBlastSize, wanBlastFor, wanBlastTries, strings.Join(capacity, "; ")))
}

// The path-capacity blast of TestWANMatrix.
const (
	wanBlastSize  = 1472 // the largest UDP payload of a 1500-byte MTU, as swarmdb's path MTU search finds it
	wanBlastFor   = time.Second
	wanBlastTries = 3
	wanBlastSrc   = 5002 // the sender's port, which the client's NAT keeps
)

// pathCapacity blasts from the client to the server through both NATs: the
// server's sink first punches toward the client's public address, then the
// client's sender sends to the server's public address. It returns the best
// of wanBlastTries as "X MiB/s (Y k datagrams/s)".
func pathCapacity(t *testing.T, server, client *natlab.Host) string {
	t.Helper()
	var best natlab.BlastResult
	for range wanBlastTries {
		r := natlab.Blast(t, natlab.BlastConfig{
			Helper: "TestWANBlast", From: client, To: server, For: wanBlastFor, Size: wanBlastSize,
			SrcPort: wanBlastSrc, ThroughNATs: true,
		})
		if r.Rate() > best.Rate() || best.Span == 0 {
			best = r
		}
	}
	return fmt.Sprintf("%.1f MiB/s (%.0fk datagrams/s)", best.MiBps(), best.KFps())
}

// TestWANBlast is one end of pathCapacity's blasts, run inside a lab host.
func TestWANBlast(t *testing.T) {
	if !natlab.BlastEnd(t) {
		t.Skip("one end of TestWANMatrix's path-capacity blast; runs only inside a lab namespace")
	}
}

// formatWANGrid renders the throughput cells as an RTT × loss table.
func formatWANGrid(cfg natConfig, cs []Comparison) string {
	byKey := map[string]Comparison{}
	for _, c := range cs {
		byKey[c.Key] = c
	}
	var b strings.Builder
	b.WriteString("| RTT \\ loss |")
	for _, l := range cfg.WANLoss {
		fmt.Fprintf(&b, " %.1f %% |", l*100)
	}
	b.WriteString("\n|---|")
	for range cfg.WANLoss {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, rtt := range cfg.WANRTTsMs {
		fmt.Fprintf(&b, "| %d ms |", rtt)
		for _, l := range cfg.WANLoss {
			c, ok := byKey[fmt.Sprintf("wan-%d-%g", rtt, l)]
			if !ok || !c.Swarm.OK() || !c.Them.OK() {
				b.WriteString(" — |")
				continue
			}
			fmt.Fprintf(&b, " %.1f / %.1f = %.2f |", c.Swarm.Median(), c.Them.Median(), Ratio(c.Swarm, c.Them))
		}
		b.WriteString("\n")
	}
	return b.String()
}
