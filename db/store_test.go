package db

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	testutil.VerifyNoLeaks(m)
}

var testNow = time.UnixMilli(1_800_000_000_000)

func openMem(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.FS == nil {
		cfg.FS = vfs.NewMem()
	}
	if cfg.Dir == "" {
		cfg.Dir = "db"
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return testNow }
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func mustUser(t testing.TB) *User {
	t.Helper()
	u, err := NewUser(nil)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func mustRecord(t testing.TB, u *User, key, v, crdt string, at time.Time) Record {
	t.Helper()
	r, err := u.NewRecord(key, []byte(v), crdt, at, 0)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// dump returns every record and CRDT state in the store, as text, for comparing stores.
func dump(t *testing.T, s *Store) string {
	t.Helper()
	var b strings.Builder
	err := s.Scan("", func(r Record) error {
		b.Write(AppendRecord(nil, &r))
		b.WriteByte('\n')
		if r.CRDT != "" {
			st, err := s.CRDT(r.Key)
			if err != nil {
				return err
			}
			b.Write(st.Changes.AppendJSON(nil))
			for _, src := range st.Sources {
				b.WriteString(" " + src.Hash)
			}
			b.WriteByte('\n')
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestPutGetQuery(t *testing.T) {
	s := openMem(t, Config{})
	u := mustUser(t)
	ctx := context.Background()
	for _, k := range []string{"chat-1", "chat-2", "other"} {
		if out, err := s.Put(ctx, mustRecord(t, u, k, `{"k":"`+k+`"}`, "", testNow)); err != nil || out != Stored {
			t.Fatalf("put %s: %v %v", k, out, err)
		}
	}
	got, err := s.Get("chat-2")
	if err != nil || string(got.Value) != `{"k":"chat-2"}` {
		t.Fatalf("get: %s %v", got.Value, err)
	}
	if err := (&Verifier{}).Verify(&got, nil, testNow); err != nil {
		t.Fatalf("stored record no longer verifies: %v", err)
	}
	keys, err := s.Query("chat-")
	if err != nil || !slices.Equal(keys, []string{"chat-1", "chat-2"}) {
		t.Fatalf("query: %v %v", keys, err)
	}
	if _, err := s.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	// Identity, peers and metadata.
	if err := s.SetIdentity("node", []byte("secret")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPeer("p1", []byte("k1")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPeer("p2", []byte("k2")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePeer("p1"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMeta("topic", []byte("t")); err != nil {
		t.Fatal(err)
	}
	id, err := s.Identity("node")
	peers, err2 := s.Peers()
	meta, err3 := s.Meta("topic")
	if err != nil || err2 != nil || err3 != nil || string(id) != "secret" || len(peers) != 1 || string(peers["p2"]) != "k2" || string(meta) != "t" {
		t.Fatalf("identity %q %v, peers %v %v, meta %q %v", id, err, peers, err2, meta, err3)
	}
	if _, err := s.Meta("none"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if keys, _ := s.Query(""); len(keys) != 3 {
		t.Fatalf("metadata leaked into records: %v", keys)
	}
}

func TestLWWRules(t *testing.T) {
	s := openMem(t, Config{})
	u, v := mustUser(t), mustUser(t)
	ctx := context.Background()
	old := mustRecord(t, u, "k", `"old"`, "", testNow.Add(-time.Second))
	newer := mustRecord(t, v, "k", `"new"`, "", testNow)
	for _, c := range []struct {
		r    Record
		want Outcome
	}{{newer, Stored}, {old, Stale}, {newer, Duplicate}} {
		if out, err := s.Put(ctx, c.r); err != nil || out != c.want {
			t.Fatalf("got %v %v, want %v", out, err, c.want)
		}
	}
	// Frozen key: the older record of another author wins; the owner may update.
	f1 := mustRecord(t, u, "==alice", `1`, "", testNow.Add(-time.Minute))
	f2 := mustRecord(t, v, "==alice", `2`, "", testNow)
	f0 := mustRecord(t, v, "==alice", `0`, "", testNow.Add(-2*time.Minute))
	f3 := mustRecord(t, u, "==alice", `3`, "", testNow)
	if out, err := s.Put(ctx, f1); err != nil || out != Stored {
		t.Fatal(out, err)
	}
	if _, err := s.Put(ctx, f2); !errors.Is(err, ErrFrozenKey) {
		t.Fatalf("newer claim of another author: %v", err)
	}
	if out, err := s.Put(ctx, f0); err != nil || out != Stored {
		t.Fatalf("older claim: %v %v", out, err)
	}
	if _, err := s.Put(ctx, f3); !errors.Is(err, ErrFrozenKey) {
		t.Fatalf("former owner after losing: %v", err)
	}
	if got, _ := s.Get("==alice"); got.Hash != f0.Hash {
		t.Fatal("frozen key not owned by the oldest claim")
	}
	// A plain value and a CRDT do not mix on one key.
	if _, err := s.Put(ctx, mustRecord(t, u, "k", `[]`, TypeMap, testNow)); !errors.Is(err, ErrCRDTKindConflict) {
		t.Fatalf("CRDT over plain: %v", err)
	}
}

// TestLWWConvergence: stores that receive the same records in any order end identical,
// including equal timestamps (ToolDb keeps whichever arrived first) and frozen keys.
func TestLWWConvergence(t *testing.T) {
	users := []*User{mustUser(t), mustUser(t), mustUser(t)}
	rng := rand.New(rand.NewPCG(1, 2))
	var recs []Record
	for i := 0; i < 60; i++ {
		u := users[rng.IntN(len(users))]
		key := []string{"a", "b"}[rng.IntN(2)]
		at := testNow.Add(-time.Duration(rng.IntN(4)) * time.Second) // many equal timestamps
		recs = append(recs, mustRecord(t, u, key, fmt.Sprintf(`{"i":%d}`, i), "", at))
	}
	// Frozen keys: one claim per author (an owner's later updates converge only if they arrive
	// after the claim that made it owner; see the package README).
	for _, key := range []string{"==name", "==other"} {
		for i, u := range users {
			at := testNow.Add(-time.Duration(rng.IntN(2)) * time.Second)
			recs = append(recs, mustRecord(t, u, key, fmt.Sprint(i), "", at))
		}
	}
	// CRDT records on their own keys join in.
	for i := 0; i < 20; i++ {
		u := users[rng.IntN(len(users))]
		recs = append(recs, mustRecord(t, u, "counter", randomCounter(rng, u.Address(), 3), TypeCounter, testNow.Add(-time.Duration(rng.IntN(3))*time.Second)))
		recs = append(recs, mustRecord(t, u, "map", randomMap(rng, []string{users[0].Address(), users[1].Address()}, 4), TypeMap, testNow))
	}
	var want string
	for round := 0; round < 8; round++ {
		s := openMem(t, Config{})
		order := rng.Perm(len(recs))
		var wg sync.WaitGroup
		// Half the rounds put concurrently (group commits), half sequentially.
		for _, i := range order {
			if round%2 == 0 {
				if _, err := s.Put(context.Background(), recs[i]); err != nil && !errors.Is(err, ErrFrozenKey) {
					t.Fatal(err)
				}
				continue
			}
			wg.Add(1)
			go func(r Record) {
				defer wg.Done()
				if _, err := s.Put(context.Background(), r); err != nil && !errors.Is(err, ErrFrozenKey) {
					t.Error(err)
				}
			}(recs[i])
		}
		wg.Wait()
		got := dump(t, s)
		if round == 0 {
			want = got
		} else if got != want {
			t.Fatalf("round %d diverged:\n%s\nwant\n%s", round, got, want)
		}
		_ = s.Close()
	}
}

func TestCRDTStoreKeepsVerifiableSources(t *testing.T) {
	v := loadVectors(t)
	ctx := context.Background()
	for _, tc := range v.CRDTs {
		t.Run(tc.Name, func(t *testing.T) {
			var recs []Record
			for _, j := range tc.JSONs {
				r, err := ParseRecord([]byte(j))
				if err != nil {
					t.Fatal(err)
				}
				recs = append(recs, r)
			}
			s := openMem(t, Config{Now: func() time.Time { return vectorNow(t, recs...) }})
			w := s.Watch(tc.Name)
			defer w.Close()
			for _, r := range recs {
				if out, err := s.Put(ctx, r); err != nil || out != Merged {
					t.Fatalf("put: %v %v", out, err)
				}
			}
			if out, err := s.Put(ctx, recs[0]); err != nil || out != Duplicate {
				t.Fatalf("again: %v %v", out, err)
			}
			st, err := s.CRDT(tc.Name)
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, st.Value(), tc.Merged) {
				t.Fatalf("merged value %s, ToolDb %s", st.Value(), tc.Merged)
			}
			// Everything served to strict peers still verifies.
			vf := Verifier{}
			head, _ := s.Get(tc.Name)
			for _, r := range append(st.Sources, head) {
				if err := vf.Verify(&r, nil, vectorNow(t, recs...)); err != nil {
					t.Fatalf("served record fails verification: %v", err)
				}
			}
			// A second store fed only the sources ends in the same state.
			s2 := openMem(t, Config{Now: s.cfg.Now})
			for _, r := range st.Sources {
				if _, err := s2.Put(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			if dump(t, s2) != dump(t, s) {
				t.Fatal("replica from sources differs")
			}
			mr, err := s.MergedRecord(tc.Name)
			if err != nil || !jsonEqual(t, mr.Value, st.Changes.AppendJSON(nil)) {
				t.Fatalf("merged record %s %v", mr.Value, err)
			}
			for i := range recs {
				ev, err := w.Next(ctx)
				if err != nil || ev.Record.Hash != recs[i].Hash || ev.Outcome != Merged {
					t.Fatalf("event %d: %+v %v", i, ev, err)
				}
			}
		})
	}
}

func TestCounterMergesAsCounter(t *testing.T) {
	// ToolDb's server loses one of two ADD(5) at i:0 from different authors; we keep both, even
	// for records labelled LIST as ToolDb sends them.
	s := openMem(t, Config{})
	u, v := mustUser(t), mustUser(t)
	ctx := context.Background()
	for _, w := range []*User{u, v} {
		r := mustRecord(t, w, "votes", `[{"t":"ADD","v":5,"a":"`+w.Address()+`","i":0}]`, TypeList, testNow)
		if _, err := s.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.CRDT("votes")
	if err != nil || string(st.Value()) != "10" || st.Changes.Kind != KindCounter {
		t.Fatalf("counter = %s (%v), %v", st.Value(), st.Changes.Kind, err)
	}
	// A real list on the same key is a kind conflict.
	l := mustRecord(t, u, "votes", `[{"t":"INS","v":1,"i":"x-00000000"}]`, TypeList, testNow)
	if _, err := s.Put(ctx, l); !errors.Is(err, ErrCRDTKindConflict) {
		t.Fatalf("list on counter: %v", err)
	}
}

func TestWatchOrderAndPrefix(t *testing.T) {
	s := openMem(t, Config{})
	u := mustUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wk := s.Watch("room/1")
	wp := s.WatchPrefix("room/")
	var want []string
	for i := 0; i < 50; i++ {
		key := fmt.Sprintf("room/%d", i%3)
		r := mustRecord(t, u, key, fmt.Sprint(i), "", testNow.Add(time.Duration(i)*time.Millisecond))
		if _, err := s.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
		want = append(want, r.Hash)
		_, _ = s.Put(ctx, r) // duplicates are not events
	}
	for i, h := range want {
		ev, err := wp.Next(ctx)
		if err != nil || ev.Record.Hash != h {
			t.Fatalf("prefix event %d: %v", i, err)
		}
		if i%3 == 1 {
			ev, err := wk.Next(ctx)
			if err != nil || ev.Record.Hash != h {
				t.Fatalf("key event %d: %v", i, err)
			}
		}
	}
	short, c2 := context.WithTimeout(ctx, 20*time.Millisecond)
	defer c2()
	if _, err := wp.Next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("extra event: %v", err)
	}
	wk.Close()
	if _, err := wk.Next(ctx); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	_ = s.Close()
	if _, err := wp.Next(ctx); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
}

func TestWatchOverflow(t *testing.T) {
	s := openMem(t, Config{WatchQueue: 3})
	u := mustUser(t)
	w := s.Watch("k")
	for i := 0; i < 5; i++ {
		_, _ = s.Put(context.Background(), mustRecord(t, u, "k", fmt.Sprint(i), "", testNow.Add(time.Duration(i)*time.Millisecond)))
	}
	for {
		if _, err := w.Next(context.Background()); err != nil {
			if !errors.Is(err, ErrWatchOverflow) {
				t.Fatal(err)
			}
			return
		}
	}
}

func TestHooksOnlyRejectMore(t *testing.T) {
	calls := 0
	s := openMem(t, Config{Verifier: Verifier{Hooks: []Hook{{
		Prefix: "posts/",
		Check: func(rec, prev *Record) error {
			calls++
			if prev != nil && prev.Author != rec.Author {
				return errors.New("only the first author may edit")
			}
			return nil
		},
	}, {
		Prefix: "open/",
		Check:  func(*Record, *Record) error { return nil }, // "accept everything"
	}}}})
	u, v := mustUser(t), mustUser(t)
	ctx := context.Background()
	if _, err := s.Put(ctx, mustRecord(t, u, "posts/1", `1`, "", testNow)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, mustRecord(t, v, "posts/1", `2`, "", testNow.Add(time.Millisecond))); !errors.Is(err, ErrRejectedByHook) {
		t.Fatalf("hook did not reject: %v", err)
	}
	// A hook that accepts cannot rescue a bad signature (ToolDb's wrapper would).
	bad := mustRecord(t, u, "open/1", `1`, "", testNow)
	bad.Sig = strings.Repeat("0", 128)
	if _, err := s.Put(ctx, bad); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("hook accepted a bad signature: %v", err)
	}
	if calls != 2 {
		t.Fatalf("hook ran %d times", calls)
	}
}

func TestGroupCommitSharesFsync(t *testing.T) {
	const n = 200
	// A barrier in a hook holds every writer until all n have been
	// verified, then releases them together, so the test measures grouping
	// rather than how the scheduler happened to interleave verification.
	var verified atomic.Int32
	all := make(chan struct{})
	barrier := Hook{Prefix: "k", Check: func(rec, prev *Record) error {
		if verified.Add(1) == n {
			close(all)
		}
		<-all
		return nil
	}}
	// Each fsync takes a millisecond, as on a real disk: puts that arrive
	// while one commits must share the next, however the scheduler runs.
	s := openMem(t, Config{FS: slowSyncFS{vfs.NewMem()}, Verifier: Verifier{Hooks: []Hook{barrier}}})
	u := mustUser(t)
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = mustRecord(t, u, fmt.Sprint("k", i), "1", "", testNow)
	}
	var wg sync.WaitGroup
	for i := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Put(context.Background(), recs[i]); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	if st.Accepted != n || st.Commits > n/2 {
		t.Fatalf("stats %+v: want %d accepted in at most %d commits", st, n, n/2)
	}
	t.Logf("%d writes in %d commits", n, st.Commits)
}

func TestCloseIdempotentAndRefuses(t *testing.T) {
	s := openMem(t, Config{})
	u := mustUser(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(context.Background(), mustRecord(t, u, "k", "1", "", testNow)); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	if _, err := s.Get("k"); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
}

func TestFormatVersion(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, Config{FS: fs})
	u := mustUser(t)
	if _, err := s.Put(context.Background(), mustRecord(t, u, "k", "1", "", testNow)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	setFormat := func(v []byte) {
		pdb, err := pebble.Open("db", &pebble.Options{FS: fs, Logger: pebbleLogger{discardLogger()}})
		if err != nil {
			t.Fatal(err)
		}
		if v == nil {
			_ = pdb.Delete(formatKey, pebble.Sync)
		} else {
			_ = pdb.Set(formatKey, v, pebble.Sync)
		}
		_ = pdb.Close()
	}
	for _, c := range []struct {
		marker []byte
		want   error
	}{
		{encodeFormat(formatVersion + 1), ErrFormatTooNew},
		{encodeFormat(0), ErrFormatTooOld},
		{[]byte("garbage"), ErrCorrupt},
		{nil, ErrCorrupt}, // data but no marker
	} {
		setFormat(c.marker)
		if _, err := Open(Config{FS: fs, Dir: "db"}); !errors.Is(err, c.want) {
			t.Fatalf("marker %q: %v, want %v", c.marker, err, c.want)
		}
	}
	setFormat(encodeFormat(formatVersion))
	s2 := openMem(t, Config{FS: fs})
	if _, err := s2.Get("k"); err != nil {
		t.Fatalf("data lost across reopen: %v", err)
	}
}

func TestCorruptStoreIsReported(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	u := mustUser(t)
	for i := 0; i < 100; i++ {
		if _, err := s.Put(context.Background(), mustRecord(t, u, fmt.Sprint("k", i), `"`+strings.Repeat("x", 200)+`"`, "", testNow)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.pdb.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	ssts, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(ssts) == 0 {
		t.Fatal("no sstable")
	}
	b, _ := os.ReadFile(ssts[0])
	for i := 100; i < len(b)/2; i += 7 {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(ssts[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s2, err := Open(Config{Dir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err == nil {
		_, err = s2.Query("")
		_ = s2.Close()
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corruption not reported as ErrCorrupt: %v", err)
	}
	// One readable line, naming the file: no "<corruption detail carrier>" line from
	// Pebble's joined error, no stack traces from cockroachdb/errors in the log.
	if msg := err.Error(); strings.Contains(msg, "\n") || strings.Contains(msg, "carrier") || !strings.Contains(msg, ".sst") {
		t.Fatalf("error message %q", msg)
	}
	if strings.Contains(logs.String(), "stack trace") || strings.Contains(logs.String(), "\\n") {
		t.Fatalf("corruption log:\n%s", logs.String())
	}
	if after, _ := os.ReadFile(ssts[0]); len(after) != len(b) {
		t.Fatal("corrupt store was modified")
	}
	// A damaged MANIFEST is reported at Open, and nothing is reset.
	mans, _ := filepath.Glob(filepath.Join(dir, "MANIFEST-*"))
	for _, m := range mans {
		_ = os.WriteFile(m, []byte("not a manifest at all, not at all"), 0o644)
	}
	if _, err := Open(Config{Dir: dir}); err == nil {
		t.Fatal("open of a store with a damaged MANIFEST succeeded")
	}
	if again, _ := filepath.Glob(filepath.Join(dir, "*.sst")); len(again) != len(ssts) {
		t.Fatal("store was reset")
	}
}

// slowSyncFS is an in-memory file system whose syncs take a millisecond.
type slowSyncFS struct{ vfs.FS }

func (fs slowSyncFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, cat)
	if err != nil {
		return nil, err
	}
	return slowSyncFile{f}, nil
}

func (fs slowSyncFS) ReuseForWrite(oldname, newname string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, cat)
	if err != nil {
		return nil, err
	}
	return slowSyncFile{f}, nil
}

type slowSyncFile struct{ vfs.File }

func (f slowSyncFile) Sync() error     { time.Sleep(time.Millisecond); return f.File.Sync() }
func (f slowSyncFile) SyncData() error { time.Sleep(time.Millisecond); return f.File.SyncData() }
func (f slowSyncFile) SyncTo(n int64) (bool, error) {
	time.Sleep(time.Millisecond)
	return f.File.SyncTo(n)
}
