package node

import (
	"errors"

	"github.com/swarmdb/swarmdb/db"
)

var (
	// ErrConfig: a required Config field is missing or invalid.
	ErrConfig = errors.New("node: bad configuration")
	// ErrNotStarted: the call needs a started node.
	ErrNotStarted = errors.New("node: not started")
	// ErrClosed: the node was closed.
	ErrClosed = errors.New("node: closed")
	// ErrIdentity: the identity file exists but cannot be read, or it is
	// missing next to an existing store.
	ErrIdentity = errors.New("node: bad identity file")
	// ErrDataDirInUse: another running node holds the data directory.
	ErrDataDirInUse = errors.New("node: data directory in use")

	// ErrWALCorrupt: Start found the store's write-ahead log damaged and
	// changed nothing (db.ErrWALCorrupt); Config.RepairStore opens it.
	ErrWALCorrupt = db.ErrWALCorrupt
	// ErrStoreCorrupt: Start found the store damaged beyond its log
	// (db.ErrCorrupt).
	ErrStoreCorrupt = db.ErrCorrupt
)
