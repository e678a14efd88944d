package testutil

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestMain(m *testing.M) { VerifyNoLeaks(m) }

// fakeT records what Eventually reports instead of ending the test.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
}

// TestPollHolds: a condition that becomes true after a few calls ends the
// wait at once, without waiting out the timeout.
func TestPollHolds(t *testing.T) {
	var calls atomic.Int32
	start := time.Now()
	if !Poll(time.Minute, 0, func() bool { return calls.Add(1) == 3 }) {
		t.Fatal("Poll gave up on a condition that held")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("Poll took %v for a condition that held on its third call", took)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
}

// TestPollTimesOut: a condition that never holds is given the whole
// timeout, checked once more at the deadline, and then reported false.
func TestPollTimesOut(t *testing.T) {
	const timeout = 50 * time.Millisecond
	var last time.Time // written by cond, which Poll calls on this goroutine
	start := time.Now()
	ok := Poll(timeout, 20*time.Millisecond, func() bool {
		last = time.Now()
		return false
	})
	if ok {
		t.Fatal("Poll reported a condition that never held")
	}
	if took := time.Since(start); took < timeout {
		t.Fatalf("Poll gave up after %v, before its timeout %v", took, timeout)
	}
	if last.Sub(start) < timeout {
		t.Fatalf("last check %v after the start, before the deadline %v", last.Sub(start), timeout)
	}
}

// TestEventuallyMessage: a timeout fails the test with how long it waited
// and what it waited for; a condition that holds fails nothing.
func TestEventuallyMessage(t *testing.T) {
	f := &fakeT{TB: t}
	Eventually(f, 20*time.Millisecond, func() bool { return false }, "%d peers", 3)
	if want := "timed out after 20ms waiting for 3 peers"; f.failed != want {
		t.Fatalf("failure %q, want %q", f.failed, want)
	}
	f = &fakeT{TB: t}
	Eventually(f, time.Minute, func() bool { return true }, "nothing")
	if f.failed != "" {
		t.Fatalf("a condition that held failed the test: %q", f.failed)
	}
}

// TestCheckLeaks: a goroutine started during a test and still running at
// its end fails it, and names the function that leaked.
func TestCheckLeaks(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop) // after the fake test's cleanups: the leak is caught first
	f := &cleanupT{fakeT: fakeT{TB: t}}
	CheckLeaks(f)
	go leaker(stop)
	f.runCleanups()
	if !strings.Contains(f.errors, "leaker") {
		t.Fatalf("leaked goroutine not reported; errors %q", f.errors)
	}
}

func leaker(stop chan struct{}) { <-stop }

// cleanupT is a fakeT that keeps its cleanups and errors.
type cleanupT struct {
	fakeT
	cleanups []func()
	errors   string
}

func (c *cleanupT) Cleanup(f func())               { c.cleanups = append(c.cleanups, f) }
func (c *cleanupT) Error(args ...any)              { c.errors += fmt.Sprint(args...) }
func (c *cleanupT) Errorf(format string, a ...any) { c.errors += fmt.Sprintf(format, a...) }
func (c *cleanupT) runCleanups() {
	for i := len(c.cleanups) - 1; i >= 0; i-- {
		c.cleanups[i]()
	}
}

// TestLastLines: the writer keeps the last lines, whole, across writes that split them.
func TestLastLines(t *testing.T) {
	w := &lastLines{max: 2}
	for _, s := range []string{"one\ntw", "o\nthree\n", "fo", "ur\n"} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("write %q: %d %v", s, n, err)
		}
	}
	if got := w.String(); got != "three\nfour" {
		t.Fatalf("kept %q, want the last two lines", got)
	}
}
