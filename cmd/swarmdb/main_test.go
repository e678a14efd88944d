package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildBinary compiles swarmdb once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "swarmdb")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func TestBootstrapCommand(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin, "bootstrap", "--listen", "127.0.0.1:0", "--json")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	readEvent := func() map[string]any {
		t.Helper()
		done := make(chan bool, 1)
		go func() { done <- lines.Scan() }()
		select {
		case ok := <-done:
			if !ok {
				t.Fatalf("no event: %v", lines.Err())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for an event")
		}
		var ev map[string]any
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
			t.Fatalf("not JSON: %q", lines.Text())
		}
		return ev
	}
	ready := readEvent()
	if ready["event"] != "ready" || ready["addr"] == "" || len(ready["id"].(string)) != 64 {
		t.Fatalf("ready event: %v", ready)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if ev := readEvent(); ev["event"] != "stopped" {
		t.Fatalf("after SIGTERM: %v", ev)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
}

// SWARMDB_CPUPROFILE writes a profile per process; a path that cannot be created is
// reported and profiles nothing, and no variable means no profile.
func TestStartCPUProfile(t *testing.T) {
	dir := t.TempDir()
	stop := startCPUProfile(filepath.Join(dir, "cpu"), io.Discard)
	stop()
	fi, err := os.Stat(filepath.Join(dir, "cpu."+strconv.Itoa(os.Getpid())))
	if err != nil || fi.Size() == 0 {
		t.Fatalf("no profile written: %v", err)
	}
	var msg strings.Builder
	startCPUProfile(filepath.Join(dir, "missing", "cpu"), &msg)()
	if !strings.Contains(msg.String(), "SWARMDB_CPUPROFILE") {
		t.Fatalf("no error reported for an impossible path: %q", msg.String())
	}
	startCPUProfile("", io.Discard)()
}
