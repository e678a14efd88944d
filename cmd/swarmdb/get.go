package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/swarmdb/swarmdb/bridge/client"
)

// getMain prints the value under KEY (the whole record with --json) as the
// node answers it; a node that does not hold the key asks its peers and
// answers NOT_FOUND when none has it.
func getMain(ctx context.Context, args []string, std stdio) int {
	f := newFlags("get", "KEY", `Prints the JSON value under KEY from a running node (swarmdb node --ws), or the whole
signed record with --json. A node that does not hold KEY asks its peers, and says so when
none of them has it.
Exit codes: 0 found, 1 error, 2 usage, 3 not found.`)
	ca, code, ok := parseClientArgs(f, true, args, std)
	if !ok {
		return code
	}
	c, err := client.Dial(ctx, ca.url, ca.flags.topic, ca.user)
	if err != nil {
		return failed(std, "get", err)
	}
	defer c.Close()
	tctx, cancel := context.WithTimeout(ctx, ca.flags.timeout)
	defer cancel()
	rec, err := c.Get(tctx, ca.args[0])
	switch {
	case errors.Is(err, client.ErrNotFound):
		failed(std, "get", err)
		return exitNotFound
	case err != nil && ctx.Err() != nil:
		return exitInterrupted
	case err != nil:
		return failed(std, "get", err)
	}
	printRecord(std.out, &rec, ca.flags.asJSON)
	return exitOK
}

// printRecord prints the value (or, asJSON, the whole record) on one line.
func printRecord(w io.Writer, rec *client.Record, asJSON bool) {
	if asJSON {
		fmt.Fprintln(w, string(client.AppendRecord(nil, rec)))
		return
	}
	fmt.Fprintln(w, string(rec.Value))
}
