// Command swarmdb runs swarmdb nodes and tools. It is a thin layer over the
// packages: each subcommand parses flags, wires a component and reports.
//
//	swarmdb bootstrap --listen 0.0.0.0:49737 [--bootstrap host:port,...] [--public-ip IP] [--json]
//	swarmdb netcheck --bootstrap host:port,... [--json]
//	swarmdb demo
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
