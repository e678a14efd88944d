// Command swarmdb runs swarmdb nodes and tools. It is a thin layer over
// package node (and bridge/client for put, get and watch): each subcommand
// parses flags, calls one entry point and reports.
//
//	swarmdb node --topic T [--data DIR] [--bootstrap host:port,...] [--listen ip:port]
//	             [--ws 127.0.0.1:9000|:9000|ws://host:port|off] [--origin pattern,...]
//	             [--server] [--client] [--mode server|client|both] [--repair]
//	             [--metrics 127.0.0.1:9100] [--loopback] [--no-lan] [--json] [-v]
//	swarmdb put   [--ws host:port|ws://…|wss://…] --topic T [--key FILE] [--timeout 5s] [--json] KEY JSON
//	swarmdb get   [--ws host:port|ws://…|wss://…] --topic T [--key FILE] [--timeout 5s] [--json] KEY
//	swarmdb watch [--ws host:port|ws://…|wss://…] --topic T [--key FILE] [--json] KEY
//	swarmdb bootstrap [--listen 0.0.0.0:49737] [--bootstrap host:port,...] [--public-ip IP]
//	                  [--turn auto|off|[ip]:port] [--turn-private] [--json] [-v]
//	swarmdb netcheck --bootstrap host:port,... [--listen ip:port] [--timeout 30s] [--json] [-v]
//	swarmdb pipe [--server] --bootstrap host:port,... [--listen ip:port] [--key FILE]
//	             [--mode ephemeral|adaptive] [--timeout 30s] [--json] [-v] TOPIC
//	swarmdb demo [--nodes N] [--topic T]
//	swarmdb health [--metrics 127.0.0.1:9100] [--timeout 3s]
//	swarmdb version
//
// Flags may come before or after the arguments. node prints its events
// (ready, nat, peer_connected, peer_disconnected, error, stopped) on stdout,
// as JSON lines with --json; logs and errors go to stderr. put, get and
// watch are ToolDb clients of a node's WebSocket endpoint; the topic may
// also come from $SWARMDB_TOPIC.
//
// Exit codes, for every command: 0 success, 1 error, 2 usage (nothing was
// started), 3 not found (get: no record; pipe: nobody serves the topic),
// 4 connect failed (pipe), 5 connection lost (pipe, watch), 130 interrupted
// before the work was done.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"syscall"
)

// version is the release, set at build time with
// -ldflags "-X main.version=v1.2.3"; otherwise the module's build info says.
var version = ""

func commands() []cliCommand {
	return []cliCommand{
		{"node", "run a node: join a topic, connect to its peers through NATs, replicate the database", nodeMain},
		{"put", "write a JSON value under a key through a running node (ToolDb client over WebSocket)", putMain},
		{"get", "print the value under a key from a running node", getMain},
		{"watch", "print every update of a key from a running node until interrupted", watchMain},
		{"bootstrap", "run a persistent public DHT node (bootstrap, relay and STUN server)", bootstrapMain},
		{"demo", "run a whole swarmdb network on loopback and show it working", demoMain},
		{"netcheck", "measure this host's NAT (RFC 4787 mapping and filtering) against DHT nodes", netcheckMain},
		{"pipe", "pipe stdin/stdout to the peer serving a topic, over an encrypted connection through NATs", pipeMain},
		{"health", "ask a running node (its --metrics address) whether it is up; for container health checks", healthMain},
		{"version", "print the version", versionMain},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: swarmdb <command> [flags] [arguments]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nrun 'swarmdb <command> -h' for a command's flags and exit codes")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	stopProfile := startCPUProfile(os.Getenv("SWARMDB_CPUPROFILE"), os.Stderr)
	code := run(ctx, os.Args[1:], stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr})
	stopProfile()
	stop()
	os.Exit(code)
}

// startCPUProfile writes a CPU profile of the whole process to prefix.PID
// (one file per process, so that the nodes of a test each get theirs) until
// the returned function runs; an empty prefix profiles nothing. Read it with
// `go tool pprof swarmdb prefix.PID`.
func startCPUProfile(prefix string, errw io.Writer) func() {
	if prefix == "" {
		return func() {}
	}
	f, err := os.Create(prefix + "." + strconv.Itoa(os.Getpid()))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(errw, "swarmdb: SWARMDB_CPUPROFILE: %v\n", err)
		if f != nil {
			_ = f.Close()
		}
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}

// run dispatches to the command named by args[0] and returns the exit code.
func run(ctx context.Context, args []string, std stdio) int {
	if len(args) == 0 {
		usage(std.err)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 { // swarmdb help CMD
			return run(ctx, []string{args[1], "-h"}, std)
		}
		usage(std.out)
		return exitOK
	case "-version", "--version":
		args[0] = "version"
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.main(ctx, args[1:], std)
		}
	}
	fmt.Fprintf(std.err, "swarmdb: unknown command %q\n\n", args[0])
	usage(std.err)
	return exitUsage
}

// versionMain prints the version, the module's VCS revision when the build
// recorded one, and the Go toolchain.
func versionMain(_ context.Context, args []string, std stdio) int {
	f := newFlags("version", "", "Prints the version of this swarmdb binary.\nExit codes: 0 ok, 2 usage.")
	if _, code, ok := f.parse(args, 0, std); !ok {
		return code
	}
	fmt.Fprintln(std.out, versionString())
	return exitOK
}

func versionString() string {
	v, rev := version, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version // "(devel)" for a build from a checkout
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = s.Value[:12]
			}
			if s.Key == "vcs.modified" && s.Value == "true" && rev != "" {
				rev += "+dirty"
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	if rev != "" {
		v += " " + rev
	}
	return fmt.Sprintf("swarmdb %s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
