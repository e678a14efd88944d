package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/secure"
)

// pipeTestTimeout bounds one pipe run (join, lookup, connect, 1 MiB).
const pipeTestTimeout = 60 * time.Second

// pipeProc is a running `swarmdb pipe` with its stderr events.
type pipeProc struct {
	cmd    *exec.Cmd
	out    lockedBuffer
	events chan map[string]any
	all    []map[string]any // every event, filled by wait
	done   chan struct{}    // closed when stderr is drained
	other  []string         // non-event stderr lines (logs)
}

// lockedBuffer is a bytes.Buffer the test may read while the process
// writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// String is what was written so far, for failure messages.
func (l *lockedBuffer) String() string { return string(l.Bytes()) }

// startPipe runs the binary with args and stdin; events are the JSON lines
// on stderr that carry "event" (log lines are kept apart).
func startPipe(t *testing.T, bin string, stdin io.Reader, args ...string) *pipeProc {
	t.Helper()
	p := &pipeProc{events: make(chan map[string]any, 16), done: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"pipe", "--json"}, args...)...)
	p.cmd.Stdin = stdin
	p.cmd.Stdout = &p.out
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	go func() {
		defer close(p.done)
		defer close(p.events)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) != nil || ev["event"] == nil {
				p.other = append(p.other, sc.Text())
				continue
			}
			p.events <- ev
		}
	}()
	return p
}

// next returns the next event, failing the test after a bounded wait.
func (p *pipeProc) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case ev, ok := <-p.events:
		if !ok {
			t.Fatalf("stderr ended without another event; logs: %s", strings.Join(p.other, "\n"))
		}
		p.all = append(p.all, ev)
		return ev
	case <-time.After(pipeTestTimeout):
		t.Fatal("timed out waiting for an event")
		return nil
	}
}

// wait collects the remaining events and returns the exit code.
func (p *pipeProc) wait(t *testing.T) int {
	t.Helper()
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				<-p.done
				err := p.cmd.Wait()
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return ee.ExitCode()
				}
				if err != nil {
					t.Fatal(err)
				}
				return 0
			}
			p.all = append(p.all, ev)
		case <-time.After(pipeTestTimeout):
			t.Fatal("timed out waiting for the process to exit")
		}
	}
}

// index is the position of the first event called name, or -1.
func (p *pipeProc) index(name string) int {
	for i, ev := range p.all {
		if ev["event"] == name {
			return i
		}
	}
	return -1
}

// event returns the collected event named name, failing if absent.
func (p *pipeProc) event(t *testing.T, name string) map[string]any {
	t.Helper()
	if i := p.index(name); i >= 0 {
		return p.all[i]
	}
	t.Fatalf("no %q event in %v; logs: %s", name, p.all, strings.Join(p.other, "\n"))
	return nil
}

// startPipeDHT starts three persistent DHT nodes on loopback (the NAT
// measurement needs nodes on several IPs) and returns the bootstrap flag.
func startPipeDHT(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := testnet.Start(ctx, testnet.Config{Persistent: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n.Bootstrap[0].String()
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPipeLoopback runs `pipe --server` and `pipe` as built binaries on a
// loopback DHT and pipes 1 MiB each way: both must arrive byte-exact, the
// events must name each other's keys and the lan path, and both exit 0.
func TestPipeLoopback(t *testing.T) {
	boot := startPipeDHT(t)
	bin := buildBinary(t)
	toClient, toServer := randomBytes(t, 1<<20), randomBytes(t, 1<<20)

	srv := startPipe(t, bin, bytes.NewReader(toClient), "--server", "--bootstrap", boot, "--listen", "127.77.0.2:0", "pipe-loopback")
	sr := srv.next(t)
	if sr["event"] != "ready" || sr["role"] != "server" || sr["topic"] != "pipe-loopback" || sr["stored"].(float64) < 1 ||
		len(sr["relays"].([]any)) == 0 || len(sr["public_key"].(string)) != 64 {
		t.Fatalf("server ready: %v", sr)
	}
	cli := startPipe(t, bin, bytes.NewReader(toServer), "--bootstrap", boot, "--listen", "127.77.0.3:0", "pipe-loopback")
	cr := cli.next(t)
	if cr["event"] != "ready" || cr["role"] != "client" {
		t.Fatalf("client ready: %v", cr)
	}
	if code := cli.wait(t); code != 0 {
		t.Fatalf("client exit %d: %v %s", code, cli.all, cli.other)
	}
	if code := srv.wait(t); code != 0 {
		t.Fatalf("server exit %d: %v %s", code, srv.all, srv.other)
	}
	if !bytes.Equal(cli.out.Bytes(), toClient) {
		t.Fatalf("client got %d bytes, not the server's 1 MiB", cli.out.Len())
	}
	if !bytes.Equal(srv.out.Bytes(), toServer) {
		t.Fatalf("server got %d bytes, not the client's 1 MiB", srv.out.Len())
	}

	cc, sc := cli.event(t, "connection"), srv.event(t, "connection")
	if cc["peer"] != sr["public_key"] || sc["peer"] != cr["public_key"] {
		t.Fatalf("peers: client saw %v (server is %v), server saw %v (client is %v)", cc["peer"], sr["public_key"], sc["peer"], cr["public_key"])
	}
	if cc["path"] != string(holepunch.PathLAN) || sc["path"] != string(holepunch.PathLAN) {
		t.Fatalf("paths %v / %v, want lan on loopback", cc["path"], sc["path"])
	}
	if ms, ok := cc["connect_ms"].(float64); !ok || ms < 0 {
		t.Fatalf("client connect_ms: %v", cc)
	}
	// Both ends run on this machine, so they chose the same outer cipher.
	if c := cc["cipher"]; c != sc["cipher"] || (c != secure.CipherAES256GCM.String() && c != secure.CipherChaCha20Poly1305.String()) {
		t.Fatalf("ciphers %v / %v", c, sc["cipher"])
	}
	for _, p := range []*pipeProc{cli, srv} {
		d := p.event(t, "done")
		if d["sent"] != float64(1<<20) || d["received"] != float64(1<<20) {
			t.Fatalf("done event: %v", d)
		}
		// The whole NAT measurement, reported after ready and before done
		// (ready goes out once the mapping is known).
		if i, j := p.index("nat"), p.index("done"); i < 0 || i > j || p.all[i]["nat"] != string(natcheck.ClassOpen) {
			t.Fatalf("nat event at %d (done at %d): %v", i, j, p.all)
		}
	}
	t.Logf("client connect_ms %v (lookup to open stream), server %v", cc["connect_ms"], sc["connect_ms"])
}

// TestPipeNoPeers: a topic nobody serves fails fast with the no-peers
// reason and exit code 3, writing nothing on stdout.
func TestPipeNoPeers(t *testing.T) {
	boot := startPipeDHT(t)
	bin := buildBinary(t)
	cli := startPipe(t, bin, strings.NewReader("unsent"), "--bootstrap", boot, "--listen", "127.77.0.4:0", "nobody-serves-this")
	if ev := cli.next(t); ev["event"] != "ready" {
		t.Fatalf("first event %v", ev)
	}
	if code := cli.wait(t); code != exitNotFound {
		t.Fatalf("exit %d, want %d; events %v", code, exitNotFound, cli.all)
	}
	if ev := cli.event(t, "error"); ev["reason"] != "no-peers" {
		t.Fatalf("error event %v", ev)
	}
	if cli.out.Len() != 0 {
		t.Fatalf("stdout: %q", cli.out.String())
	}
}

// TestPipeServerSIGTERM: a waiting server shuts down cleanly on SIGTERM
// with a "stopped" event and exit code 130.
func TestPipeServerSIGTERM(t *testing.T) {
	boot := startPipeDHT(t)
	bin := buildBinary(t)
	srv := startPipe(t, bin, strings.NewReader(""), "--server", "--bootstrap", boot, "--listen", "127.77.0.5:0", "pipe-sigterm")
	if ev := srv.next(t); ev["event"] != "ready" {
		t.Fatalf("first event %v", ev)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := srv.wait(t); code != exitInterrupted {
		t.Fatalf("exit %d, want %d; events %v", code, exitInterrupted, srv.all)
	}
	if ev := srv.event(t, "stopped"); ev["reason"] != "signal" {
		t.Fatalf("stopped event %v", ev)
	}
}

// TestPipeUsage checks flag errors exit 2 before touching the network.
func TestPipeUsage(t *testing.T) {
	cases := [][]string{
		{"topic"},                                              // no --bootstrap
		{"--bootstrap", "127.0.0.1:1"},                         // no topic
		{"--bootstrap", "127.0.0.1:1", "a", "b"},               // two topics
		{"--bootstrap", "127.0.0.1:1", "--mode", "odd", "top"}, // bad mode
		{"--nosuchflag", "top"},
	}
	for _, args := range cases {
		var stderr bytes.Buffer
		if code := pipeMain(t.Context(), args, stdio{in: strings.NewReader(""), out: io.Discard, err: &stderr}); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, stderr.String())
		}
	}
}

// TestPipeKeyFile: --key creates the file once and loads the same
// identity afterwards; a malformed file is an error.
func TestPipeKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "id")
	a, err := loadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	b, err := loadOrCreateKey(path)
	if err != nil || !a.Equal(b) {
		t.Fatalf("reload: %v, same %v", err, a.Equal(b))
	}
	if raw, _ := os.ReadFile(path); strings.TrimSpace(string(raw)) != hex.EncodeToString(a.Seed()) {
		t.Fatalf("file holds %q", raw)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrCreateKey(bad); err == nil {
		t.Fatal("malformed key file accepted")
	}
}

// TestPipeSenderStopped: a sender stopped before the end of its input
// (Ctrl-C, SIGTERM, SIGKILL) must never look like a finished transfer.
// The receiver exits 5 with the connection-lost reason and no done event,
// even when the sender's connection closed gracefully; the sender itself
// exits 130 on a signal it handles. A real process pair.
func TestPipeSenderStopped(t *testing.T) {
	boot := startPipeDHT(t)
	bin := buildBinary(t)
	for i, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			topic := fmt.Sprintf("pipe-stopped-%d", i)
			in, feed, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			defer feed.Close()
			srv := startPipe(t, bin, in, "--server", "--bootstrap", boot, "--listen", fmt.Sprintf("127.77.1.%d:0", 2*i+2), topic)
			if ev := srv.next(t); ev["event"] != "ready" {
				t.Fatalf("server: %v", ev)
			}
			cli := startPipe(t, bin, strings.NewReader(""), "--bootstrap", boot, "--listen", fmt.Sprintf("127.77.1.%d:0", 2*i+3), topic)
			// Part of the input, and no end: the sender is mid-transfer.
			part := randomBytes(t, 256<<10)
			if _, err := feed.Write(part); err != nil {
				t.Fatal(err)
			}
			if !testutil.Poll(pipeTestTimeout, 0, func() bool { return cli.out.Len() >= len(part) }) {
				t.Fatalf("receiver got %d of %d bytes; events %v %s", cli.out.Len(), len(part), cli.all, cli.other)
			}
			if err := srv.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			code := cli.wait(t)
			if code != exitLost {
				t.Fatalf("receiver exit %d, want %d (connection lost); events %v %s", code, exitLost, cli.all, cli.other)
			}
			if ev := cli.event(t, "error"); ev["reason"] != "connection-lost" {
				t.Fatalf("receiver error event %v", ev)
			}
			for _, ev := range cli.all {
				if ev["event"] == "done" {
					t.Fatalf("receiver reported done for a truncated transfer: %v", ev)
				}
			}
			if !bytes.Equal(cli.out.Bytes(), part) {
				t.Fatalf("receiver wrote %d bytes, want the %d sent", cli.out.Len(), len(part))
			}
			want := exitInterrupted
			if sig == syscall.SIGKILL {
				want = -1 // killed: no exit code of its own
			}
			if code := srv.wait(t); code != want {
				t.Fatalf("sender exit %d, want %d; events %v", code, want, srv.all)
			}
		})
	}
}

// TestPipeTimeoutCoversJoin: --timeout bounds joining the DHT too (it was
// only the client's lookup and connect, so a silent bootstrap node held
// pipe for the fixed 20 s join timeout whatever --timeout said).
func TestPipeTimeoutCoversJoin(t *testing.T) {
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	for _, server := range []bool{false, true} {
		args := []string{"--bootstrap", silent.LocalAddr().String(), "--listen", "127.77.2.1:0", "--timeout", "1s", "--json", "pipe-timeout"}
		if server {
			args = append(args, "--server")
		}
		var stderr bytes.Buffer
		start := time.Now()
		code := pipeMain(t.Context(), args, stdio{in: strings.NewReader(""), out: io.Discard, err: &stderr})
		took := time.Since(start)
		if code != exitError || !strings.Contains(stderr.String(), "--timeout 1s passed") || took > 10*time.Second {
			t.Fatalf("server %v: exit %d after %v: %s", server, code, took, stderr.String())
		}
	}
}
