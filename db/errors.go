package db

import "errors"

// Verification failures, one per check, in the order Verifier.Verify runs them.
var (
	// ErrMalformed: the bytes are not a record (not a JSON object, or a field of the wrong type).
	ErrMalformed = errors.New("db: malformed record")
	// ErrMissingField: one of k, a, n, t, h, s, v, c is absent (ToolDb's InvalidData).
	ErrMissingField = errors.New("db: missing field")
	// ErrFutureTimestamp: t is more than MaxClockSkew ahead of now (ToolDb's InvalidTimestamp).
	ErrFutureTimestamp = errors.New("db: timestamp too far in the future")
	// ErrFrozenKey: a "==" key is owned by an older record of another author (ToolDb's CantOverwrite).
	ErrFrozenKey = errors.New("db: frozen key owned by another author")
	// ErrAddressMismatch: a ":<address>.<key>" key written by another address.
	ErrAddressMismatch = errors.New("db: user key written by another address")
	// ErrHashMismatch: h is not sha256(v+a+t+n). ToolDb skips this check at pow 0; we never do.
	ErrHashMismatch = errors.New("db: hash does not match value")
	// ErrNoProofOfWork: h lacks the configured number of leading zero hex digits.
	ErrNoProofOfWork = errors.New("db: insufficient proof of work")
	// ErrInvalidAddress: a is not an 86-character base64url P-256 point.
	ErrInvalidAddress = errors.New("db: invalid address")
	// ErrBadSignature: s is not a valid P-256 signature of h by a.
	ErrBadSignature = errors.New("db: bad signature")
	// ErrBadCRDT: c names no CRDT we know, or v is not a valid change list for it.
	ErrBadCRDT = errors.New("db: bad CRDT change list")
	// ErrCRDTKindConflict: the changes are of another CRDT kind than the key already holds, or a
	// plain value meets a CRDT on the same key.
	ErrCRDTKindConflict = errors.New("db: CRDT kind conflict")
	// ErrRejectedByHook: a custom verification hook refused the record.
	ErrRejectedByHook = errors.New("db: rejected by verification hook")
)

// Store and key errors.
var (
	ErrNotFound = errors.New("db: not found")
	ErrClosed   = errors.New("db: store closed")
	ErrCorrupt  = errors.New("db: store corrupt")
	// ErrWALCorrupt: the write-ahead log is damaged where writes that were synced follow
	// (see WALCorruptError); Config.Repair opens such a store.
	ErrWALCorrupt    = errors.New("db: write-ahead log corrupt")
	ErrFormatTooNew  = errors.New("db: store written by a newer format version")
	ErrFormatTooOld  = errors.New("db: store written by an unsupported older format version")
	ErrWatchOverflow = errors.New("db: watcher fell too far behind")
	ErrBadKeys       = errors.New("db: bad key material")
	ErrDecrypt       = errors.New("db: cannot decrypt account")
)
