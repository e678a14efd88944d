package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testnet"
)

// dhtTopics is how many topics are announced per network (each by its own
// ephemeral node); lookups cycle through them.
const dhtTopics = 20

// runDHT builds, for each size, a swarmdb network (internal/testnet, in this
// process) and a HyperDHT network of the same size (one Node.js process),
// both on loopback and both up at once, then alternates lookups of announced
// topics from an ephemeral client on each.
func runDHT(ctx context.Context, o options) (*PartResult, error) {
	pr := &PartResult{Setup: []string{
		fmt.Sprintf("Each network: size-1 persistent nodes plus one ephemeral client; %d ephemeral nodes each announce one topic; "+
			"the client looks the topics up in turn (%d lookups per side and size), swarmdb and HyperDHT alternating.", dhtTopics, o.lookups),
		"swarmdb: internal/testnet in the bench process, every node on its own 127.x.y.z address, 16 nodes bootstrapping at once.",
		"HyperDHT: one Node.js process (bench/js/bench.js dht-server), persistent non-firewalled nodes on 127.0.0.1 as in hyperdht's createTestnet, 16 bootstrapping at once.",
		"Both networks are up during the whole size step, so each side's background maintenance runs while the other is measured.",
		"Hops: sequential request rounds until the closest replying node was reached (the dht package's LookupResult.Hops; the same count is taken in JS by wrapping dht-rpc's query reply hook).",
		"Memory per node: swarmdb Go heap in use / nodes; HyperDHT process RSS growth / nodes (RSS includes V8's heap reserve, so it overstates a little).",
	}}
	js, err := startJSServer(ctx, o)
	if err != nil {
		return nil, err
	}
	defer js.close()
	for _, size := range o.sizes {
		if err := dhtSize(ctx, o, js, size, pr); err != nil {
			return pr, fmt.Errorf("size %d: %w", size, err)
		}
	}
	return pr, nil
}

func dhtSize(ctx context.Context, o options, js *jsServer, size int, pr *PartResult) error {
	o.log.Info("dht network", "size", size)
	start := time.Now()
	var jsStart struct {
		BuildMs      float64 `json:"buildMs"`
		BytesPerNode float64 `json:"bytesPerNode"`
	}
	if err := js.call(map[string]any{"cmd": "start", "size": size, "topics": dhtTopics}, &jsStart); err != nil {
		return fmt.Errorf("hyperdht start: %w", err)
	}
	defer js.call(map[string]any{"cmd": "stop"}, nil)
	o.log.Info("hyperdht network up", "size", size, "took", time.Since(start).Round(time.Millisecond))

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	bctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	start = time.Now()
	nw, err := testnet.Start(bctx, testnet.Config{Persistent: size - 1})
	if err != nil {
		return err
	}
	defer nw.Close()
	client, err := nw.AddNode(bctx, dht.Config{Mode: dht.ModeEphemeral})
	if err != nil {
		return err
	}
	goBuild := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	perNode := float64(after.HeapInuse-before.HeapInuse) / float64(size)
	o.log.Info("swarmdb network up", "size", size, "took", goBuild.Round(time.Millisecond))

	topics := make([]dht.ID, dhtTopics)
	for i := range topics {
		topics[i] = dht.TopicKey(fmt.Sprintf("bench-%d", i))
		ann, err := nw.AddNode(bctx, dht.Config{Mode: dht.ModeEphemeral})
		if err != nil {
			return err
		}
		_, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			return err
		}
		if _, err := ann.Announce(bctx, topics[i], priv); err != nil {
			return err
		}
	}

	other := "HyperDHT"
	timeC := Comparison{Name: fmt.Sprintf("lookup time, %d nodes", size), Key: fmt.Sprintf("lookup-ms-%d", size), Unit: "ms", Other: other}
	hopsC := Comparison{Name: fmt.Sprintf("lookup hops, %d nodes", size), Key: fmt.Sprintf("lookup-hops-%d", size), Unit: "hops", Other: other}
	foundGo, foundJS := 0, 0
	for i := 0; i < o.lookups; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		t0 := time.Now()
		r, err := client.Lookup(lctx, topics[i%len(topics)])
		cancel()
		if err != nil {
			return fmt.Errorf("swarmdb lookup: %w", err)
		}
		timeC.Swarm.Add(float64(time.Since(t0).Microseconds()) / 1000)
		hopsC.Swarm.Add(float64(r.Hops))
		if len(r.Peers) > 0 {
			foundGo++
		}
		var jr struct {
			Ms    float64 `json:"ms"`
			Hops  float64 `json:"hops"`
			Found bool    `json:"found"`
		}
		if err := js.call(map[string]any{"cmd": "lookup", "i": i}, &jr); err != nil {
			return fmt.Errorf("hyperdht lookup: %w", err)
		}
		timeC.Them.Add(jr.Ms)
		hopsC.Them.Add(jr.Hops)
		if jr.Found {
			foundJS++
		}
	}
	found := Comparison{Name: fmt.Sprintf("lookups that found the announcer, %d nodes", size), Key: fmt.Sprintf("lookup-found-%d", size),
		Unit: "%", Higher: true, Other: other, Exact: true,
		Swarm: Sample{Values: []float64{100 * float64(foundGo) / float64(o.lookups)}},
		Them:  Sample{Values: []float64{100 * float64(foundJS) / float64(o.lookups)}}}
	mem := Comparison{Name: fmt.Sprintf("memory per node, %d nodes", size), Key: fmt.Sprintf("node-kib-%d", size), Unit: "KiB", Other: other,
		Swarm: Sample{Values: []float64{perNode / 1024}}, Them: Sample{Values: []float64{jsStart.BytesPerNode / 1024}}}
	build := Comparison{Name: fmt.Sprintf("network build time, %d nodes", size), Key: fmt.Sprintf("build-s-%d", size), Unit: "s", Other: other,
		Swarm: Sample{Values: []float64{goBuild.Seconds()}}, Them: Sample{Values: []float64{jsStart.BuildMs / 1000}}}
	pr.Comparisons = append(pr.Comparisons, timeC, hopsC, found, mem, build)
	o.log.Info("dht size done", "size", size, "swarmdb_ms", num(timeC.Swarm.Median()), "hyperdht_ms", num(timeC.Them.Median()),
		"swarmdb_hops", num(hopsC.Swarm.Median()), "hyperdht_hops", num(hopsC.Them.Median()))
	return nil
}

// jsServer is a long-running `node bench.js dht-server` answering one JSON
// line per request line.
type jsServer struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startJSServer(ctx context.Context, o options) (*jsServer, error) {
	cmd := exec.CommandContext(ctx, "node", "--expose-gc", filepath.Join(o.js, "bench.js"), "dht-server")
	cmd.Dir = o.js
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	return &jsServer{cmd: cmd, in: in, out: sc}, nil
}

func (s *jsServer) call(req map[string]any, reply any) error {
	b, _ := json.Marshal(req)
	if _, err := s.in.Write(append(b, '\n')); err != nil {
		return err
	}
	if !s.out.Scan() {
		return fmt.Errorf("dht-server exited: %v", s.out.Err())
	}
	var status struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	line := s.out.Bytes()
	if err := json.Unmarshal(line, &status); err != nil {
		return fmt.Errorf("dht-server: %w: %s", err, line)
	}
	if !status.OK {
		return fmt.Errorf("dht-server: %s", status.Error)
	}
	if reply != nil {
		return json.Unmarshal(line, reply)
	}
	return nil
}

// close ends the server by closing its stdin, then by its process id.
func (s *jsServer) close() {
	_ = s.in.Close()
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}
