package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the demo and checks its story: three connections, the value
// on both subscribers, a clean shutdown. Its speed (under 15 s) is a
// benchmark matter (BenchmarkDemo); here it only has to finish.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- demo(context.Background(), &out, 6, "demo-test") }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo: %v\n%s", err, out.String())
		}
	case <-time.After(2 * demoTimeout):
		t.Fatal("demo did not finish")
	}
	s := out.String()
	t.Log("\n" + s)
	if n := strings.Count(s, " connected: path "); n != 3 {
		t.Errorf("%d connection lines, want 3 (one per pair)", n)
	}
	for _, want := range []string{
		"alice put demo/greeting",
		`bob   got demo/greeting = {"text":"hello from alice","n":1}`,
		`carol got demo/greeting = {"text":"hello from alice","n":1}`,
		"all nodes shut down cleanly",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// BenchmarkDemo measures one whole demo run (goal: under 15 s).
func BenchmarkDemo(b *testing.B) {
	for range b.N {
		var out bytes.Buffer
		if err := demo(context.Background(), &out, 6, "demo-bench"); err != nil {
			b.Fatalf("%v\n%s", err, out.String())
		}
	}
}
