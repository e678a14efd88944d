package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/swarmdb/swarmdb/bridge/client"
)

// watchMain subscribes to KEY on a node and prints one line per value (the
// stored one first, if any, as ToolDb answers a subscribe) until SIGINT or
// SIGTERM (exit 0). A lost connection exits 5.
func watchMain(ctx context.Context, args []string, std stdio) int {
	f := newFlags("watch", "KEY", `Subscribes to KEY on a running node (swarmdb node --ws) and prints one line per update
(the value, or the whole record with --json) until interrupted.
Exit codes: 0 interrupted (SIGINT/SIGTERM), 1 error, 2 usage, 5 connection lost.`)
	ca, code, ok := parseClientArgs(f, false, args, std)
	if !ok {
		return code
	}
	c, err := client.Dial(ctx, ca.url, ca.flags.topic, ca.user)
	if err != nil {
		if ctx.Err() != nil {
			return exitOK
		}
		return failed(std, "watch", err)
	}
	defer c.Close()
	sub, err := c.Subscribe(ctx, ca.args[0])
	if err != nil {
		return failed(std, "watch", err)
	}
	for {
		rec, err := sub.Next(ctx)
		switch {
		case err == nil:
			printRecord(std.out, &rec, ca.flags.asJSON)
		case errors.Is(err, client.ErrUnverified):
			fmt.Fprintf(std.err, "swarmdb watch: %v\n", err)
		case errors.Is(err, client.ErrRefused):
			return failed(std, "watch", err)
		case ctx.Err() != nil:
			return exitOK
		default:
			failed(std, "watch", err)
			return exitLost
		}
	}
}
