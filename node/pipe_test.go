package node_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/node"
)

// pipeTestTimeout bounds a whole pipe test: join, announce, lookup,
// connect and a small transfer on loopback.
const pipeTestTimeout = 60 * time.Second

// TestPipeOverLocalDHT runs a pipe server and client in-process on a
// LocalDHT: both join, the client finds and connects to the server, each
// direction arrives whole, and the server's record is gone afterwards (a
// second client finds nobody).
func TestPipeOverLocalDHT(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), pipeTestTimeout)
	defer cancel()
	nw, err := node.StartLocalDHT(ctx, node.LocalDHTConfig{Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Close()
	start := func(server bool) *node.Pipe {
		t.Helper()
		p, err := node.StartPipe(ctx, node.PipeConfig{Topic: "node-pipe", Server: server, Bootstrap: nw.Bootstrap(), ListenAddr: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	srv := start(true)
	if in := srv.Info(); !in.Server || in.Stored < 1 || len(in.Relays) == 0 {
		t.Fatalf("server info %+v", in)
	}
	cli := start(false)

	type result struct {
		got []byte
		st  node.PipeStats
		err error
	}
	run := func(p *node.Pipe, send string) <-chan result {
		out := make(chan result, 1)
		go func() {
			c, err := p.Connect(ctx)
			if err != nil {
				out <- result{err: err}
				return
			}
			defer c.Close()
			var got bytes.Buffer
			st, err := c.Transfer(ctx, strings.NewReader(send), &got)
			out <- result{got.Bytes(), st, err}
		}()
		return out
	}
	sres, cres := run(srv, "to the client"), run(cli, "to the server")
	for _, r := range []struct {
		res  result
		want string
	}{{<-cres, "to the client"}, {<-sres, "to the server"}} {
		if r.res.err != nil || string(r.res.got) != r.want || r.res.st.Sent == 0 {
			t.Fatalf("got %q (%+v, %v), want %q", r.res.got, r.res.st, r.res.err, r.want)
		}
	}

	late := start(false)
	_, err = late.Connect(ctx)
	var pe *node.PipeError
	if !errors.As(err, &pe) || pe.Kind != node.PipeNotFound || pe.Reason != "no-peers" {
		t.Fatalf("after the server's connection: %v, want no-peers", err)
	}
}
