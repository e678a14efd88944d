package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/swarmdb/swarmdb/bridge"
)

func runWatch(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if code := watchMain(ctx, args, os.Stdout, os.Stderr); code != clientExitOK {
		os.Exit(code)
	}
	return nil
}

// watchMain subscribes to KEY on a node and prints one line per value (the
// stored one first, if any, as ToolDb answers a subscribe) until SIGINT or
// SIGTERM (exit 0). A lost connection exits 1.
func watchMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cf := addClientFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: swarmdb watch [flags] KEY")
		fmt.Fprintln(stderr, "\nSubscribes to KEY on a running node (swarmdb node --ws) and prints one line per update")
		fmt.Fprintln(stderr, "(the value, or the whole record with --json) until interrupted.")
		fmt.Fprintln(stderr, "Exit codes: 0 interrupted, 1 error or connection lost, 2 usage.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return clientExitOK
		}
		return clientExitUsage
	}
	if fs.NArg() != 1 || fs.Arg(0) == "" {
		fmt.Fprintln(stderr, "swarmdb watch: want one KEY argument")
		return clientExitUsage
	}
	key := fs.Arg(0)
	user, err := loadUser(*cf.keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "swarmdb watch: %v\n", err)
		return clientExitError
	}
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
