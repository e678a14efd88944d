package db

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// On-disk layout. Every Pebble key starts with one namespace byte:
//
//	0x00 'v'                     format marker: "swarmdb-db" + uvarint(version)
//	0x00 'm' name                metadata
//	0x00 'i' name                the node's own identity key material
//	0x00 'p' peer                known peers' keys
//	'r' key                      the key's record as ToolDb JSON (for a CRDT: its head source)
//	'c' key                      a CRDT key's merged change list (JSON array)
//	's' uvarint(len(key)) key h s  one signed CRDT source record, as received
//
// The format version changes whenever this layout or a value encoding changes. Open refuses a
// newer version (ErrFormatTooNew) and any version it cannot migrate (ErrFormatTooOld), and never
// rewrites a store it does not understand.
const (
	formatMagic   = "swarmdb-db"
	formatVersion = 1
	// minFormatVersion is the oldest version Open can still read (migrating it if needed).
	minFormatVersion = 1
)

var (
	formatKey = []byte{0, 'v'}
)

const (
	nsMeta     = "\x00m"
	nsIdentity = "\x00i"
	nsPeer     = "\x00p"
	nsRecord   = 'r'
	nsCRDT     = 'c'
	nsSource   = 's'
)

func recordKey(k string) []byte { return append([]byte{nsRecord}, k...) }
func crdtKey(k string) []byte   { return append([]byte{nsCRDT}, k...) }

func sourcePrefix(k string) []byte {
	b := binary.AppendUvarint([]byte{nsSource}, uint64(len(k)))
	return append(b, k...)
}

func sourceKey(r *Record) []byte {
	b := sourcePrefix(r.Key)
	b = append(b, r.Hash...)
	return append(b, r.Sig...)
}

// prefixEnd returns the smallest key greater than every key starting with p (nil: no bound).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func encodeFormat(version uint64) []byte {
	return binary.AppendUvarint([]byte(formatMagic), version)
}

// checkFormat reads the format marker, writing it into an empty store.
func checkFormat(pdb *pebble.DB) error {
	v, closer, err := pdb.Get(formatKey)
	if errors.Is(err, pebble.ErrNotFound) {
		it, err := pdb.NewIter(nil)
		if err != nil {
			return fmt.Errorf("db: check format: %w", err)
		}
		nonEmpty := it.First()
		err = it.Close()
		if err != nil {
			return corruptErr("check format", err)
		}
		if nonEmpty {
			return fmt.Errorf("%w: data without a format marker", ErrCorrupt)
		}
		if err := pdb.Set(formatKey, encodeFormat(formatVersion), pebble.Sync); err != nil {
			return fmt.Errorf("db: write format marker: %w", err)
		}
		return nil
	}
	if err != nil {
		return corruptErr("read format marker", err)
	}
	defer closer.Close()
	if len(v) <= len(formatMagic) || string(v[:len(formatMagic)]) != formatMagic {
		return fmt.Errorf("%w: bad format marker %q", ErrCorrupt, v)
	}
	ver, n := binary.Uvarint(v[len(formatMagic):])
	if n <= 0 {
		return fmt.Errorf("%w: bad format version", ErrCorrupt)
	}
	switch {
	case ver > formatVersion:
		return fmt.Errorf("%w: store is version %d, this build reads up to %d", ErrFormatTooNew, ver, formatVersion)
	case ver < minFormatVersion:
		return fmt.Errorf("%w: store is version %d, this build reads %d to %d", ErrFormatTooOld, ver, minFormatVersion, formatVersion)
	}
	// Versions minFormatVersion..formatVersion-1 would be migrated here.
	return nil
}

// corruptErr wraps a Pebble error, marking it ErrCorrupt when Pebble found corruption. The
// message is one line: Pebble joins a "<corruption detail carrier>" line to corruption errors.
func corruptErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if pebble.IsCorruptionError(err) {
		msg := firstLine(err.Error())
		if info := pebble.ExtractDataCorruptionInfo(err); info != nil {
			msg = info.Path + ": " + firstLine(info.Details.Error())
		}
		return &corruptError{msg: fmt.Sprintf("db: %s: store corrupt: %s", op, msg), cause: err}
	}
	return fmt.Errorf("db: %s: %w", op, err)
}

// corruptError is a corruption Pebble reported, with a readable message. errors.Is matches
// ErrCorrupt and Pebble's own corruption mark.
type corruptError struct {
	msg   string
	cause error
}

func (e *corruptError) Error() string   { return e.msg }
func (e *corruptError) Unwrap() []error { return []error{ErrCorrupt, e.cause} }

// firstLine is s up to its first newline.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
