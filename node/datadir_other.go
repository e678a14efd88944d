//go:build !unix

package node

import (
	"errors"
	"os"
)

var errLocked = errors.New("locked")

// lockExclusive is not implemented here: Pebble's own lock on the store
// still keeps a second node out, with a less helpful message.
func lockExclusive(*os.File) error { return nil }
