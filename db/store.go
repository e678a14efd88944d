package db

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Config configures a Store. The zero value of every field but Dir works.
type Config struct {
	// Dir is the store's directory. Required.
	Dir string
	// FS is the file system. Zero means the operating system's (vfs.NewMem() in tests).
	FS vfs.FS
	// Verifier holds the proof of work and the custom hooks. Zero means no PoW, no hooks.
	Verifier Verifier
	// Now is the clock used for timestamp checks. Zero means time.Now.
	Now func() time.Time
	// Logger receives the store's and Pebble's logs. Zero means discard.
	Logger *slog.Logger
	// MaxBatch is how many writes one group commit (one fsync) may carry. Zero means 1024.
	MaxBatch int
	// WatchQueue is how many undelivered events a watcher may hold before it is ended with
	// ErrWatchOverflow. Zero means 65536.
	WatchQueue int
	// CacheSize is Pebble's block cache in bytes. Zero means Pebble's default (8 MiB).
	CacheSize int64
	// Repair opens a store whose write-ahead log is damaged (WALCorruptError): the store's
	// files are first copied to a sibling directory ("<Dir>.corrupt-<time>"), then the log is
	// replayed up to the damage and the writes after it are dropped. Zero means such a store
	// is refused and left untouched.
	Repair bool
}

func (c *Config) setDefaults() {
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 1024
	}
	if c.WatchQueue <= 0 {
		c.WatchQueue = 65536
	}
}

// Stats is a snapshot of the store's counters.
type Stats struct {
	Accepted uint64 // records that changed the store (Stored or Merged)
	Ignored  uint64 // verified records that changed nothing (Stale, Duplicate, Subsumed)
	Rejected uint64 // records refused by verification or by the write rules
	Commits  uint64 // group commits, each one fsync
}

// Store is a durable, verified record store on Pebble.
//
// Open starts one writer goroutine; Close stops it and closes Pebble. Put verifies in the
// caller's goroutine (signature checks run in parallel), then hands the record to the writer,
// which applies the write rules in order against the latest state, commits everything queued as
// one synced batch (group commit) and only then answers the callers and notifies watchers.
type Store struct {
	// Immutable after Open.
	cfg  Config
	log  *slog.Logger
	pdb  *pebble.DB
	reqs chan *writeReq // unbuffered: a request is either taken by the writer or not sent

	closing    chan struct{} // closed by Close
	writerDone chan struct{} // closed when the writer exits
	closeOnce  sync.Once
	closeErr   error

	// life is held for reading by every direct Pebble access outside the writer, and for
	// writing by Close while it closes Pebble (Pebble panics when used after Close).
	life    sync.RWMutex
	pdbShut bool // guarded by life

	mu       sync.Mutex // guards the fields below
	closed   bool
	watchers map[*Watcher]struct{}

	accepted, ignored, rejected, commits atomic.Uint64
}

type writeReq struct {
	rec     Record
	changes ChangeSet // parsed once, in the caller, for CRDT records
	done    chan writeResult
}

type writeResult struct {
	outcome Outcome
	err     error
}

// Open opens (or creates) the store in cfg.Dir. A store of a newer or unsupported format, or a
// corrupt one, is reported and left untouched. A damaged write-ahead log (WALCorruptError) is
// reported before anything is replayed; with cfg.Repair the store is copied aside first and
// then opened with what the log holds before the damage.
func Open(cfg Config) (*Store, error) {
	cfg.setDefaults()
	if cfg.Dir == "" {
		return nil, errors.New("db: open: Config.Dir is required")
	}
	pdb, err := openPebble(cfg, true)
	var damaged *WALCorruptError
	if errors.As(err, &damaged) && cfg.Repair {
		backup, cerr := keepCopy(cfg.FS, cfg.Dir, cfg.Now())
		if cerr != nil {
			return nil, fmt.Errorf("db: repair %s: keep a copy: %w", cfg.Dir, cerr)
		}
		cfg.Logger.Warn("store repaired: the write-ahead log was damaged; writes after the damage are dropped here (peers send back what they hold)",
			"log", damaged.Path, "offset", damaged.Offset, "dropped_bytes", damaged.After, "copy", backup)
		pdb, err = openPebble(cfg, false)
	}
	if err != nil {
		return nil, err
	}
	if err := checkFormat(pdb); err != nil {
		_ = pdb.Close()
		return nil, fmt.Errorf("db: open %s: %w", cfg.Dir, err)
	}
	s := &Store{
		cfg:        cfg,
		log:        cfg.Logger,
		pdb:        pdb,
		reqs:       make(chan *writeReq),
		closing:    make(chan struct{}),
		writerDone: make(chan struct{}),
		watchers:   map[*Watcher]struct{}{},
	}
	go s.writeLoop()
	return s, nil
}

// openPebble opens Pebble on cfg.Dir; checkWAL checks every log before it is replayed.
func openPebble(cfg Config, checkWAL bool) (*pebble.DB, error) {
	fs := cfg.FS
	var walFS *walCheckFS
	if checkWAL {
		walFS = newWALCheckFS(fs)
		fs = walFS
	}
	opts := &pebble.Options{
		FS:                 fs,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{cfg.Logger},
		// Pebble's default reaction to corruption is Fatalf; we report it as ErrCorrupt from
		// the failing call instead and leave the files alone. Details is logged as text: as
		// a value it would print the stack traces cockroachdb/errors attaches.
		EventListener: &pebble.EventListener{DataCorruption: func(info pebble.DataCorruptionInfo) {
			cfg.Logger.Error("store corruption", "path", info.Path, "err", firstLine(info.Details.Error()))
		}},
	}
	if cfg.CacheSize > 0 {
		cache := pebble.NewCache(cfg.CacheSize)
		defer cache.Unref()
		opts.Cache = cache
	}
	pdb, err := pebble.Open(cfg.Dir, opts)
	if walFS != nil {
		walFS.checking.Store(false)
		if d := walFS.found(); d != nil {
			if err == nil {
				_ = pdb.Close()
			}
			return nil, d
		}
	}
	if err != nil {
		return nil, corruptErr("open "+cfg.Dir, err)
	}
	return pdb, nil
}

// keepCopy copies every file of the store in dir (sstables are immutable: hard links where
// the file system allows) to a new sibling directory and returns its name.
func keepCopy(fs vfs.FS, dir string, now time.Time) (string, error) {
	names, err := fs.List(dir)
	if err != nil {
		return "", err
	}
	dest := dir + ".corrupt-" + now.UTC().Format("20060102T150405")
	for i := 2; ; i++ {
		if _, err := fs.Stat(dest); errors.Is(err, os.ErrNotExist) {
			break
		}
		dest = fmt.Sprintf("%s.corrupt-%s-%d", dir, now.UTC().Format("20060102T150405"), i)
	}
	if err := fs.MkdirAll(dest, 0o755); err != nil {
		return "", err
	}
	for _, name := range names {
		if name == "LOCK" {
			continue
		}
		from, to := fs.PathJoin(dir, name), fs.PathJoin(dest, name)
		if st, err := fs.Stat(from); err != nil || st.IsDir() {
			continue
		}
		if strings.HasSuffix(name, ".sst") {
			err = vfs.LinkOrCopy(fs, from, to)
		} else {
			err = vfs.Copy(fs, from, to)
		}
		if err != nil {
			return "", err
		}
	}
	return dest, nil
}

// Close stops the writer, ends every watcher and closes Pebble. It is idempotent; writes that
// were acknowledged before it are durable.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		ws := s.watchers
		s.watchers = map[*Watcher]struct{}{}
		s.mu.Unlock()
		close(s.closing)
		<-s.writerDone
		for w := range ws {
			w.end(ErrClosed)
		}
		s.life.Lock()
		s.pdbShut = true
		s.closeErr = s.pdb.Close()
		s.life.Unlock()
	})
	return s.closeErr
}

// Stats returns a snapshot of the counters.
func (s *Store) Stats() Stats {
	return Stats{Accepted: s.accepted.Load(), Ignored: s.ignored.Load(), Rejected: s.rejected.Load(), Commits: s.commits.Load()}
}

// Put verifies rec and applies it: plain records by last-write-wins (and the frozen-key rule),
// CRDT records by merging. It returns once the change is durable (fsynced). A verification
// failure returns the check's ErrXxx and stores nothing. If ctx ends first, Put returns
// ctx.Err() and the record may or may not have been stored.
func (s *Store) Put(ctx context.Context, rec Record) (Outcome, error) {
	out, err := s.put(ctx, rec)
	if err != nil && !errors.Is(err, ErrClosed) && ctx.Err() == nil {
		s.rejected.Add(1)
		s.log.Debug("record rejected", "key", rec.Key, "err", err)
	}
	return out, err
}

func (s *Store) put(ctx context.Context, rec Record) (Outcome, error) {
	var prev *Record
	if IsFrozenKey(rec.Key) || s.cfg.Verifier.hasHookFor(rec.Key) {
		p, err := s.Get(rec.Key)
		switch {
		case err == nil:
			prev = &p
		case !errors.Is(err, ErrNotFound):
			return 0, err
		}
	}
	if err := s.cfg.Verifier.Verify(&rec, prev, s.cfg.Now()); err != nil {
		return 0, err
	}
	req := &writeReq{rec: rec, done: make(chan writeResult, 1)}
	if rec.CRDT != "" {
		cs, err := ParseChanges(rec.CRDT, rec.Value)
		if err != nil {
			return 0, fmt.Errorf("%q: %w", rec.Key, err)
		}
		req.changes = cs
	}
	select {
	case s.reqs <- req:
	case <-s.closing:
		return 0, ErrClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case res := <-req.done:
		return res.outcome, res.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// PutJSON parses a record from JSON and puts it.
func (s *Store) PutJSON(ctx context.Context, b []byte) (Outcome, error) {
	rec, err := ParseRecord(b)
	if err != nil {
		s.rejected.Add(1)
		return 0, err
	}
	return s.Put(ctx, rec)
}

func (s *Store) writeLoop() {
	defer close(s.writerDone)
	group := make([]*writeReq, 0, s.cfg.MaxBatch)
	for {
		select {
		case r := <-s.reqs:
			group = append(group[:0], r)
		case <-s.closing:
			return
		}
	drain:
		for len(group) < s.cfg.MaxBatch {
			select {
			case r := <-s.reqs:
				group = append(group, r)
			default:
				break drain
			}
		}
		s.commitGroup(group)
		clear(group)
	}
}

// commitGroup applies a group of verified records in order to one indexed batch (so each sees
// the ones before it), commits it with one fsync, then notifies watchers and answers callers.
func (s *Store) commitGroup(group []*writeReq) {
	b := s.pdb.NewIndexedBatch()
	defer b.Close()
	results := make([]writeResult, len(group))
	var events []Event
	for i, r := range group {
		out, ev, err := s.apply(b, r)
		results[i] = writeResult{outcome: out, err: err}
		if err == nil && out.Changed() {
			events = append(events, ev)
		}
	}
	// Count before the commit makes the records visible, so that whoever
	// reads a record (a watcher, a caller, a reader polling Get) and then
	// Stats finds it counted; a failed commit takes the counts back.
	accepted, ignored := countOutcomes(results)
	s.accepted.Add(uint64(accepted))
	s.ignored.Add(uint64(ignored))
	if !b.Empty() {
		s.commits.Add(1)
		if err := b.Commit(pebble.Sync); err != nil {
			err = corruptErr("commit", err)
			s.log.Error("group commit failed", "err", err, "records", len(group))
			for i := range results {
				if results[i].err == nil {
					results[i] = writeResult{err: err}
				}
			}
			events = nil
			s.accepted.Add(uint64(-accepted)) // two's complement: subtracts
			s.ignored.Add(uint64(-ignored))
		}
	}
	s.publish(events)
	for i, r := range group {
		r.done <- results[i]
	}
}

// countOutcomes counts the results that changed the store and those that
// did not (errors count as neither).
func countOutcomes(results []writeResult) (accepted, ignored int64) {
	for _, res := range results {
		switch {
		case res.err != nil:
		case res.outcome.Changed():
			accepted++
		default:
			ignored++
		}
	}
	return accepted, ignored
}

// apply runs the write rules for one verified record against the batch's view of the store.
func (s *Store) apply(b *pebble.Batch, r *writeReq) (Outcome, Event, error) {
	rec := &r.rec
	prev, err := readRecord(b, rec.Key)
	if err != nil {
		return 0, Event{}, err
	}
	// Verification checked the frozen rule against the committed state; a record committed
	// since (even earlier in this group) may have changed the owner.
	if IsFrozenKey(rec.Key) && prev != nil && frozenRejects(prev, rec) {
		return 0, Event{}, fmt.Errorf("%w: %q", ErrFrozenKey, rec.Key)
	}
	if rec.CRDT == "" {
		out, err := resolvePlain(prev, rec)
		if err != nil {
			return 0, Event{}, fmt.Errorf("%q: %w", rec.Key, err)
		}
		if out == Stored {
			if err := b.Set(recordKey(rec.Key), AppendRecord(nil, rec), nil); err != nil {
				return 0, Event{}, err
			}
		}
		return out, Event{Outcome: out, Record: *rec}, nil
	}
	if prev != nil && prev.CRDT == "" {
		return 0, Event{}, fmt.Errorf("%q: %w: plain value stored", rec.Key, ErrCRDTKindConflict)
	}
	return s.applyCRDT(b, rec, r.changes)
}

type source struct {
	rec Record
	cs  ChangeSet
}

// applyCRDT keeps, for each key, the set of signed source records that no other source contains
// (each one verifies on its own), and their union as the merged state. A source that another
// one contains adds nothing; a source that contains others replaces them. The kept set is the
// maximal elements of everything received, so it does not depend on arrival order.
func (s *Store) applyCRDT(b *pebble.Batch, rec *Record, cs ChangeSet) (Outcome, Event, error) {
	srcs, err := readSources(b, rec.Key)
	if err != nil {
		return 0, Event{}, err
	}
	var union ChangeSet
	for i := range srcs {
		if srcs[i].rec.Hash == rec.Hash && srcs[i].rec.Sig == rec.Sig {
			return Duplicate, Event{}, nil
		}
		if union, err = union.Merge(srcs[i].cs); err != nil {
			return 0, Event{}, fmt.Errorf("%q: stored sources: %w", rec.Key, err)
		}
	}
	if _, err := union.Merge(cs); err != nil {
		return 0, Event{}, fmt.Errorf("%q: %w", rec.Key, err)
	}
	for i := range srcs {
		if srcs[i].cs.Contains(cs) && (!cs.Contains(srcs[i].cs) || compareLWW(&srcs[i].rec, rec) > 0) {
			return Subsumed, Event{}, nil
		}
	}
	kept := []source{{rec: *rec, cs: cs}}
	for i := range srcs {
		if cs.Contains(srcs[i].cs) {
			if err := b.Delete(sourceKey(&srcs[i].rec), nil); err != nil {
				return 0, Event{}, err
			}
			continue
		}
		kept = append(kept, srcs[i])
	}
	merged := ChangeSet{}
	head := &kept[0].rec
	for i := range kept {
		merged, _ = merged.Merge(kept[i].cs)
		if compareLWW(&kept[i].rec, head) > 0 {
			head = &kept[i].rec
		}
	}
	mergedJSON := merged.AppendJSON(nil)
	if err := b.Set(sourceKey(rec), AppendRecord(nil, rec), nil); err != nil {
		return 0, Event{}, err
	}
	if err := b.Set(recordKey(rec.Key), AppendRecord(nil, head), nil); err != nil {
		return 0, Event{}, err
	}
	if err := b.Set(crdtKey(rec.Key), mergedJSON, nil); err != nil {
		return 0, Event{}, err
	}
	return Merged, Event{Outcome: Merged, Record: *rec, Merged: mergedJSON}, nil
}

type reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

func readRecord(r reader, key string) (*Record, error) {
	v, closer, err := r.Get(recordKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, corruptErr("get "+key, err)
	}
	defer closer.Close()
	rec, err := ParseRecord(v)
	if err != nil {
		return nil, fmt.Errorf("%w: record %q: %v", ErrCorrupt, key, err)
	}
	return &rec, nil
}

func readSources(r reader, key string) ([]source, error) {
	p := sourcePrefix(key)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, corruptErr("sources "+key, err)
	}
	var out []source
	for ok := it.First(); ok; ok = it.Next() {
		rec, err := ParseRecord(it.Value())
		if err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("%w: source of %q: %v", ErrCorrupt, key, err)
		}
		cs, err := ParseChanges(rec.CRDT, rec.Value)
		if err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("%w: source of %q: %v", ErrCorrupt, key, err)
		}
		out = append(out, source{rec: rec, cs: cs})
	}
	if err := it.Close(); err != nil {
		return nil, corruptErr("sources "+key, err)
	}
	return out, nil
}

// Get returns the record stored under key: the value for a plain key, and for a CRDT key its
// head source, the newest signed change list, which verifies strictly like any record.
func (s *Store) Get(key string) (Record, error) {
	if err := s.acquire(); err != nil {
		return Record{}, err
	}
	defer s.life.RUnlock()
	rec, err := readRecord(s.pdb, key)
	if err != nil {
		return Record{}, err
	}
	if rec == nil {
		return Record{}, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	return *rec, nil
}

// CRDTState is everything the store holds for a CRDT key.
type CRDTState struct {
	Head    Record    // the newest source (what Get returns)
	Sources []Record  // every kept signed change list; each verifies on its own
	Changes ChangeSet // their union: the merged state
}

// Value returns the merged value as JSON (object, array or number).
func (c CRDTState) Value() json.RawMessage { return c.Changes.Value() }

// CRDT returns the merged state of a CRDT key. To replicate it to a strict peer, send Sources:
// the peer merges them into the same state.
func (s *Store) CRDT(key string) (CRDTState, error) {
	if err := s.acquire(); err != nil {
		return CRDTState{}, err
	}
	defer s.life.RUnlock()
	snap := s.pdb.NewSnapshot()
	defer snap.Close()
	head, err := readRecord(snap, key)
	if err != nil {
		return CRDTState{}, err
	}
	if head == nil || head.CRDT == "" {
		return CRDTState{}, fmt.Errorf("%w: no CRDT at %q", ErrNotFound, key)
	}
	srcs, err := readSources(snap, key)
	if err != nil {
		return CRDTState{}, err
	}
	st := CRDTState{Head: *head}
	for i := range srcs {
		st.Sources = append(st.Sources, srcs[i].rec)
		if st.Changes, err = st.Changes.Merge(srcs[i].cs); err != nil {
			return CRDTState{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
	return st, nil
}

// MergedRecord returns what a ToolDb server answers to crdtGet: the head's k, a, n, t, h, s,
// c with v replaced by the merged change list. Like ToolDb's, its hash does not match v when
// more than one source is kept, so it is for ToolDb clients (which merge crdtGet replies without
// verifying); strict peers get Sources from CRDT.
func (s *Store) MergedRecord(key string) (Record, error) {
	head, err := s.Get(key)
	if err != nil {
		return Record{}, err
	}
	if head.CRDT == "" {
		return head, nil
	}
	if err := s.acquire(); err != nil {
		return Record{}, err
	}
	defer s.life.RUnlock()
	v, closer, err := s.pdb.Get(crdtKey(key))
	if err != nil {
		return Record{}, corruptErr("merged "+key, err)
	}
	head.Value = append(json.RawMessage(nil), v...)
	closer.Close()
	return head, nil
}

// Query returns the keys starting with prefix, in byte order (ToolDb's query).
func (s *Store) Query(prefix string) ([]string, error) {
	var keys []string
	err := s.scan(prefix, func(k string, _ []byte) error {
		keys = append(keys, k)
		return nil
	})
	return keys, err
}

// Scan calls fn with every record whose key starts with prefix, in key order, until fn
// returns an error.
func (s *Store) Scan(prefix string, fn func(Record) error) error {
	return s.scan(prefix, func(k string, v []byte) error {
		rec, err := ParseRecord(v)
		if err != nil {
			return fmt.Errorf("%w: record %q: %v", ErrCorrupt, k, err)
		}
		return fn(rec)
	})
}

func (s *Store) scan(prefix string, fn func(string, []byte) error) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.life.RUnlock()
	lo := recordKey(prefix)
	it, err := s.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return corruptErr("scan", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		if err := fn(string(it.Key()[1:]), it.Value()); err != nil {
			_ = it.Close()
			return err
		}
	}
	return corruptErr("scan", it.Close())
}

// SetIdentity durably stores the node's own key material under name.
func (s *Store) SetIdentity(name string, key []byte) error {
	return s.setRaw(nsIdentity+name, key)
}

// Identity returns the key material stored under name, or ErrNotFound.
func (s *Store) Identity(name string) ([]byte, error) { return s.getRaw(nsIdentity + name) }

// SetPeer durably stores a peer's key (or any small descriptor) under its id.
func (s *Store) SetPeer(id string, key []byte) error { return s.setRaw(nsPeer+id, key) }

// DeletePeer removes a peer.
func (s *Store) DeletePeer(id string) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.life.RUnlock()
	if err := s.pdb.Delete([]byte(nsPeer+id), pebble.Sync); err != nil {
		return corruptErr("delete peer", err)
	}
	return nil
}

// Peers returns every stored peer.
func (s *Store) Peers() (map[string][]byte, error) {
	if err := s.acquire(); err != nil {
		return nil, err
	}
	defer s.life.RUnlock()
	lo := []byte(nsPeer)
	it, err := s.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, corruptErr("peers", err)
	}
	out := map[string][]byte{}
	for ok := it.First(); ok; ok = it.Next() {
		out[string(it.Key()[len(lo):])] = append([]byte(nil), it.Value()...)
	}
	return out, corruptErr("peers", it.Close())
}

// SetMeta durably stores a metadata value.
func (s *Store) SetMeta(name string, v []byte) error { return s.setRaw(nsMeta+name, v) }

// Meta returns a metadata value, or ErrNotFound.
func (s *Store) Meta(name string) ([]byte, error) { return s.getRaw(nsMeta + name) }

func (s *Store) setRaw(k string, v []byte) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.life.RUnlock()
	if err := s.pdb.Set([]byte(k), v, pebble.Sync); err != nil {
		return corruptErr("set", err)
	}
	return nil
}

func (s *Store) getRaw(k string) ([]byte, error) {
	if err := s.acquire(); err != nil {
		return nil, err
	}
	defer s.life.RUnlock()
	v, closer, err := s.pdb.Get([]byte(k))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, k[2:])
	}
	if err != nil {
		return nil, corruptErr("get", err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

// acquire guards a direct Pebble access against Close; release with s.life.RUnlock.
func (s *Store) acquire() error {
	s.life.RLock()
	if s.pdbShut {
		s.life.RUnlock()
		return ErrClosed
	}
	return nil
}

// pebbleLogger routes Pebble's logs to slog.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug("pebble", "msg", fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error("pebble", "msg", fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error("pebble fatal", "msg", msg)
	panic("db: pebble: " + msg)
}
