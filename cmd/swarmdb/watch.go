package main

import (
	"context"
	"fmt"
	"io"

	"github.com/swarmdb/swarmdb/bridge"
)

// watchMain subscribes to KEY on a node and prints one line per value (the
// stored one first, if any, as ToolDb answers a subscribe) until SIGINT or
// SIGTERM (exit 0). A lost connection exits 1.
func watchMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	ca, code, ok := parseClientArgs("watch", "KEY", "Subscribes to KEY on a running node (swarmdb node --ws) and prints one line per update\n(the value, or the whole record with --json) until interrupted.\nExit codes: 0 interrupted, 1 error or connection lost, 2 usage.", 1, args, stderr)
	if !ok {
		return code
	}
	key := ca.args[0]
	cf, user := ca.flags, ca.user
	c, err := dialNode(ctx, *cf.ws, *cf.topic, user)
	if err != nil {
		fmt.Fprintf(stderr, "swarmdb watch: %v\n", err)
		return clientExitError
	}
	defer c.Close()
	sub := &bridge.Message{Type: bridge.TypeSubscribe, ID: newMsgID(), Key: key}
	if err := c.send(ctx, sub); err != nil {
		fmt.Fprintf(stderr, "swarmdb watch: %v\n", err)
		return clientExitError
	}
	last := "" // h+s of the last record printed: a push may repeat the subscribe's answer
	for {
		m, err := c.next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return clientExitOK
			}
			fmt.Fprintf(stderr, "swarmdb watch: %v\n", err)
			return clientExitError
		}
		switch {
		case m.Type == bridge.TypeError && m.Ref == sub.ID:
			fmt.Fprintf(stderr, "swarmdb watch: refused by the node (%s): %s\n", m.Code, m.Error)
			return clientExitError
		case (m.Type == bridge.TypePut || m.Type == bridge.TypeCRDTPut) && m.Data != nil && m.Data.Key == key:
			if hk := m.Data.Hash + "\x00" + m.Data.Sig; hk != last || m.Data.CRDT != "" {
				if err := checkRecord(m.Data); err != nil {
					fmt.Fprintf(stderr, "swarmdb watch: %v\n", err)
					continue
				}
				last = hk
				printRecord(stdout, m.Data, *cf.asJSON)
			}
		}
	}
}
