package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestProcEventsAndBytes runs a tiny pipe-like child: an event on stderr,
// then stdin echoed to stdout, which Proc counts.
func TestProcEventsAndBytes(t *testing.T) {
	p, err := startProc(context.Background(), procOpts{eventsOnStderr: true}, "sh", "-c",
		`echo 'not json' >&2; echo '{"event":"ready","n":3}' >&2; cat`)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	ev, err := p.Wait("ready", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Num("n") != 3 {
		t.Errorf("event %v, want n=3", ev)
	}
	full := p.WhenBytes(1 << 20)
	go writeN(p.Stdin(), 1<<20)
	select {
	case <-full:
	case <-time.After(10 * time.Second):
		t.Fatal("1 MiB did not come back through the child")
	}
	if !strings.Contains(p.Tail(), "not json") {
		t.Errorf("tail %q lacks the non-event line", p.Tail())
	}
	p.Stop()
	if _, err := p.Wait("never", time.Second); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("Wait after Stop: %v, want an exit error", err)
	}
}
