package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/swarmdb/swarmdb/db"
)

// getMain prints the value under KEY (the whole record with --json) as the
// node answers it, asking its peers when it does not hold the key. Exit
// codes: 0 found, 1 error, 2 usage, 3 not found within --timeout.
func getMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	ca, code, ok := parseClientArgs("get", "KEY", "Prints the JSON value under KEY from a running node (swarmdb node --ws), or the whole\nsigned record with --json. A node that does not hold KEY asks its peers.\nExit codes: 0 found, 1 error, 2 usage, 3 not found.", 1, args, stderr)
	if !ok {
		return code
	}
	cf, user := ca.flags, ca.user
	c, err := dialNode(ctx, *cf.ws, *cf.topic, user)
	if err != nil {
		fmt.Fprintf(stderr, "swarmdb get: %v\n", err)
		return clientExitError
	}
	defer c.Close()
	tctx, cancel := context.WithTimeout(ctx, *cf.timeout)
	defer cancel()
	rec, err := c.get(tctx, ca.args[0])
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
