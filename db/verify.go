package db

import (
	"fmt"
	"strings"
	"time"
)

// MaxClockSkew is how far into the future a record's timestamp may be: ToolDb's 30 s, which
// absorbs clock drift between honest peers without letting a writer pin a key far ahead.
const MaxClockSkew = 30 * time.Second

// HookFunc inspects a record that passed every built-in check; prev is the stored record for
// the key, or nil. Returning an error rejects the record. A hook cannot accept what verification
// refused: it is only ever called after every built-in check has passed.
type HookFunc func(rec, prev *Record) error

// Hook is a custom verification for keys starting with Prefix (ToolDb's addCustomVerification).
type Hook struct {
	Prefix string
	Check  HookFunc
}

// Verifier checks records, a pure function of the record, the stored record and now.
// The zero value verifies with no proof of work and no hooks.
type Verifier struct {
	// PoW is the number of leading zero hex digits h must have. Zero means none.
	PoW int
	// Hooks are run, in order, for every key they prefix.
	Hooks []Hook
}

// Verify runs every check on rec, in ToolDb's order, stopping at the first failure: required
// fields, timestamp, frozen key, user key, hash (always; ToolDb skips it at pow 0), proof of
// work, signature, then the hooks. prev is the record stored under rec.Key, or nil.
func (v *Verifier) Verify(rec, prev *Record, now time.Time) error {
	if err := v.verifyBuiltin(rec, prev, now); err != nil {
		return err
	}
	return v.runHooks(rec, prev)
}

func (v *Verifier) verifyBuiltin(rec, prev *Record, now time.Time) error {
	switch {
	case rec.Key == "":
		return fmt.Errorf("%w: k", ErrMissingField)
	case rec.Author == "":
		return fmt.Errorf("%w: a", ErrMissingField)
	case rec.Hash == "":
		return fmt.Errorf("%w: h", ErrMissingField)
	case rec.Sig == "":
		return fmt.Errorf("%w: s", ErrMissingField)
	case len(rec.Value) == 0:
		return fmt.Errorf("%w: v", ErrMissingField)
	}
	if rec.Time > now.Add(MaxClockSkew).UnixMilli() {
		return fmt.Errorf("%w: t=%d now=%d", ErrFutureTimestamp, rec.Time, now.UnixMilli())
	}
	if IsFrozenKey(rec.Key) && prev != nil && frozenRejects(prev, rec) {
		return fmt.Errorf("%w: %q", ErrFrozenKey, rec.Key)
	}
	if owner, ok := KeyOwner(rec.Key); ok && owner != rec.Author {
		return fmt.Errorf("%w: %q", ErrAddressMismatch, rec.Key)
	}
	if len(rec.Hash) != hashHexLen || ComputeHash(rec.Value, rec.Author, rec.Time, rec.Nonce) != rec.Hash {
		return fmt.Errorf("%w: %q", ErrHashMismatch, rec.Key)
	}
	if !hasProofOfWork(rec.Hash, v.PoW) {
		return fmt.Errorf("%w: want %d zeros", ErrNoProofOfWork, v.PoW)
	}
	if err := VerifySignature(rec.Author, rec.Hash, rec.Sig); err != nil {
		return fmt.Errorf("%q: %w", rec.Key, err)
	}
	return nil
}

// hasHookFor reports whether any hook applies to key, so callers can skip loading prev.
func (v *Verifier) hasHookFor(key string) bool {
	for _, h := range v.Hooks {
		if strings.HasPrefix(key, h.Prefix) {
			return true
		}
	}
	return false
}

func (v *Verifier) runHooks(rec, prev *Record) error {
	for _, h := range v.Hooks {
		if !strings.HasPrefix(rec.Key, h.Prefix) || h.Check == nil {
			continue
		}
		if err := h.Check(rec, prev); err != nil {
			return fmt.Errorf("%w: prefix %q: %w", ErrRejectedByHook, h.Prefix, err)
		}
	}
	return nil
}
