package main

import (
	"context"
	"fmt"
	"time"

	"github.com/swarmdb/swarmdb/bridge/client"
)

// putMain writes KEY=JSON through a node and returns the exit code: 0 once
// the node holds the record, 1 when it refused it, lost it to a newer
// record, or could not be reached, 2 for bad usage.
//
// ToolDb's put has no acknowledgement, so client.Conn.Put confirms by
// reading the key back until the node answers with our record.
func putMain(ctx context.Context, args []string, std stdio) int {
	f := newFlags("put", "KEY JSON", `Writes JSON under KEY through a running node (swarmdb node --ws) as a ToolDb client,
signed by the --key account, and waits until the node holds it.
Exit codes: 0 stored, 1 error (refused, superseded, unreachable), 2 usage, 130 interrupted.`)
	ca, code, ok := parseClientArgs(f, true, args, std)
	if !ok {
		return code
	}
	key, value := ca.args[0], []byte(ca.args[1])
	rec, err := ca.user.NewRecord(key, value, "", time.Now(), 0)
	if err != nil {
		return f.usageError(std, "value is not JSON: %v", err)
	}
	start := time.Now()
	c, err := client.Dial(ctx, ca.url, ca.flags.topic, ca.user)
	if err != nil {
		return failed(std, "put", err)
	}
	defer c.Close()
	tctx, cancel := context.WithTimeout(ctx, ca.flags.timeout)
	defer cancel()
	if err := c.Put(tctx, &rec); err != nil {
		if ctx.Err() != nil {
			return exitInterrupted
		}
		return failed(std, "put", fmt.Errorf("%q: %w", key, err))
	}
	if ca.flags.asJSON {
		fmt.Fprintln(std.out, string(client.AppendRecord(nil, &rec)))
	} else {
		fmt.Fprintf(std.out, "stored %q (h %s…) in %v\n", key, rec.Hash[:12], time.Since(start).Round(time.Millisecond))
	}
	return exitOK
}
