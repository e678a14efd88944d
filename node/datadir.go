package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// lockFile is the file a running node holds locked in its data directory.
const lockFile = "lock"

// dataDir is a started node's claim on its data directory: the lock that
// keeps a second node out, and what this Start created, so that a Start
// that fails leaves the directory as it found it.
type dataDir struct {
	path    string
	lock    *os.File
	created []string // paths this Start created, newest last
}

// claimDataDir creates path if needed and locks it. A directory another
// process holds fails with ErrDataDirInUse naming its pid.
func claimDataDir(path string) (*dataDir, error) {
	d := &dataDir{path: path}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(path, 0o700); err != nil {
			return nil, fmt.Errorf("node: data dir: %w", err)
		}
		d.created = append(d.created, path)
	} else if err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	lockPath := filepath.Join(path, lockFile)
	if _, err := os.Stat(lockPath); errors.Is(err, fs.ErrNotExist) {
		d.created = append(d.created, lockPath)
	}
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		d.undo()
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	if err := lockExclusive(f); err != nil {
		pid := readPID(f)
		f.Close()
		d.undo()
		if errors.Is(err, errLocked) {
			return nil, &inUseError{path: path, pid: pid}
		}
		return nil, fmt.Errorf("node: lock data dir: %w", err)
	}
	// The pid is only for that message; the lock itself is what counts.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	d.lock = f
	return d, nil
}

// inUseError is ErrDataDirInUse with the directory and the holder's pid.
type inUseError struct {
	path string
	pid  int // 0: unknown
}

func (e *inUseError) Error() string {
	if e.pid > 0 {
		return fmt.Sprintf("node: data directory %s is in use by another node (pid %d)", e.path, e.pid)
	}
	return fmt.Sprintf("node: data directory %s is in use by another node", e.path)
}

func (e *inUseError) Is(target error) bool { return target == ErrDataDirInUse }

// readPID reads the pid a lock holder wrote, 0 if there is none.
func readPID(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil {
		return 0
	}
	return pid
}

// track records that path did not exist before this Start and was made now.
func (d *dataDir) track(path string) { d.created = append(d.created, path) }

// exists reports whether path exists; for track's callers, before they create it.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// undo removes what this Start created, newest first (the lock file only
// while still holding the lock, so no other node's lock is ever removed).
func (d *dataDir) undo() {
	for i := len(d.created) - 1; i >= 0; i-- {
		_ = os.RemoveAll(d.created[i])
	}
	d.created = nil
}

// release unlocks the directory (the lock file stays, with the last pid).
func (d *dataDir) release() {
	if d.lock != nil {
		_ = d.lock.Close() // closing the descriptor drops the lock
		d.lock = nil
	}
}
