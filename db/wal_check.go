package db

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Why this file exists. Pebble replays a write-ahead log until the first chunk that does
// not verify and takes everything after it for the torn tail of a crash: it keeps what came
// before, flushes it and deletes the log. Its read-ahead, meant to tell real damage from a
// torn tail, starts at the next 32 KiB block, so damage in the block being written is never
// recognised: one flipped bit silently rolled acknowledged writes back and dropped the rest.
//
// checkWAL reads the whole log first. Damage is *confirmed* when, after the first chunk that
// does not verify, the log holds proof that the log was written past it:
//   - a later chunk of this log, intact, in Pebble's WAL-sync format, whose "synced offset"
//     promises the log was synced beyond the damage (Pebble's own rule, applied to every byte
//     after the damage rather than from the next block on), or
//   - the EOF trailer Pebble's LogWriter writes when it closes the log cleanly (a header with
//     the next log number), which comes only after everything before it was synced.
//
// A log that simply stops (a crash mid-write, preallocated zeros, old content of a recycled
// file) has neither, and is replayed as Pebble always did. What this cannot see: damage to
// the very last chunk of a log that was not closed cleanly looks exactly like a torn write.
//
// The layout read here is Pebble's record format (pebble/v2/record, documented at the top
// of record.go): 32 KiB blocks of chunks that never cross a block boundary,
//
//	legacy:     CRC(4) Size(2) Type(1) payload                    types 1-4
//	recyclable: CRC(4) Size(2) Type(1) LogNum(4) payload          types 5-8
//	WAL sync:   CRC(4) Size(2) Type(1) LogNum(4) SyncOff(8) payload  types 9-12
//
// all little-endian; the CRC (CRC-32C, rotated and offset as in LevelDB) covers Type
// through the end of the payload.
const (
	walBlockSize      = 32 << 10
	walLegacyHeader   = 7
	walRecycleHeader  = 11
	walSyncHeader     = 19
	walMaxChunkType   = 12
	walFirstRecycle   = 5
	walFirstSyncChunk = 9
)

var walCRCTable = crc32.MakeTable(crc32.Castagnoli)

// walChecksum is Pebble's (and LevelDB's) masked CRC-32C.
func walChecksum(b []byte) uint32 {
	c := crc32.Checksum(b, walCRCTable)
	return (c>>15 | c<<17) + 0xa282ead8
}

// walDamage is a confirmed corruption: the first chunk that does not verify, at Offset,
// and the proof found after it.
type walDamage struct {
	Offset int64 // where the first chunk that does not verify starts
	Proof  int64 // where the chunk (or EOF trailer) proving the log went on starts
	Synced int64 // the synced offset that proof promises (the trailer: its own offset)
}

// checkWAL scans the bytes of the log numbered logNum. It returns the damage when it is
// confirmed, and ok false for a log that verifies to its end or stops like a torn write.
func checkWAL(b []byte, logNum uint32) (d walDamage, ok bool) {
	bad, clean := firstBadChunk(b, logNum)
	if clean {
		return walDamage{}, false
	}
	return proofAfter(b, logNum, bad)
}

// firstBadChunk walks the chunks the way Pebble's reader does and returns the offset of
// the first one that does not verify; clean is true when the log ends without one (the
// end of the file, or the EOF trailer).
func firstBadChunk(b []byte, logNum uint32) (bad int64, clean bool) {
	for blockStart := 0; blockStart < len(b); blockStart += walBlockSize {
		blockEnd := min(blockStart+walBlockSize, len(b))
		pos := blockStart
		for pos+walLegacyHeader <= blockEnd {
			sum := binary.LittleEndian.Uint32(b[pos:])
			size := int(binary.LittleEndian.Uint16(b[pos+4:]))
			typ := b[pos+6]
			if sum == 0 && size == 0 && typ == 0 {
				// Zero padding ends a block whose rest cannot hold a header (as
				// Pebble's reader decides it); anything else zeroed is where the log
				// stops, or was zeroed by damage.
				rest := blockEnd - pos
				if rest < walRecycleHeader || (rest < walSyncHeader && allZero(b[pos:blockEnd])) {
					break
				}
				return int64(pos), false
			}
			if typ == 0 || typ > walMaxChunkType {
				return int64(pos), false
			}
			header := walHeaderSize(typ)
			if pos+header > blockEnd {
				return int64(pos), false
			}
			if header > walLegacyHeader {
				switch n := binary.LittleEndian.Uint32(b[pos+7:]); {
				case n == logNum+1:
					return 0, true // the EOF trailer: closed cleanly
				case n != logNum:
					return int64(pos), false // old content of a recycled file, or damage
				}
			}
			end := pos + header + size
			if end > blockEnd || walChecksum(b[pos+6:end]) != sum {
				return int64(pos), false
			}
			pos = end
		}
	}
	return 0, true
}

// proofAfter looks at every offset after bad for an intact WAL-sync chunk of this log that
// promises a synced offset beyond bad, or for this log's EOF trailer.
func proofAfter(b []byte, logNum uint32, bad int64) (walDamage, bool) {
	for q := int(bad) + 1; q+walRecycleHeader <= len(b); q++ {
		inBlock := walBlockSize - q%walBlockSize
		typ := b[q+6]
		if typ < walFirstRecycle || typ > walMaxChunkType {
			continue
		}
		n := binary.LittleEndian.Uint32(b[q+7:])
		if typ == walFirstRecycle && n == logNum+1 && inBlock >= walRecycleHeader &&
			binary.LittleEndian.Uint32(b[q:]) == 0 && binary.LittleEndian.Uint16(b[q+4:]) == 0 {
			return walDamage{Offset: bad, Proof: int64(q), Synced: int64(q)}, true
		}
		if typ < walFirstSyncChunk || n != logNum || inBlock < walSyncHeader || q+walSyncHeader > len(b) {
			continue
		}
		end := q + walSyncHeader + int(binary.LittleEndian.Uint16(b[q+4:]))
		if end > len(b) || end-q > inBlock || walChecksum(b[q+6:end]) != binary.LittleEndian.Uint32(b[q:]) {
			continue
		}
		if synced := binary.LittleEndian.Uint64(b[q+11:]); synced > uint64(bad) {
			return walDamage{Offset: bad, Proof: int64(q), Synced: int64(synced)}, true
		}
	}
	return walDamage{}, false
}

func walHeaderSize(typ byte) int {
	switch {
	case typ >= walFirstSyncChunk:
		return walSyncHeader
	case typ >= walFirstRecycle:
		return walRecycleHeader
	}
	return walLegacyHeader
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// WALCorruptError reports a write-ahead log whose damage Pebble would have taken for a
// torn tail. errors.Is matches it with ErrCorrupt and ErrWALCorrupt.
type WALCorruptError struct {
	Path   string // the log file
	Offset int64  // where the first damaged chunk starts
	After  int64  // bytes of the log after it that Pebble would have dropped
}

func (e *WALCorruptError) Error() string {
	return fmt.Sprintf("db: write-ahead log %s is damaged at byte %d; %d bytes of synced writes follow it", e.Path, e.Offset, e.After)
}

// Is makes errors.Is(err, ErrCorrupt) and errors.Is(err, ErrWALCorrupt) true.
func (e *WALCorruptError) Is(target error) bool {
	return target == ErrCorrupt || target == ErrWALCorrupt
}

// walCheckFS is the store's file system while Pebble opens it: every write-ahead log Pebble
// opens for replay is checked first, and a damaged one fails the open before Pebble reads
// it, so nothing is replayed, flushed or deleted. Logs are opened for reading only by Open,
// so after it the wrapper only passes calls through.
type walCheckFS struct {
	vfs.FS
	checking *atomic.Bool

	mu      sync.Mutex
	damaged *WALCorruptError // the first damaged log found; guarded by mu
}

func newWALCheckFS(fs vfs.FS) *walCheckFS {
	w := &walCheckFS{FS: fs, checking: new(atomic.Bool)}
	w.checking.Store(true)
	return w
}

// Open checks a log before handing it to Pebble.
func (w *walCheckFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := w.FS.Open(name, opts...)
	if err != nil || !w.checking.Load() {
		return f, err
	}
	logNum, isLog := walFileNum(name)
	if !isLog {
		return f, nil
	}
	if derr := w.check(f, name, logNum); derr != nil {
		_ = f.Close()
		return nil, derr
	}
	return f, nil
}

func (w *walCheckFS) check(f vfs.File, name string, logNum uint64) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && err != io.EOF {
		return err
	}
	d, bad := checkWAL(b, uint32(logNum))
	if !bad {
		return nil
	}
	e := &WALCorruptError{Path: name, Offset: d.Offset, After: int64(len(b)) - d.Offset}
	w.mu.Lock()
	if w.damaged == nil {
		w.damaged = e
	}
	w.mu.Unlock()
	return e
}

// found returns the damaged log the check refused, if any.
func (w *walCheckFS) found() *WALCorruptError {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.damaged
}

// walFileNum parses Pebble's log file name, "000123.log".
func walFileNum(path string) (uint64, bool) {
	stem, ok := strings.CutSuffix(filepath.Base(path), ".log")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(stem, 10, 64)
	return n, err == nil
}
