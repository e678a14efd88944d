package portmap

import (
	"testing"
	"time"
)

func TestEpochClock(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name   string
		server uint32        // second response's epoch (the first is 100)
		after  time.Duration // client time between them
		valid  bool
	}{
		{"in step", 160, 60 * time.Second, true},
		{"reordered by a second", 99, 0, true},
		{"backwards", 98, 0, false},
		{"restart: epoch small again", 3, 60 * time.Second, false},
		{"server fast by 2 s", 162, 60 * time.Second, true},
		{"server far ahead", 300, 60 * time.Second, false},
		{"server stalled", 100, 60 * time.Second, false},
		{"drift within 1/16", 1100 + 60, 1000 * time.Second, true},
	} {
		var e epochClock
		if !e.observe(100, t0) {
			t.Fatalf("%s: first observation invalid", tc.name)
		}
		if got := e.observe(tc.server, t0.Add(tc.after)); got != tc.valid {
			t.Errorf("%s: observe(%d after %v) = %v, want %v", tc.name, tc.server, tc.after, got, tc.valid)
		}
	}
	// After a restart the new epoch is the reference.
	var e epochClock
	e.observe(5000, t0)
	if e.observe(2, t0.Add(10*time.Second)) {
		t.Fatal("restart not noticed")
	}
	if !e.observe(12, t0.Add(20*time.Second)) {
		t.Fatal("the epoch after a restart is not the new reference")
	}
	e.reset()
	if !e.observe(1, t0) {
		t.Fatal("reset clock refused its first epoch")
	}
}
