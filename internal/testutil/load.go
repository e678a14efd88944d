// Package testutil holds helpers the tests of several packages share.
// Test code only: production packages must not import it.
package testutil

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// LoadFactor is how much busier this machine is than it has cores: the
// 1-minute load average divided by the number of CPUs, and at least 1 (also
// when the load cannot be read). A bound that a test asserts on an idle
// machine (a reconnect within 5 s) is scaled by it, so that the test keeps
// its meaning there and does not fail because other work starves it.
func LoadFactor() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 1
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 1
	}
	load, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return 1
	}
	return max(1, load/float64(runtime.NumCPU()))
}

// Scaled is d times LoadFactor.
func Scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * LoadFactor())
}
