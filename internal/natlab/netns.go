package natlab

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// inNetns runs fn on an OS thread that has joined the network namespace
// mounted at path. A socket belongs to the namespace it was created in for its
// whole life, whichever thread later reads or writes it, so fn only needs to
// create sockets here; using them afterwards needs no special care.
//
// The goroutine locks its thread and never unlocks it: when it returns, the Go
// runtime terminates the thread instead of handing it, possibly still inside
// the lab namespace, to an unrelated goroutine. The thread also moves back to
// its original namespace before that, because the runtime parks the main
// thread instead of terminating it, and a parked thread must not pin a lab
// namespace.
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread on purpose; see the comment above.
		errc <- runInNetnsLocked(path, fn)
	}()
	return <-errc
}

// runInNetnsLocked does the work of inNetns on the already locked thread.
func runInNetnsLocked(path string, fn func() error) error {
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("natlab: open own netns: %w", err)
	}
	defer unix.Close(orig)
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("natlab: open netns %s: %w", path, err)
	}
	err = unix.Setns(target, unix.CLONE_NEWNET)
	unix.Close(target)
	if err != nil {
		return fmt.Errorf("natlab: setns %s: %w", path, err)
	}
	// Best effort: the thread is discarded anyway (see inNetns).
	defer unix.Setns(orig, unix.CLONE_NEWNET) //nolint:errcheck
	return fn()
}

// nsPath is where "ip netns add" mounts a named namespace.
func nsPath(name string) string { return "/run/netns/" + name }
