// Command swarmdb runs swarmdb nodes and tools. It is a thin layer over the
// packages: each subcommand parses flags, wires a component and reports.
//
//	swarmdb node --topic T [--data DIR] [--bootstrap host:port,...] [--listen ip:port]
//	             [--ws 127.0.0.1:9000|:9000|off] [--origin pattern,...]
//	             [--server] [--client] [--mode server|client|both]
//	             [--metrics 127.0.0.1:9100] [--loopback] [--no-lan] [--json] [-v]
//	swarmdb put   [--ws ws://127.0.0.1:9000] --topic T [--key FILE] [--timeout 5s] [--json] KEY JSON
//	swarmdb get   [--ws ws://127.0.0.1:9000] --topic T [--key FILE] [--timeout 5s] [--json] KEY
//	swarmdb watch [--ws ws://127.0.0.1:9000] --topic T [--key FILE] [--json] KEY
//	swarmdb bootstrap [--listen 0.0.0.0:49737] [--bootstrap host:port,...] [--public-ip IP]
//	                  [--turn auto|off|[ip]:port] [--turn-private] [--json] [-v]
//	swarmdb netcheck --bootstrap host:port,... [--json]
//	swarmdb pipe [--server] --bootstrap host:port,... [--listen ip:port] [--key FILE]
//	             [--mode ephemeral|adaptive] [--timeout 30s] [--json] [-v] TOPIC
//	swarmdb demo [--nodes N] [--topic T]
//
// node prints its events (ready, nat, peer_connected, peer_disconnected,
// error, stopped) on stdout, as JSON lines with --json, and logs on stderr.
// put, get and watch are ToolDb clients of a node's WebSocket endpoint; the
// topic may also come from $SWARMDB_TOPIC. Exit codes: 0 success, 1 error,
// 2 usage, 3 not found (get); pipe documents its own (swarmdb pipe -h).
package main

import (
	"fmt"
	"os"
)

type command struct {
	name, summary string
	run           func(args []string) error
}

func commands() []command {
	return []command{
		{"node", "run a node: join a topic, connect to its peers through NATs, replicate the database", runNode},
		{"put", "write a JSON value under a key through a running node (ToolDb client over WebSocket)", clientMain(putMain)},
		{"get", "print the value under a key from a running node", clientMain(getMain)},
		{"watch", "print every update of a key from a running node until interrupted", clientMain(watchMain)},
		{"bootstrap", "run a persistent public DHT node (bootstrap, relay and STUN server)", runBootstrap},
		{"demo", "run a whole swarmdb network on loopback and show it working", runDemo},
		{"netcheck", "measure this host's NAT (RFC 4787 mapping and filtering) against DHT nodes", runNetcheck},
		{"pipe", "pipe stdin/stdout to the peer serving a topic, over an encrypted connection through NATs", runPipe},
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: swarmdb <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(os.Stderr, "\nrun 'swarmdb <command> -h' for a command's flags")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	for _, c := range commands() {
		if c.name == os.Args[1] {
			if err := c.run(os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "swarmdb %s: %v\n", c.name, err)
				os.Exit(1)
			}
			return
		}
	}
	if os.Args[1] != "-h" && os.Args[1] != "--help" && os.Args[1] != "help" {
		fmt.Fprintf(os.Stderr, "swarmdb: unknown command %q\n\n", os.Args[1])
	}
	usage()
	os.Exit(2)
}
