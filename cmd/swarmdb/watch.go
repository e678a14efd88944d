package main

import (
	"context"
	"fmt"

	"github.com/swarmdb/swarmdb/bridge"
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
	key := ca.args[0]
	c, err := dialNode(ctx, ca.url, ca.flags.topic, ca.user)
	if err != nil {
		if ctx.Err() != nil {
			return exitOK
		}
		return failed(std, "watch", err)
	}
	defer c.Close()
	sub := &bridge.Message{Type: bridge.TypeSubscribe, ID: newMsgID(), Key: key}
	if err := c.send(ctx, sub); err != nil {
		return failed(std, "watch", err)
	}
	last := "" // h+s of the last record printed: a push may repeat the subscribe's answer
	for {
		m, err := c.next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return exitOK
			}
			failed(std, "watch", err)
			return exitLost
		}
		switch {
		case m.Type == bridge.TypeError && m.Ref == sub.ID:
			return failed(std, "watch", fmt.Errorf("refused by the node (%s): %s", m.Code, m.Error))
		case (m.Type == bridge.TypePut || m.Type == bridge.TypeCRDTPut) && m.Data != nil && m.Data.Key == key:
			if hk := m.Data.Hash + "\x00" + m.Data.Sig; hk != last || m.Data.CRDT != "" {
				if err := checkRecord(m.Data); err != nil {
					fmt.Fprintf(std.err, "swarmdb watch: %v\n", err)
					continue
				}
				last = hk
				printRecord(std.out, m.Data, ca.flags.asJSON)
			}
		}
	}
}
