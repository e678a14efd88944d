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

	"github.com/swarmdb/swarmdb/db"
)

func runGet(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if code := getMain(ctx, args, os.Stdout, os.Stderr); code != clientExitOK {
		os.Exit(code)
	}
	return nil
}

// getMain prints the value under KEY (the whole record with --json) as the
// node answers it, asking its peers when it does not hold the key. Exit
// codes: 0 found, 1 error, 2 usage, 3 not found within --timeout.
func getMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cf := addClientFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: swarmdb get [flags] KEY")
		fmt.Fprintln(stderr, "\nPrints the JSON value under KEY from a running node (swarmdb node --ws), or the whole")
		fmt.Fprintln(stderr, "signed record with --json. A node that does not hold KEY asks its peers.")
		fmt.Fprintln(stderr, "Exit codes: 0 found, 1 error, 2 usage, 3 not found.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return clientExitOK
		}
		return clientExitUsage
	}
	if fs.NArg() != 1 || fs.Arg(0) == "" {
		fmt.Fprintln(stderr, "swarmdb get: want one KEY argument")
		return clientExitUsage
	}
	user, err := loadUser(*cf.keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "swarmdb get: %v\n", err)
		return clientExitError
	}
	c, err := dialNode(ctx, *cf.ws, *cf.topic, user)
	if err != nil {
		fmt.Fprintf(stderr, "swarmdb get: %v\n", err)
		return clientExitError
	}
	defer c.Close()
	tctx, cancel := context.WithTimeout(ctx, *cf.timeout)
	defer cancel()
	rec, err := c.get(tctx, fs.Arg(0))
	switch {
	case errors.Is(err, errNotFound):
		fmt.Fprintf(stderr, "swarmdb get: %v\n", err)
		return clientExitNotFound
	case err != nil:
		fmt.Fprintf(stderr, "swarmdb get: %v\n", err)
		return clientExitError
	}
	printRecord(stdout, &rec, *cf.asJSON)
	return clientExitOK
}

// printRecord prints the value (or, asJSON, the whole record) on one line.
func printRecord(w io.Writer, rec *db.Record, asJSON bool) {
	if asJSON {
		fmt.Fprintln(w, string(db.AppendRecord(nil, rec)))
		return
	}
	fmt.Fprintln(w, string(rec.Value))
}
