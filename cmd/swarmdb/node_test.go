package main

import (
	"context"
	"os"
	"sync"

	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/node"
)

// proc is one swarmdb process this test started, with its JSON events.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	events chan map[string]any
	stderr *lockedBuffer // read on failure while the process may still write it
}

// startProc runs bin with args and reads one JSON event per stdout line.
func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, events: make(chan map[string]any, 64), stderr: &lockedBuffer{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Only this process, by its PID; no-op when it already exited.
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				p.events <- ev
			}
		}
		close(p.events)
	}()
	return p
}

// waitEvent returns the next event named name, skipping others.
func (p *proc) waitEvent(name string) map[string]any {
	p.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				p.t.Fatalf("process ended before %q; stderr:\n%s", name, p.stderr)
			}
			if ev["event"] == name {
				return ev
			}
		case <-timeout:
			p.t.Fatalf("no %q event in 30 s; stderr:\n%s", name, p.stderr)
		}
	}
}

// cli runs a client command to completion and returns its exit code and stdout.
func cli(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var errOut strings.Builder
	cmd.Stderr = &errOut
	out, err := cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Logf("%v: exit %d: %s", args[:1], code, errOut.String())
	}
	return code, string(out)
}

// TestNodeRestart is issue 7's must-show, with the real binary: nodes A and
// B on a loopback DHT; a put through A reaches B; B is killed with SIGKILL;
// more puts on A; B restarted on the same data dir has the same public key
// and catches up (get against B's WebSocket returns what it missed).
func TestNodeRestart(t *testing.T) {
	bin := buildBinary(t)
	boot := startProc(t, bin, "bootstrap", "--listen", "127.0.0.1:0", "--turn", "off", "--json")
	bootAddr := boot.waitEvent("ready")["addr"].(string)
	const topic = "restart-cli"
	nodeArgs := func(dir string) []string {
		return []string{"node", "--topic", topic, "--data", dir, "--bootstrap", bootAddr, "--listen", "127.0.0.1:0",
			"--ws", "127.0.0.1:0", "--loopback", "--no-lan", "--max-peers", "8", "--json"}
	}
	a := startProc(t, bin, nodeArgs(t.TempDir())...)
	readyA := a.waitEvent("ready")
	// Every DHT node is on loopback here: no router to ask for a mapping.
	if readyA["lan_only"] != false || len(readyA["public_key"].(string)) != 64 || readyA["udp"] == "" || readyA["portmap"] != "off" {
		t.Fatalf("ready event: %v", readyA)
	}
	dirB := filepath.Join(t.TempDir(), "b")
	b := startProc(t, bin, nodeArgs(dirB)...)
	readyB := b.waitEvent("ready")
	conn := a.waitEvent("peer_connected")
	if conn["peer"] != readyB["public_key"] || conn["path"] == "" || conn["connect_ms"] == nil {
		t.Fatalf("peer_connected: %v (B is %v)", conn, readyB["public_key"])
	}
	wsA, wsB := readyA["ws"].(string), readyB["ws"].(string)
	put := func(key, value string) {
		t.Helper()
		if code, _ := cli(t, bin, "put", "--ws", wsA, "--topic", topic, key, value); code != 0 {
			t.Fatalf("put %s: exit %d", key, code)
		}
	}
	get := func(ws, key string) (int, string) {
		return cli(t, bin, "get", "--ws", ws, "--topic", topic, "--timeout", "2s", key)
	}
	put("before", `"one"`)
	if code, out := get(wsB, "before"); code != 0 || out != "\"one\"\n" {
		t.Fatalf("get before on B: %d %q", code, out)
	}

	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = b.cmd.Wait()
	if ev := a.waitEvent("peer_disconnected"); ev["peer"] != readyB["public_key"] {
		t.Fatalf("peer_disconnected: %v", ev)
	}
	for i := range 5 {
		put(fmt.Sprintf("missed-%d", i), fmt.Sprint(i))
	}

	restarted := time.Now()
	b2 := startProc(t, bin, append(nodeArgs(dirB), "--metrics", "127.0.0.1:0")...)
	ready2 := b2.waitEvent("ready")
	if ready2["public_key"] != readyB["public_key"] || ready2["address"] != readyB["address"] {
		t.Fatalf("identity changed: %v -> %v", readyB["public_key"], ready2["public_key"])
	}
	wsB2 := ready2["ws"].(string)
	// Catch-up is anti-entropy on connect: wait until B's store accepted
	// the 5 records it missed, before any get (a get B cannot answer is
	// relayed to A, which would hide a missing catch-up).
	metrics := ready2["metrics"].(string)
	caughtUp := testutil.Poll(30*time.Second, 20*time.Millisecond, func() bool { // each check is an HTTP scrape
		return scrapeValue(t, metrics, `swarmdb_records_total{result="accepted"}`) >= 5
	})
	if !caughtUp {
		t.Fatalf("restarted B did not catch up in 30 s:\n%s", b2.stderr)
	}
	t.Logf("restarted B caught up on 5 missed records %v after its restart (process start included)", time.Since(restarted).Round(time.Millisecond))

	// Stop A: B now answers from its own store only.
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	a.waitEvent("stopped")
	if code, out := get(wsB2, "before"); code != 0 || out != "\"one\"\n" {
		t.Fatalf("get before on restarted B: %d %q", code, out)
	}
	for i := range 5 {
		key := fmt.Sprintf("missed-%d", i)
		if code, out := get(wsB2, key); code != 0 || strings.TrimSpace(out) != fmt.Sprint(i) {
			t.Fatalf("get %s on restarted B: %d %q", key, code, out)
		}
	}

	if err := b2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if ev := b2.waitEvent("stopped"); ev["reason"] != "signal" {
		t.Fatalf("stopped: %v", ev)
	}
	if err := b2.cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, b2.stderr)
	}
}

// scrapeValue fetches url and returns the value of one series (0 if absent).
func scrapeValue(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return f
		}
	}
	return 0
}

// TestNodeUsage: flag errors exit 2 without starting anything.
func TestNodeUsage(t *testing.T) {
	for _, args := range [][]string{
		{},                                               // no topic
		{"--topic", "t", "--mode", "x"},                  // bad mode
		{"--topic", "t", "extra"},                        // stray argument
		{"--topic", "t", "--bogus-flag"},                 // unknown flag
		{"--topic", "t", "--ws", "9000"},                 // not host:port
		{"--topic", "t", "--ws", "127.0.0.1:9000x"},      // bad port (was a start error)
		{"--topic", "t", "--ws", "wss://127.0.0.1:9000"}, // the node serves plain ws
		{"--topic", "t", "--listen", "127.0.0.1:70000"},  // bad port (was a start error)
		{"--topic", "t", "--bootstrap", "127.0.0.1"},     // no port
		{"--topic", "t", "--metrics", "localhost"},       // no port
		{"--topic", "t", "--data", t.TempDir(), "--public-ws", "http://node.example"}, // not ws:// or wss://
		{"--topic", "t", "--data", t.TempDir(), "--tls-cert", "cert.pem"},             // no --tls-key
		{"--topic", "t", "--max-peers", "0"},                                          // no connection allowed
		{"--topic", "t", "--map-ws"},                                                  // the WebSocket is on loopback by default
		{"--topic", "t", "--map-ws", "--ws", "off"},                                   // no WebSocket to map
		{"--topic", "t", "--map-ws", "--ws", ":9000", "--no-portmap"},                 // mapping off
	} {
		var out, errOut strings.Builder
		if code := nodeMain(t.Context(), args, stdio{out: &out, err: &errOut}); code != exitUsage {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errOut.String())
		}
	}
}

// TestNodeStartErrors: a node that cannot start says why on stderr, once
// ("swarmdb node: …", no "node: node:"), with nothing on stdout and exit 1:
// a data directory another node holds names its pid; a damaged write-ahead
// log says what --repair does, and --repair then starts it.
func TestNodeStartErrors(t *testing.T) {
	dir := t.TempDir()
	holder, err := node.New(node.Config{Topic: "t", DataDir: dir, ListenAddr: "127.0.0.1:0", DisableLAN: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	args := []string{"--topic", "t", "--data", dir, "--listen", "127.0.0.1:0", "--ws", "off", "--no-lan"}
	var out, errOut strings.Builder
	code := nodeMain(t.Context(), args, stdio{out: &out, err: &errOut})
	want := fmt.Sprintf("swarmdb node: data directory %s is in use by another node (pid %d)\n", dir, os.Getpid())
	if code != exitError || out.Len() != 0 || errOut.String() != want {
		t.Fatalf("second node: exit %d, stdout %q, stderr %q; want %q", code, out.String(), errOut.String(), want)
	}
	if _, err := holder.Put(t.Context(), "k", []byte(`"v"`)); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Put(t.Context(), "k2", []byte(`"v2"`)); err != nil {
		t.Fatal(err)
	}
	if err := holder.Close(); err != nil {
		t.Fatal(err)
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "db", "*.log"))
	if len(logs) != 1 {
		t.Fatalf("logs %v", logs)
	}
	b, err := os.ReadFile(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/3] ^= 0x08
	if err := os.WriteFile(logs[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errOut.Reset()
	code = nodeMain(t.Context(), args, stdio{out: &out, err: &errOut})
	if code != exitError || out.Len() != 0 || !strings.Contains(errOut.String(), "write-ahead log") ||
		!strings.Contains(errOut.String(), "--repair") || strings.Contains(errOut.String(), "node: node:") {
		t.Fatalf("damaged log: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
	// With --repair it starts; it is stopped as soon as it is ready.
	ctx, cancel := context.WithCancel(t.Context())
	ready := &readyWriter{cancel: cancel}
	code = nodeMain(ctx, append(args, "--repair"), stdio{out: ready, err: &errOut})
	if code != exitOK || !strings.Contains(ready.String(), "ready") {
		t.Fatalf("--repair: exit %d, stdout %q, stderr %q", code, ready.String(), errOut.String())
	}
	if copies, _ := filepath.Glob(filepath.Join(dir, "db.corrupt-*")); len(copies) != 1 {
		t.Fatalf("--repair kept %v", copies)
	}
}

// readyWriter collects a node's stdout and cancels once "ready" is written.
type readyWriter struct {
	mu     sync.Mutex
	b      strings.Builder
	cancel func()
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if strings.Contains(w.b.String(), "ready") {
		w.cancel()
	}
	return len(p), nil
}

func (w *readyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestNodeJSONLogs: with --json every log line on stderr is one JSON object
// with at most one "component" key (the swarm's DHT lines had two:
// component=swarm from node, then component=dht from the swarm).
func TestNodeJSONLogs(t *testing.T) {
	boot := startPipeDHT(t)
	ctx, cancel := context.WithCancel(t.Context())
	out := &readyWriter{cancel: cancel}
	var errOut lockedBuffer
	args := []string{"--topic", "t", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--ws", "off", "--no-lan",
		"--bootstrap", boot, "--json", "-v"}
	if code := nodeMain(ctx, args, stdio{out: out, err: &errOut}); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	components := map[string]bool{}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON log line: %q", l)
		}
		if n := strings.Count(l, `"component":`); n > 1 {
			t.Fatalf("component %d times: %s", n, l)
		}
		if c, ok := m["component"].(string); ok {
			components[c] = true
		}
	}
	if !components["dht"] {
		t.Fatalf("no DHT log line among %d: %v", len(lines), components)
	}
}
