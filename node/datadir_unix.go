//go:build unix

package node

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// errLocked: another open file description holds the lock.
var errLocked = errors.New("locked")

// lockExclusive takes an exclusive flock on f without waiting. The kernel
// drops it when the process exits, however it exits.
func lockExclusive(f *os.File) error {
	err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return errLocked
	}
	return err
}
