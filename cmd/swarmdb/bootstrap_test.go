package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testnet"
)

// turnTestTimeout bounds one DHT or TURN exchange on loopback.
const turnTestTimeout = 10 * time.Second

func TestTURNListenAddr(t *testing.T) {
	cases := []struct {
		spec, listen, want string
		bad                bool
	}{
		{"auto", "0.0.0.0:49737", "0.0.0.0:49738", false},
		{"auto", "203.0.113.5:49737", "203.0.113.5:49738", false},
		{"auto", "127.0.0.1:0", "127.0.0.1:0", false}, // random DHT port: random relay port
		{"auto", ":4000", "0.0.0.0:4001", false},
		{"auto", "0.0.0.0:65535", "", true},
		{"off", "0.0.0.0:49737", "", false},
		{":3479", "0.0.0.0:49737", "0.0.0.0:3479", false},
		{"198.51.100.2:3478", "0.0.0.0:49737", "198.51.100.2:3478", false},
		{"[2001:db8::1]:3478", "0.0.0.0:49737", "[2001:db8::1]:3478", false},
		{"relay.example:3478", "0.0.0.0:49737", "", true},
		{"3478", "0.0.0.0:49737", "", true},
		{":70000", "0.0.0.0:49737", "", true},
	}
	for _, tc := range cases {
		got, err := turnListenAddr(tc.spec, tc.listen)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("turnListenAddr(%q, %q) = %q, %v; want %q (error %v)", tc.spec, tc.listen, got, err, tc.want, tc.bad)
		}
	}
}

// TestBootstrapCommandTURN runs the binary: by default the ready event names
// the relay and the node hands out offers for it; --turn off serves none.
func TestBootstrapCommandTURN(t *testing.T) {
	bin := buildBinary(t)
	client := dht.New(dht.Config{ListenAddr: "127.0.0.1:0", Mode: dht.ModeEphemeral})
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, tc := range []struct {
		name string
		args []string
		on   bool
	}{
		{"default on", nil, true},
		{"off", []string{"--turn", "off"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"bootstrap", "--listen", "127.0.0.1:0", "--json", "--turn-private"}, tc.args...)
			cmd := exec.Command(bin, args...)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			events := make(chan map[string]any, 4)
			go readEvents(stdout, events)
			ready := nextEvent(t, events)
			addr, err := netip.ParseAddrPort(ready["addr"].(string))
			if ready["event"] != "ready" || err != nil {
				t.Fatalf("ready event: %v", ready)
			}
			ctx, cancel := context.WithTimeout(context.Background(), turnTestTimeout)
			defer cancel()
			o, err := client.TURNOffer(ctx, addr)
			if !tc.on {
				if ready["turn"] != "" || !errors.Is(err, dht.ErrNoTURN) {
					t.Fatalf("--turn off: ready %v, offer %+v %v", ready, o, err)
				}
			} else {
				relayAddr, perr := netip.ParseAddrPort(ready["turn"].(string))
				if perr != nil || relayAddr.Port() == 0 || relayAddr.Addr() != addr.Addr() {
					t.Fatalf("ready event turn %q, dht %s", ready["turn"], addr)
				}
				if err != nil || o.Server != relayAddr {
					t.Fatalf("offer %+v %v, relay %s", o, err, relayAddr)
				}
				// The offered credential works on the advertised relay.
				// Release it while the relay still runs.
				if err := testnet.AllocateTURN(t, o).Close(); err != nil {
					t.Fatal(err)
				}
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if ev := nextEvent(t, events); ev["event"] != "stopped" {
				t.Fatalf("after SIGTERM: %v", ev)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("exit: %v", err)
			}
		})
	}
}

// readEvents decodes JSON lines from r until it ends.
func readEvents(r io.Reader, out chan<- map[string]any) {
	defer close(out)
	lines := bufio.NewScanner(r)
	for lines.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
			ev = map[string]any{"event": "not json", "line": lines.Text()}
		}
		out <- ev
	}
}

func nextEvent(t *testing.T, events <-chan map[string]any) map[string]any {
	t.Helper()
	timer := time.NewTimer(turnTestTimeout)
	defer timer.Stop()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("stdout closed without an event")
		}
		return ev
	case <-timer.C:
		t.Fatal("timed out waiting for an event")
	}
	return nil
}
