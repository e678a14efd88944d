package testutil

import (
	"fmt"
	"testing"
	"time"
)

// PollInterval is how often Eventually checks its condition: short enough
// that a test waits about as long as the condition takes, long enough that
// a cheap condition costs nothing next to the code under test.
const PollInterval = 10 * time.Millisecond

// Poll calls cond every interval until it returns true or timeout has
// passed, and reports whether it did. cond is called once more at the
// deadline, so a condition that holds by then counts. An interval of zero
// means PollInterval; pass a longer one when cond is costly (a lookup over
// the network, a scan of a store) or reads a clock that moves in large
// steps.
//
// Poll is for a wait with no event to block on (a counter, a state owned by
// someone else's goroutine); it is polling, not synchronisation. Use it
// directly when a timeout needs more than a message (state to dump, a value
// to read back); otherwise use Eventually.
//
// timeout is used as given: pass Scaled(d) when d is patience (how long
// to wait for something that will come), and d itself when it is a bound
// the test asserts, so that load never loosens it.
func Poll(timeout, interval time.Duration, cond func() bool) bool {
	if interval <= 0 {
		interval = PollInterval
	}
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(min(interval, time.Until(deadline)))
	}
}

// Eventually waits, like Poll with PollInterval, until cond returns true,
// and fails t if timeout passes first, with a message naming what was
// awaited (format and args, e.g. "%d peers" → "timed out after 5s waiting
// for 3 peers"). The arguments are evaluated when Eventually is called;
// for a message that shows the state at the timeout, use Poll.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	if !Poll(timeout, PollInterval, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, fmt.Sprintf(format, args...))
	}
}
