package main

import (
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
)

// partTitles heads each part's section.
var partTitles = map[string]string{
	"dht":         "DHT: lookup time and hops vs network size (swarmdb vs HyperDHT)",
	"db":          "Database: verified durable writes and reads (swarmdb vs ToolDb 2.6.6)",
	"loopback":    "Loopback: join-to-connection time and one-stream throughput (swarmdb vs Hyperswarm)",
	"mainline":    "Mainline DHT: start to first peer, and memory per node (swarmdb vs discovery-channel / bittorrent-dht)",
	"resources":   "Resources: memory and CPU, idle and per connection (swarmdb vs Hyperswarm)",
	"nat":         "NAT matrix and loss (swarmdb vs Hyperswarm, in the NAT lab)",
	"wan":         "WAN paths: one stream at RTT × loss, and setup time at each RTT (swarmdb vs Hyperswarm, NAT lab with delay lines)",
	"replication": "Replication delay through two NATs (swarmdb node; ToolDb has no npm transport)",
}

// partCharts names each part's charts (written by writeCharts when there is
// data for them).
var partCharts = map[string][]string{
	"dht":       {"dht_lookup.png", "dht_hops.png"},
	"db":        {"db_rates.png"},
	"loopback":  {"loopback_connect.png", "loopback_throughput.png"},
	"resources": {"resources_rss.png"},
	"nat":       {"nat_connect.png", "nat_success.png", "nat_loss.png"},
}

// loseCauses explains, per comparison key prefix, why swarmdb is slower
// where it is: printed in the closing note only for comparisons it lost.
var loseCauses = map[string]string{
	"lookup-ms":    "swarmdb's lookup waits until the k closest nodes have all replied (Kademlia convergence, dht/lookup.go) and sends at most alpha requests per round; dht-rpc ends as soon as its pending list is empty.",
	"lookup-hops":  "both count rounds to the closest replying node; a difference comes from how many candidates each side seeds the first round with (swarmdb: routing-table closest; dht-rpc: table plus bootstrap).",
	"lookup-found": "some lookups returned no peers: the lookup converged on a set of closest nodes that did not include the nodes the announce stored on (the announces ran right after the network was built, 16 nodes bootstrapping at once, while routing tables were still filling). Not investigated further here; flagged for the dht package.",
	"node-kib":     "a joining swarmdb node fills its 8 farthest buckets with one lookup each (dht/query.go refreshFarBuckets), so its routing table holds more contacts than HyperDHT's; without it 5-10% of lookups missed the announcer. Measured as Go heap in use, which also counts what the runtime holds.",
	"build-s":      "a joining swarmdb node runs a self-lookup plus 8 far-bucket lookups (and an adaptive persistence probe) before it counts as started; in one process with thousands of nodes on 2 cores these lookups queue.",
	"db-writes":    "swarmdb acknowledges a write only after fsync (durable, group commit); ToolDb's leveldb store writes without sync, so its writes are not durable on power loss. The verify step is ECDSA P-256 on both sides.",
	"db-reads":     "Store.Get re-parses the stored JSON on every read (db/record.go ParseRecord): encoding/json unmarshals the whole record into a map of RawMessage (a validating scan of every byte), then json.Compact copies v in a second pass; ToolDb's read is one JSON.parse in V8. The per-byte cost dominates for larger values, which is why swarmdb wins at 64 B and loses at 1 KiB. Serving the stored bytes as they are (they were verified and compacted on the way in) would remove both passes.",
	"loop-connect": "swarmdb connects through pion/ice with a 20 ms connectivity-check interval (holepunch/ice.go, iceCheckInterval): when the first check round does not complete the pair, the connection waits for the next round, so its connect times are bimodal (about 3 ms or about 23 ms); HyperDHT sends its handshake and punch probes at once.",
	"loop-wall":    "see the join-to-connection row; the process start-up itself favours the Go binary.",
	"loop-mibps":   "one swarmdb stream is internal/reliable (RFC 9000 streams, RFC 9002 recovery, BBR, in Go) inside the Noise datagram layer: every packet (up to 1452 bytes after path MTU discovery) is sealed once (AES-256-GCM where both CPUs have AES instructions, else ChaCha20-Poly1305) and processed on the goroutine that reads the DHT socket, on two cores shared with the receiving process and the bench. Bursts leave with UDP segmentation offload and arrive with receive offload (one system call per run each way), and skip pion's data path (secure/batch.go, internal/udpopt, holepunch/ice_direct.go). Hyperswarm's stream is libudx (C) plus secret-stream with one stream-cipher call per write.",
	"nat-ms":       "as on loopback, swarmdb's ICE connectivity checks run every 20 ms (holepunch/ice.go, iceCheckInterval), so connect times land near multiples of 20 ms (23, 44 ms); Hyperswarm's punch needs one round trip through the DHT and then sends probes immediately.",
	"nat-loss":     "both stacks run BBR v1 (swarmdb: internal/reliable/bbr.go; libudx since holepunchto/libudx#256) and hold their rate under random loss; what is left is per-packet CPU on two shared cores (see the loopback row).",
	"res-":         "a Go process carries its runtime; at one connection the figure is mostly one-time costs (code pages the first connection touches, and its setup garbage, which a Go heap under its 4 MB goal has not collected), see the swarm-server rows for what each connection keeps.",
	"res-hold":     "an idle swarm connection holds no goroutine now, and about 15 KB of live heap; what the 0→60 figure adds to that is Go's arithmetic: one-time costs shared by the 60 (the first GC's metadata, code pages, the heap growing to its 4 MB minimum: about 51 KiB of the figure), pages partly filled by small objects of many size classes (about 24 KiB), free pages the setup peak left and the runtime has not returned yet (16–23), runtime metadata (about 31), and the garbage the idle connections made since the last collection (17 KB/s at 60 connections since stop 31, 52 before, when every idle connection was pinged every second); a Hyperswarm connection is a libudx socket and a secret stream, a few JavaScript objects and no threads.",
	"res-hold-cpu": "an idle swarm session sends a sealed keepalive every second (swarm.DefaultKeepaliveInterval) and opens the peer's, each a timer wake-up, an AEAD operation and a system call; a CPU profile of the server is mostly those wake-ups (futex, epoll, the system calls). Until stop 31 the membership's ping and pong went out on every idle connection about once a second instead, 2.4 datagrams a second per connection against 1.0 now, at the same CPU. Not analysed further, nor what a Hyperswarm connection sends while idle.",
	"wan-ready":    "start→ready is the DHT join, relay registration and the announce, each a few DHT round trips through the node's own delayed uplink, then the end of the NAT check's filtering probes (3 RTT + 100 ms after their request), which the announce runs beside; HyperDHT announces without a NAT check.",
	"wan-connect":  "join→connected is signaling through a relay (one round trip) and ICE's first check (one round trip plus up to one 10 ms check interval); the session needs no handshake of its own and its first packet travels with ICE's nominating check (holepunch/ice_early.go); Hyperswarm's client needs one round trip through the DHT and punches at once.",
	"wan-wall":     "before it dials, the client joins the DHT, asks the nodes it found for its mapping (one round trip) and looks the topic up: about six round trips to the DHT at RTT 80 ms, HyperDHT's client about four; then see join→connected.",
	"wan-":         "both stacks share two cores with the lab's delay lines (four directions of AF_PACKET forwarding in the bench process) and other engineers' test runs; cells within the min–max of the other side are noise.",
}

// exactCauses override loseCauses for one key.
var exactCauses = map[string]string{
	"nat-loss-0": "without loss this is the one-stream cost seen on loopback: internal/reliable (Go, one AEAD per packet) inside the Noise datagram layer, against libudx (C) plus secret-stream.",
}

func causeFor(key string) string {
	if c, ok := exactCauses[key]; ok {
		return c
	}
	var best string
	for p := range loseCauses {
		if strings.HasPrefix(key, p) && len(p) > len(best) {
			best = p
		}
	}
	if best == "" {
		return "not analysed yet."
	}
	return loseCauses[best]
}

func writeReport(path string, r *Results) error {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# swarmdb benchmarks: side by side with Hyperswarm, HyperDHT and ToolDb\n\n")
	w("Generated by `go run ./bench` (bench/main.go) on the machine below. Each comparison runs both sides\n")
	w("alternately in the same run; cells show **median (min–max)** over the repetitions, and the ratio is\n")
	w("swarmdb's median divided by the other side's (for times and memory lower is better, for rates higher).\n")
	w("\"tie\" means within 5 %% (equality for counts and success rates). Rerun one part with `go run ./bench -parts NAME`;\n")
	w("see bench/main.go for flags. The machine has 2 cores and was shared with other test runs: each part records the\n")
	w("load average before and after it, and timing rows measured under load (loopback, lookups) spread widely.\n\n")

	m := r.Machine
	w("## Machine\n\n")
	w("| | |\n|---|---|\n")
	w("| CPU | %s, %d cores (nproc) |\n", m.CPU, m.Cores)
	w("| memory | %.1f GiB |\n", m.MemoryGB)
	w("| kernel | Linux %s |\n", m.Kernel)
	w("| Go | %s |\n", m.Go)
	w("| Node.js | %s |\n", m.Node)
	w("| swarmdb commit | %s at the last run (each part names its own; other helpers' uncommitted work in the tree was included in the build) |\n", m.Commit)
	keys := make([]string, 0, len(m.Packages))
	for k := range m.Packages {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var pk []string
	for _, k := range keys {
		pk = append(pk, k+" "+m.Packages[k])
	}
	w("| npm packages (bench/js/package-lock.json) | %s |\n", strings.Join(pk, ", "))
	w("| root (NAT lab possible) | %v |\n\n", m.Root)
	w("All traffic stays on loopback or inside the NAT lab's namespaces; no public bootstrap node is contacted.\n\n")

	// Summary table: one row per comparison.
	w("## Summary\n\n")
	w("| part | comparison | unit | swarmdb | other | ratio | better |\n|---|---|---|---|---|---|---|\n")
	var losses []string
	for _, p := range partOrder {
		pr := r.Parts[p]
		if pr == nil {
			w("| %s | not run yet | | | | | |\n", p)
			continue
		}
		if pr.Error != "" {
			w("| %s | failed: %s | | | | | |\n", p, oneLine(pr.Error))
		}
		detailLost := map[string][]string{} // key prefix -> cells lost
		for _, c := range pr.Comparisons {
			lost := c.Verdict() != "" && c.Verdict() != "swarmdb" && c.Verdict() != "tie"
			if c.Detail {
				if lost {
					pre := gridPrefix(c.Key)
					detailLost[pre] = append(detailLost[pre], fmt.Sprintf("%s %s vs %s", strings.TrimPrefix(c.Key, pre), num(c.Swarm.Median()), num(c.Them.Median())))
				}
				continue
			}
			ratio := Ratio(c.Swarm, c.Them)
			rs := "—"
			if !math.IsNaN(ratio) {
				rs = fmt.Sprintf("%.2f", ratio)
			}
			w("| %s | %s | %s | %s | %s: %s | %s | %s |\n", p, c.Name, c.Unit, c.Swarm, c.Other, c.Them, rs, c.Verdict())
			if lost {
				losses = append(losses, fmt.Sprintf("- **%s** (%s): swarmdb %s vs %s %s %s. Cause: %s", c.Name, p, num(c.Swarm.Median()), c.Other, num(c.Them.Median()), c.Unit, causeFor(c.Key)))
			}
		}
		for _, pre := range slices.Sorted(maps.Keys(detailLost)) {
			cells := detailLost[pre]
			losses = append(losses, fmt.Sprintf("- **%s** (%s), %d cells: %s. Cause: %s", strings.TrimSuffix(pre, "-"), p, len(cells), strings.Join(cells, "; "), causeFor(pre)))
		}
	}
	w("\n")

	for _, p := range partOrder {
		pr := r.Parts[p]
		w("## %s\n\n", partTitles[p])
		if pr == nil {
			w("Not run yet: `go run ./bench -parts %s`.\n\n", p)
			continue
		}
		w("Run %s, %.0f s, `%s`, working tree at commit %s", pr.When, pr.Seconds, pr.Command, pr.Commit)
		if pr.Load != "" {
			w("; %s (%d cores)", pr.Load, r.Machine.Cores)
		}
		w(".\n\n")
		if pr.Error != "" {
			w("**This part failed:** `%s`\n\n", oneLine(pr.Error))
		}
		if len(pr.Setup) > 0 {
			w("How it is measured:\n\n")
			for _, s := range pr.Setup {
				w("- %s\n", s)
			}
			w("\n")
		}
		if len(pr.Comparisons) > 0 {
			w("| comparison | swarmdb | other | ratio swarmdb/other | better | note |\n|---|---|---|---|---|---|\n")
			for _, c := range pr.Comparisons {
				ratio := Ratio(c.Swarm, c.Them)
				rs := "—"
				if !math.IsNaN(ratio) {
					rs = fmt.Sprintf("%.2f", ratio)
				}
				w("| %s (%s) | %s | %s: %s | %s | %s | %s |\n", c.Name, c.Unit, c.Swarm, c.Other, c.Them, rs, c.Verdict(), c.Note)
			}
			w("\n")
		}
		for _, n := range pr.Notes {
			if strings.Contains(n, "\n") {
				w("%s\n\n", n) // a block (a table) of its own
			} else {
				w("- %s\n", n)
			}
		}
		if len(pr.Notes) > 0 {
			w("\n")
		}
		for _, png := range partCharts[p] {
			if _, err := os.Stat(strings.TrimSuffix(path, "REPORT.md") + png); err == nil {
				w("![%s](%s)\n\n", png, png)
			}
		}
	}

	w("## Context: published figures\n\n")
	w("Neither Hyperswarm nor HyperDHT publishes authoritative connect-time, punch-success or throughput figures\n")
	w("(shared/reference/hyperswarm.md §6); libudx ships a `udxperf` tool without posted results. The closest numbers\n")
	w("are indicative loopback runs on a 2-core VM in that reference: a client join connects about 36 ms after the\n")
	w("server's announce, and one secret-stream over UDX with both ends in one Node process moves about 0.74 Gbit/s.\n")
	w("Here both ends are separate processes moving data through stdin/stdout pipes, which is slower for both sides.\n")
	w("hyperdht's own tests run on 127.0.0.1 and do not simulate NATs (§7), so the NAT grid above has no published\n")
	w("counterpart; the libp2p DCUtR campaign (~80 %% punch success on real networks) is the nearest public field figure.\n\n")
	w("## Closing note: where swarmdb loses\n\n")
	if len(losses) == 0 {
		w("In the parts measured so far swarmdb does not lose a comparison by more than 5 %%.\n\n")
	} else {
		for _, l := range losses {
			w("%s\n", l)
		}
		w("\n")
	}
	var missing []string
	for _, p := range partOrder {
		pr := r.Parts[p]
		switch {
		case pr == nil:
			missing = append(missing, fmt.Sprintf("- %s: not run yet.", p))
		case pr.Error != "":
			missing = append(missing, fmt.Sprintf("- %s: failed (%s).", p, oneLine(pr.Error)))
		default:
			for _, c := range pr.Comparisons {
				if !c.Swarm.OK() && c.Swarm.NA != "" {
					missing = append(missing, fmt.Sprintf("- %s / %s: swarmdb %s.", p, c.Name, c.Swarm.NA))
				}
				if !c.Them.OK() && c.Them.NA != "" && c.Them.NA != "never connected" {
					missing = append(missing, fmt.Sprintf("- %s: the %s side is %s.", p, c.Other, c.Them.NA))
				}
			}
		}
	}
	if len(missing) > 0 {
		w("Not measured in this report:\n\n%s\n", strings.Join(dedupe(missing), "\n"))
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// gridPrefix returns the first two dash-separated words of a grid cell's
// key with the dash: "nat-ms-open-to-open" gives "nat-ms-".
func gridPrefix(key string) string {
	parts := strings.SplitN(key, "-", 3)
	if len(parts) < 3 {
		return key
	}
	return parts[0] + "-" + parts[1] + "-"
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

func dedupe(in []string) []string {
	var out []string
	for _, s := range in {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
