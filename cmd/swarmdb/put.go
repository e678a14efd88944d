package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/swarmdb/swarmdb/bridge"
	"github.com/swarmdb/swarmdb/db"
)

// putMain writes KEY=JSON through a node and returns the exit code: 0 once
// the node holds the record, 1 when it refused it, lost it to a newer
// record, or could not be reached, 2 for bad usage.
//
// ToolDb's put has no acknowledgement: a refused record gets our "error"
// message (its ref is the put's id), an accepted one nothing. So put
// confirms by reading the key back until the node answers with our record.
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
	c, err := dialNode(ctx, ca.url, ca.flags.topic, ca.user)
	if err != nil {
		return failed(std, "put", err)
	}
	defer c.Close()
	tctx, cancel := context.WithTimeout(ctx, ca.flags.timeout)
	defer cancel()
	if err := c.putConfirmed(tctx, &rec); err != nil {
		if ctx.Err() != nil {
			return exitInterrupted
		}
		return failed(std, "put", fmt.Errorf("%q: %w", key, err))
	}
	if ca.flags.asJSON {
		fmt.Fprintln(std.out, string(db.AppendRecord(nil, &rec)))
	} else {
		fmt.Fprintf(std.out, "stored %q (h %s…) in %v\n", key, rec.Hash[:12], time.Since(start).Round(time.Millisecond))
	}
	return exitOK
}

// putConfirmed sends rec and reads the key back until the node answers with
// rec itself. It fails on the node's error for the put, or when ctx ends;
// the error then says whether the node holds a newer record.
func (c *wsClient) putConfirmed(ctx context.Context, rec *db.Record) error {
	put := &bridge.Message{Type: bridge.TypePut, ID: newMsgID(), Data: rec}
	if err := c.send(ctx, put); err != nil {
		return err
	}
	gets := map[string]bool{}
	var other *db.Record // the last record the node answered with that is not ours
	poll := time.NewTicker(putPollInterval)
	defer poll.Stop()
	sendGet := func() error {
		g := &bridge.Message{Type: bridge.TypeGet, ID: newMsgID(), Key: rec.Key}
		gets[g.ID] = true
		return c.send(ctx, g)
	}
	if err := sendGet(); err != nil {
		return err
	}
	msgs := make(chan bridge.Message)
	errc := make(chan error, 1)
	// next blocks; run it beside the poll ticker, until we return.
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			m, err := c.next(rctx)
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-rctx.Done():
				errc <- rctx.Err()
				return
			}
		}
	}()
	for {
		select {
		case <-poll.C:
			if err := sendGet(); err != nil {
				return err
			}
		case err := <-errc:
			if ctx.Err() != nil {
				if other != nil && other.Time > rec.Time {
					return fmt.Errorf("superseded: the node holds a newer record (t=%d, by %.12s…)", other.Time, other.Author)
				}
				return fmt.Errorf("not confirmed: %w", ctx.Err())
			}
			return err
		case m := <-msgs:
			switch {
			case m.Type == bridge.TypeError && m.Ref == put.ID:
				return fmt.Errorf("refused by the node (%s): %s", m.Code, m.Error)
			case m.Type == bridge.TypePut && gets[m.ID] && m.Data != nil && m.Data.Key == rec.Key:
				if m.Data.Hash == rec.Hash && m.Data.Sig == rec.Sig {
					return nil
				}
				d := *m.Data
				other = &d
			}
		}
	}
}
