package main

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// runCLI runs the whole command line as main does, with ctx.
func runCLI(ctx context.Context, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(ctx, args, stdio{in: strings.NewReader(""), out: &out, err: &errOut})
	return code, out.String(), errOut.String()
}

// TestFlagsAnywhere: flags may follow positional arguments (pipe TOPIC
// --bootstrap X used to take "--bootstrap" for a second TOPIC); "--" ends
// the flags.
func TestFlagsAnywhere(t *testing.T) {
	cases := []struct {
		args []string
		pos  []string
		json bool
	}{
		{[]string{"--json", "k", "v"}, []string{"k", "v"}, true},
		{[]string{"k", "--json", "v"}, []string{"k", "v"}, true},
		{[]string{"k", "v", "--json"}, []string{"k", "v"}, true},
		{[]string{"k", "--", "--json"}, []string{"k", "--json"}, false},
		{[]string{"--json=false", "k", "-", "v"}, []string{"k", "-", "v"}, false},
	}
	for _, c := range cases {
		f := newFlags("test", "A B", "")
		asJSON := f.Bool("json", false, "")
		var std stdio
		std.out, std.err = &bytes.Buffer{}, &bytes.Buffer{}
		pos, _, ok := f.parse(c.args, -1, std)
		if !ok || strings.Join(pos, "|") != strings.Join(c.pos, "|") || *asJSON != c.json {
			t.Errorf("%q: positional %q json %v ok %v, want %q %v", c.args, pos, *asJSON, ok, c.pos, c.json)
		}
	}
}

// TestHelpAndUsageExitCodes: -h prints the usage on stdout and exits 0 for
// every command (bootstrap, netcheck and demo exited 1 with "flag: help
// requested"); a bad flag exits 2 with one line and a hint on stderr and
// nothing on stdout; an unknown command exits 2.
func TestHelpAndUsageExitCodes(t *testing.T) {
	for _, c := range commands() {
		for _, h := range []string{"-h", "--help"} {
			code, out, errOut := runCLI(t.Context(), c.name, h)
			if code != exitOK || !strings.HasPrefix(out, "usage: swarmdb "+c.name) || errOut != "" {
				t.Errorf("%s %s: exit %d, stdout %.40q, stderr %q", c.name, h, code, out, errOut)
			}
			if c.name != "version" && !strings.Contains(out, "Exit codes:") {
				t.Errorf("%s -h does not list its exit codes", c.name)
			}
		}
		code, out, errOut := runCLI(t.Context(), c.name, "--no-such-flag")
		if code != exitUsage || out != "" || !strings.HasPrefix(errOut, "swarmdb "+c.name+": flag provided but not defined") ||
			strings.Count(errOut, "\n") != 2 {
			t.Errorf("%s --no-such-flag: exit %d, stdout %q, stderr %q", c.name, code, out, errOut)
		}
	}
	if code, out, _ := runCLI(t.Context(), "help", "put"); code != exitOK || !strings.HasPrefix(out, "usage: swarmdb put") {
		t.Errorf("help put: %d %q", code, out)
	}
	if code, out, _ := runCLI(t.Context(), "--help"); code != exitOK || !strings.Contains(out, "pipe ") {
		t.Errorf("--help: %d %q", code, out)
	}
	if code, _, errOut := runCLI(t.Context(), "nosuch"); code != exitUsage || !strings.Contains(errOut, `unknown command "nosuch"`) {
		t.Errorf("unknown command: %d %q", code, errOut)
	}
	if code, _, _ := runCLI(t.Context()); code != exitUsage {
		t.Errorf("no command: %d", code)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, _ := runCLI(t.Context(), args...)
		if code != exitOK || !strings.HasPrefix(out, "swarmdb ") || !strings.Contains(out, "go1.") {
			t.Errorf("%v: %d %q", args, code, out)
		}
	}
}

// TestWSAddresses: every command takes host:port and ws:// for --ws, and
// the clients wss:// too (put/get/watch refused host:port before).
func TestWSAddresses(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9000":           "ws://127.0.0.1:9000",
		":9000":                    "ws://127.0.0.1:9000",
		"example.test:9000":        "ws://example.test:9000",
		"ws://127.0.0.1:9000":      "ws://127.0.0.1:9000",
		"wss://db.example.test":    "wss://db.example.test",
		"wss://db.example.test/ws": "wss://db.example.test/ws",
	} {
		if got, err := clientWSURL(in); err != nil || got != want {
			t.Errorf("client --ws %q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"127.0.0.1", "http://x:1", "ws://", "x:port"} {
		if got, err := clientWSURL(bad); err == nil {
			t.Errorf("client --ws %q accepted as %q", bad, got)
		}
	}
	for in, want := range map[string]string{
		"127.0.0.1:9000": "127.0.0.1:9000", ":9000": ":9000", "ws://0.0.0.0:9000": "0.0.0.0:9000",
		"ws://127.0.0.1:9000/": "127.0.0.1:9000", "off": "", "": "",
	} {
		if got, err := nodeWSListen(in); err != nil || got != want {
			t.Errorf("node --ws %q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"9000", "127.0.0.1:9000x", "wss://127.0.0.1:9000", "ws://h:1/path"} {
		if got, err := nodeWSListen(bad); err == nil {
			t.Errorf("node --ws %q accepted as %q", bad, got)
		}
	}
}

// TestBootstrapResolution: a malformed address is a usage error (exit 2);
// a name that does not resolve is an error (exit 1) within dnsTimeout, not
// after the resolver's 10 s. The resolver is replaced: no packet leaves.
func TestBootstrapResolution(t *testing.T) {
	saved := lookupHost
	t.Cleanup(func() { lookupHost = saved })
	lookupHost = func(ctx context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "boot.example.test":
			return []netip.Addr{netip.MustParseAddr("198.51.100.7")}, nil
		case "silent.example.test":
			<-ctx.Done() // a DNS server that never answers
			return nil, ctx.Err()
		}
		return nil, errors.New("no such host")
	}
	f := newFlags("test", "", "")
	var got []netip.AddrPort
	f.list(&got, "bootstrap", "")
	if _, _, ok := f.parse([]string{"--bootstrap", "boot.example.test:49737, 203.0.113.1:1"}, 0, stdio{out: &bytes.Buffer{}, err: &bytes.Buffer{}}); !ok {
		t.Fatal("parse failed")
	}
	if err := f.hosts.resolve(t.Context()); err != nil || len(got) != 2 || got[0].String() != "198.51.100.7:49737" || got[1].String() != "203.0.113.1:1" {
		t.Fatalf("resolved %v, %v", got, err)
	}

	for _, bad := range []string{"host-without-port", "h:0", "h:70000", ":49737"} {
		if code, _, errOut := runCLI(t.Context(), "pipe", "--bootstrap", bad, "topic"); code != exitUsage {
			t.Errorf("--bootstrap %q: exit %d (%s), want usage", bad, code, errOut)
		}
	}
	start := time.Now()
	code, _, errOut := runCLI(t.Context(), "node", "--topic", "t", "--bootstrap", "silent.example.test:49737", "--data", t.TempDir())
	if code != exitError || !strings.Contains(errOut, "no answer from DNS") || time.Since(start) > dnsTimeout+2*time.Second {
		t.Errorf("unresolvable bootstrap: exit %d after %v: %s", code, time.Since(start), errOut)
	}
	if code, _, errOut := runCLI(t.Context(), "netcheck", "--bootstrap", "nosuch.example.test:1"); code != exitError || !strings.Contains(errOut, `cannot resolve "nosuch.example.test"`) {
		t.Errorf("unknown bootstrap host: exit %d: %s", code, errOut)
	}
}
