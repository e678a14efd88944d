package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/swarmdb/swarmdb/mainline"
	"github.com/swarmdb/swarmdb/node"
)

const (
	// mainlineNetwork is the size of the loopback mainline DHT the finders
	// search (bittorrent-dht 7.10.0 nodes, what discovery-channel runs).
	mainlineNetwork = 50
	// mainlineMemNodes is how many Go mainline nodes are added to measure
	// the memory of one.
	mainlineMemNodes = 20
	// findTimeout bounds one finder.
	findTimeout = time.Minute
)

// runMainline measures, on a loopback mainline DHT of 50 bittorrent-dht
// nodes, the time from a finder's start to the first peer found under a
// topic that one node announced: a whole swarmdb node (node.Start with
// only Config.Mainline, to its first MainlinePeer) against a
// discovery-channel client (DC() to its first "peer"), alternating, a fresh
// topic per repetition. It also measures the memory of one mainline node:
// swarmdb's mainline.Node (Go heap) against one bittorrent-dht node (RSS).
func runMainline(ctx context.Context, o options) (*PartResult, error) {
	dir := filepath.Join(o.root, "node", "testdata", "discovery")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "discovery-channel")); err != nil {
		return nil, fmt.Errorf("the discovery-channel side is not installed: run `(cd node/testdata/discovery && npm ci)`")
	}
	pr := &PartResult{Setup: []string{
		fmt.Sprintf("A closed mainline DHT of %d bittorrent-dht 7.10.0 nodes on 127.0.0.1 (node/testdata/discovery/routers.js), the first starting from nobody, the others from the first.", mainlineNetwork),
		"Per repetition, a fresh topic is announced (port 9999) by one Go mainline node joined to that network for the whole part; then each finder, given the addresses of all 50 nodes, looks it up, swarmdb and discovery-channel alternating.",
		"swarmdb: a whole node in the bench process (node.New + Start with Config.Mainline, DisableLAN, a fresh data dir), timed from Start to its first MainlinePeer event; and its mainline.Node alone (read-only, as behind NAT), timed from New to the first peer its Lookup streams.",
		"discovery-channel 5.5.1: `DC({dht: {bootstrap}, dns: false}).join(topic)` in its own Node.js process (find.js), timed inside the process from DC() to the first \"peer\" event (process start not counted).",
		fmt.Sprintf("Memory per mainline node: Go heap in use after %d more swarmdb mainline.Node join the network, per node; bittorrent-dht: RSS growth of routers.js per node while it builds the %d (node --expose-gc).", mainlineMemNodes, mainlineNetwork),
	}}
	routers, perJSNode, stop, err := startBenchRouters(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer stop()
	var addrs []netip.AddrPort
	for _, r := range routers {
		addrs = append(addrs, netip.MustParseAddrPort(r))
	}
	announcer, err := newBenchAnnouncer(addrs)
	if err != nil {
		return pr, err
	}
	defer announcer.Close()
	find := Comparison{Name: fmt.Sprintf("start to first peer over mainline, %d-node DHT", mainlineNetwork),
		Key: "mainline-first-peer-ms", Unit: "ms", Other: "discovery-channel",
		Note: "swarmdb's time includes opening its store and starting its swarm; discovery-channel's excludes the Node.js process start"}
	lookup := Comparison{Name: fmt.Sprintf("mainline node start to first peer, %d-node DHT", mainlineNetwork),
		Key: "mainline-lookup-ms", Unit: "ms", Other: "discovery-channel",
		Note: "swarmdb: its mainline.Node alone (New, Start, Lookup)"}
	for rep := 0; rep < o.reps; rep++ {
		topic := fmt.Sprintf("bench-mainline-%d-%d", time.Now().UnixNano(), rep)
		if err := announceTopic(ctx, announcer, topic); err != nil {
			return pr, fmt.Errorf("announce: %w", err)
		}
		ms, err := swarmdbFindMS(ctx, o, routers, topic)
		if err != nil {
			return pr, fmt.Errorf("swarmdb finder: %w", err)
		}
		find.Swarm.Add(ms)
		lms, err := mainlineFindMS(ctx, addrs, topic)
		if err != nil {
			return pr, fmt.Errorf("swarmdb mainline finder: %w", err)
		}
		lookup.Swarm.Add(lms)
		jsMS, err := dcFindMS(ctx, dir, routers, topic)
		if err != nil {
			return pr, fmt.Errorf("discovery-channel finder: %w", err)
		}
		find.Them.Add(jsMS)
		lookup.Them.Add(jsMS)
		o.log.Info("mainline find", "rep", rep, "swarmdb_node_ms", num(ms), "swarmdb_mainline_ms", num(lms), "discovery_channel_ms", num(jsMS))
	}
	perGoNode, err := mainlineNodeBytes(addrs)
	if err != nil {
		return pr, err
	}
	mem := Comparison{Name: "memory per mainline DHT node", Key: "mainline-node-kib", Unit: "KiB", Other: "bittorrent-dht",
		Swarm: Sample{Values: []float64{perGoNode / 1024}}, Them: Sample{Values: []float64{perJSNode / 1024}}}
	pr.Comparisons = append(pr.Comparisons, find, lookup, mem)
	return pr, nil
}

// startBenchRouters starts routers.js with the network's size and returns
// its nodes' addresses, its RSS growth per node, and a stop function.
func startBenchRouters(ctx context.Context, dir string) ([]string, float64, func(), error) {
	cmd := exec.CommandContext(ctx, "node", "--expose-gc", "routers.js", fmt.Sprint(mainlineNetwork))
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, 0, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, 0, nil, err
	}
	stop := func() {
		_ = in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the group this part started
			<-done
		}
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() {
		stop()
		return nil, 0, nil, fmt.Errorf("routers.js printed nothing: %v", sc.Err())
	}
	var ready struct {
		Routers      []string `json:"routers"`
		BytesPerNode float64  `json:"bytesPerNode"`
	}
	if err := json.Unmarshal(sc.Bytes(), &ready); err != nil || len(ready.Routers) != mainlineNetwork {
		stop()
		return nil, 0, nil, fmt.Errorf("routers.js: %q: %v", sc.Text(), err)
	}
	return ready.Routers, ready.BytesPerNode, stop, nil
}

// newBenchAnnouncer starts the Go mainline node that announces the topics.
// It lives through the whole part: an announcer closed after each
// repetition would leave a dead node in the network's tables for every one.
func newBenchAnnouncer(routers []netip.AddrPort) (*mainline.Node, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	n, err := mainline.New(mainline.Config{Conn: c, Routers: routers})
	if err != nil {
		return nil, err
	}
	return n, n.Start()
}

// announceTopic announces port 9999 under the topic's infohash.
func announceTopic(ctx context.Context, n *mainline.Node, topic string) error {
	actx, cancel := context.WithTimeout(ctx, findTimeout)
	defer cancel()
	res, err := n.Announce(actx, mainline.TopicInfohash(topic), 9999, false, nil)
	if err == nil && res.Responded == 0 {
		err = fmt.Errorf("no node answered")
	}
	return err
}

// swarmdbFindMS starts a swarmdb node with only the mainline routers and
// returns the milliseconds from Start to its first ToolDb peer found.
func swarmdbFindMS(ctx context.Context, o options, routers []string, topic string) (float64, error) {
	found := make(chan time.Time, 1)
	dataDir, err := os.MkdirTemp(o.tmp, "mainline-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dataDir)
	nd, err := node.New(node.Config{Topic: topic, DataDir: dataDir, ListenAddr: "127.0.0.1:0", Mainline: routers,
		DisableLAN: true, Client: true,
		OnMainlinePeer: func(p node.MainlinePeer) {
			if p.Kind == "tooldb" {
				select {
				case found <- time.Now():
				default:
				}
			}
		}})
	if err != nil {
		return 0, err
	}
	fctx, cancel := context.WithTimeout(ctx, findTimeout)
	defer cancel()
	start := time.Now()
	if err := nd.Start(fctx); err != nil {
		return 0, err
	}
	defer nd.Close()
	select {
	case at := <-found:
		return float64(at.Sub(start).Microseconds()) / 1000, nil
	case <-fctx.Done():
		return 0, fmt.Errorf("no peer found in %v", findTimeout)
	}
}

// mainlineFindMS starts a read-only mainline node alone and returns the
// milliseconds from New to the first peer its lookup of the topic finds.
func mainlineFindMS(ctx context.Context, routers []netip.AddrPort, topic string) (float64, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	start := time.Now()
	n, err := mainline.New(mainline.Config{Conn: c, Routers: routers, ReadOnly: true})
	if err != nil {
		return 0, err
	}
	if err := n.Start(); err != nil {
		return 0, err
	}
	defer n.Close()
	fctx, cancel := context.WithTimeout(ctx, findTimeout)
	defer cancel()
	var first time.Duration
	_, err = n.Lookup(fctx, mainline.TopicInfohash(topic), func(netip.AddrPort) {
		if first == 0 {
			first = time.Since(start)
			cancel() // the rest of the traversal is not timed
		}
	})
	if first == 0 {
		return 0, fmt.Errorf("no peer found: %v", err)
	}
	return float64(first.Microseconds()) / 1000, nil
}

// dcFindMS runs find.js and returns the time it measured.
func dcFindMS(ctx context.Context, dir string, routers []string, topic string) (float64, error) {
	fctx, cancel := context.WithTimeout(ctx, findTimeout)
	defer cancel()
	cmd := exec.CommandContext(fctx, "node", "find.js", topic, strings.Join(routers, ","))
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("find.js: %w", err)
	}
	var ev struct {
		MS float64 `json:"ms"`
	}
	if err := json.Unmarshal(out, &ev); err != nil {
		return 0, fmt.Errorf("find.js printed %q: %w", out, err)
	}
	return ev.MS, nil
}

// mainlineNodeBytes joins mainlineMemNodes Go mainline nodes to the
// network, lets them bootstrap, and returns the Go heap in use per node.
func mainlineNodeBytes(routers []netip.AddrPort) (float64, error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var nodes []*mainline.Node
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	for range mainlineMemNodes {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		n, err := mainline.New(mainline.Config{Conn: c, Routers: routers})
		if err != nil {
			return 0, err
		}
		if err := n.Start(); err != nil {
			return 0, err
		}
		nodes = append(nodes, n)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range nodes {
		for n.Stats().GoodNodes < 8 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	return float64(after.HeapInuse-before.HeapInuse) / mainlineMemNodes, nil
}
