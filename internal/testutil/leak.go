package testutil

import (
	"testing"

	"go.uber.org/goleak"
)

// leakIgnores are the goroutines that every package's leak check accepts:
// each one belongs to a library, lives for the process by that library's
// design, and is not ours to stop. Keep each entry narrow (one function)
// and say which library starts it and why it stays. None is needed today:
// every package's run ends with no goroutine but the test runner's.
var leakIgnores []goleak.Option

// VerifyNoLeaks runs the package's tests and then fails the run if any
// goroutine is left behind other than the shared ignores and opts (a
// package's own, each commented with why). Every package's TestMain is
//
//	func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }
//
// It does not return: it exits with the tests' status.
func VerifyNoLeaks(m *testing.M, opts ...goleak.Option) {
	goleak.VerifyTestMain(m, append(append([]goleak.Option(nil), leakIgnores...), opts...)...)
}

// CheckLeaks makes t fail if, once all of its other cleanups have run, a
// goroutine started during t is still running. It pins a leak on the test
// that caused it, where VerifyNoLeaks only sees the package as a whole;
// call it first in the test, so that its cleanup runs last. Goroutines
// that were running before the call (an earlier test's, still ending) are
// not counted against t.
func CheckLeaks(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	all := append(append([]goleak.Option{goleak.IgnoreCurrent()}, leakIgnores...), opts...)
	t.Cleanup(func() { goleak.VerifyNone(t, all...) })
}
