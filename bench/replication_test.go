package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/natlab"
)

// toolDBNoTransport is why the ToolDb side of the replication part is empty.
const toolDBNoTransport = "not available: tool-db 2.6.6 on npm ships no network transport (its websocket adapter exists only as source on GitHub; shared/reference/tooldb-protocol.md)"

// TestReplication is the bench's replication part, run by `go run ./bench
// -parts replication`: two `swarmdb node` processes behind two
// port-restricted NATs join one topic; `swarmdb put` on one, `swarmdb
// watch` on the other, and the delay until the subscriber prints the put.
// Without the BENCH_NAT variable it skips at once.
func TestReplication(t *testing.T) {
	raw := os.Getenv(natEnv)
	if raw == "" {
		t.Skip("the replication part runs from `go run ./bench -parts replication` (needs root)")
	}
	var cfg natConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	startCmp := Comparison{Name: "replication delay, put started → subscriber on the other node", Key: "repl-start-ms", Unit: "ms", Other: "ToolDb", Them: Sample{NA: toolDBNoTransport}}
	ackCmp := Comparison{Name: "replication delay, put acknowledged → subscriber on the other node", Key: "repl-ack-ms", Unit: "ms", Other: "ToolDb", Them: Sample{NA: toolDBNoTransport}}
	joinCmp := Comparison{Name: "node start → first peer connected (through both NATs)", Key: "repl-join-ms", Unit: "ms", Other: "ToolDb", Them: Sample{NA: toolDBNoTransport}}
	pr := &PartResult{Setup: []string{
		"internal/natlab: node A behind one port-restricted NAT, node B behind another; 3 `swarmdb bootstrap` nodes on the lab's public segment.",
		"`swarmdb node --topic T --bootstrap ... --json` on both (fresh data directories); `swarmdb watch --json KEY` against B's WebSocket; then, per repetition, `swarmdb put KEY {\"rep\":i}` against A's WebSocket.",
		"put started → subscriber: from starting the put command (process start, WebSocket connect and signing included) to B's watch printing the record; put acknowledged → subscriber: from the put command's exit (A holds the record) to that line — it can be negative when B sees the record before A's acknowledgement reaches the put command.",
	}}
	defer func() {
		if ackCmp.Swarm.OK() && ackCmp.Swarm.Median() < 0 {
			pr.Notes = append(pr.Notes, fmt.Sprintf("The subscriber on B printed the record a median %.0f ms before `swarmdb put` on A returned: replication through both NATs is faster than the put command's own acknowledgement path.", -ackCmp.Swarm.Median()))
		}
		pr.Comparisons = []Comparison{startCmp, ackCmp, joinCmp}
		b, _ := json.MarshalIndent(pr, "", " ")
		if err := os.WriteFile(cfg.Out, b, 0o644); err != nil {
			t.Error(err)
		}
	}()
	if cfg.Swarmdb == "" {
		for _, c := range []*Comparison{&startCmp, &ackCmp, &joinCmp} {
			c.Swarm.NA = cfg.SwarmdbNA
		}
		return
	}
	bin := cfg.Swarmdb
	reps := max(cfg.Reps, 5)
	lab := natlab.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	boot := swarmdbLabDHT(t, ctx, lab, bin)
	a := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted}).AddHost("a")
	b := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted}).AddHost("b")
	topic := randomTopic()
	node := func(h *natlab.Host) *Proc {
		return startIn(t, ctx, h, "", bin, "node", "--topic", topic, "--bootstrap", boot, "--json", "--no-lan", "--data", t.TempDir())
	}
	na := node(a)
	if _, err := na.Wait("ready", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	nb := node(b)
	ev, err := nb.Wait("peer_connected", 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	joinCmp.Swarm.Add(float64(time.Since(nb.Started).Milliseconds()))
	t.Logf("B connected: %v", ev)

	argv := inNS(b.Namespace(), []string{bin, "watch", "--topic", topic, "--json", "bench-key"})
	watch, err := startProc(ctx, procOpts{lines: true}, argv[0], argv[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(watch.Stop)
	put := func(i int) (started, acked time.Time) {
		started = time.Now()
		argv := inNS(a.Namespace(), []string{bin, "put", "--topic", topic, "bench-key", fmt.Sprintf(`{"rep":%d}`, i)})
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("put %d: %v: %s", i, err, out)
		}
		return started, time.Now()
	}
	seen := func(i int) (time.Time, error) {
		want := fmt.Sprintf(`"rep":%d`, i)
		deadline := time.After(30 * time.Second)
		for {
			select {
			case ev, ok := <-watch.Events:
				if !ok {
					return time.Time{}, fmt.Errorf("watch exited: %s", watch.Tail())
				}
				if strings.Contains(ev.Str("text"), want) {
					at, _ := ev["at"].(time.Time)
					return at, nil
				}
			case <-deadline:
				return time.Time{}, fmt.Errorf("rep %d not seen by the subscriber within 30s", i)
			}
		}
	}
	// Warm-up: the watch subscribes asynchronously; the first put that it
	// prints proves the subscription is live. Not measured.
	for i := -1; ; i-- {
		put(i)
		if _, err := seen(i); err == nil {
			break
		} else if i < -3 {
			t.Fatal(err)
		}
	}
	for i := range reps {
		started, acked := put(i)
		at, err := seen(i)
		if err != nil {
			t.Fatal(err)
		}
		startCmp.Swarm.Add(float64(at.Sub(started).Microseconds()) / 1000)
		ackCmp.Swarm.Add(float64(at.Sub(acked).Microseconds()) / 1000)
		t.Logf("rep %d: put start → seen %v, ack → seen %v", i, at.Sub(started), at.Sub(acked))
	}
}
