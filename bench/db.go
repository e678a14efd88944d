package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swarmdb/swarmdb/db"
)

// dbSizes are the approximate value sizes written, in bytes.
var dbSizes = []int{64, 1024}

// dbWorkers is how many writes (and reads) are in flight on each side.
const dbWorkers = 64

// runDB alternates ToolDb (a fresh Node.js process per run) and swarmdb
// (package db in this process, a fresh store per run) on the same number of
// records of the same value size.
func runDB(ctx context.Context, o options) (*PartResult, error) {
	pr := &PartResult{Setup: []string{
		fmt.Sprintf("%d records per run, distinct keys, %d writes in flight on each side, records signed before the clock starts; reads: %d lookups by key of those records, %d in flight.",
			o.records, dbWorkers, 4*o.records, dbWorkers),
		"swarmdb: package db (Pebble), Store.Put = verify hash + ECDSA P-256 signature + LWW + write; acknowledged only after fsync (group commit). Reads: Store.Get, which parses the record.",
		"ToolDb 2.6.6: its server-side put path in Node.js — verifyMessage (signature; hash only at pow>0, pow is 0 by default), read the stored record for LWW, write JSON to the @tool-db/leveldb-store adapter (leveldown, the default sync:false: not fsynced). Reads: store.get + JSON.parse.",
		"Both stores live on the same file system (bench/results/tmp). swarmdb uses both cores (goroutines); ToolDb runs on Node's single JS thread plus leveldown's worker threads.",
	}}
	for _, size := range dbSizes {
		w := Comparison{Name: fmt.Sprintf("verified writes/s, %d B values", size), Key: fmt.Sprintf("db-writes-%d", size), Unit: "writes/s", Higher: true, Other: "ToolDb"}
		r := Comparison{Name: fmt.Sprintf("reads/s, %d B values", size), Key: fmt.Sprintf("db-reads-%d", size), Unit: "reads/s", Higher: true, Other: "ToolDb"}
		var recBytes [2]int
		for rep := 0; rep < o.reps; rep++ {
			if err := ctx.Err(); err != nil {
				return pr, err
			}
			tw, tr, tb, err := toolDBRun(ctx, o, size)
			if err != nil {
				return pr, fmt.Errorf("tooldb: %w", err)
			}
			w.Them.Add(tw)
			r.Them.Add(tr)
			gw, gr, gb, err := swarmDBRun(ctx, o, size)
			if err != nil {
				return pr, fmt.Errorf("swarmdb: %w", err)
			}
			w.Swarm.Add(gw)
			r.Swarm.Add(gr)
			recBytes = [2]int{gb, tb}
			o.log.Info("db run", "size", size, "rep", rep, "swarmdb_writes", num(gw), "tooldb_writes", num(tw), "swarmdb_reads", num(gr), "tooldb_reads", num(tr))
		}
		w.Note = fmt.Sprintf("record JSON: swarmdb %d B, ToolDb %d B", recBytes[0], recBytes[1])
		pr.Comparisons = append(pr.Comparisons, w, r)
	}
	return pr, nil
}

func toolDBRun(ctx context.Context, o options, size int) (writes, reads float64, recBytes int, err error) {
	cmd := exec.CommandContext(ctx, "node", filepath.Join(o.js, "bench.js"), "tooldb", fmt.Sprint(o.records), fmt.Sprint(size))
	cmd.Dir = o.js
	cmd.Env = append(os.Environ(), "BENCH_TMP="+o.tmp)
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return 0, 0, 0, err
	}
	var res struct {
		Bytes        int     `json:"bytes"`
		WritesPerSec float64 `json:"writesPerSec"`
		ReadsPerSec  float64 `json:"readsPerSec"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, 0, 0, fmt.Errorf("%w: %s", err, out)
	}
	return res.WritesPerSec, res.ReadsPerSec, res.Bytes, nil
}

// swarmDBRun signs o.records records with values like the JS side's
// ({"i":N,"msg":"xxx..."}), writes them durably with dbWorkers writers into
// a fresh store and then reads 4x as many by key.
func swarmDBRun(ctx context.Context, o options, size int) (writes, reads float64, recBytes int, err error) {
	u, err := db.NewUser(nil)
	if err != nil {
		return 0, 0, 0, err
	}
	pad := strings.Repeat("x", max(0, size-20))
	recs := make([]db.Record, o.records)
	now := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, runtime.GOMAXPROCS(0))
	for w := range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(recs); i += runtime.GOMAXPROCS(0) {
				r, err := u.NewRecord(fmt.Sprintf("bench/%d", i), fmt.Appendf(nil, `{"i":%d,"msg":%q}`, i, pad), "", now, 0)
				if err != nil {
					errs <- err
					return
				}
				recs[i] = r
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, 0, err
	}
	dir, err := os.MkdirTemp(o.tmp, "swarmdb-db-")
	if err != nil {
		return 0, 0, 0, err
	}
	defer os.RemoveAll(dir)
	s, err := db.Open(db.Config{Dir: dir})
	if err != nil {
		return 0, 0, 0, err
	}
	defer s.Close()

	var next atomic.Int64
	var failed atomic.Pointer[error]
	start := time.Now()
	parallel(dbWorkers, func() {
		for {
			i := next.Add(1) - 1
			if i >= int64(len(recs)) || failed.Load() != nil {
				return
			}
			if _, err := s.Put(ctx, recs[i]); err != nil {
				failed.Store(&err)
				return
			}
		}
	})
	writes = float64(len(recs)) / time.Since(start).Seconds()
	if e := failed.Load(); e != nil {
		return 0, 0, 0, *e
	}

	total := int64(4 * len(recs))
	next.Store(0)
	start = time.Now()
	parallel(dbWorkers, func() {
		for {
			i := next.Add(1) - 1
			if i >= total || failed.Load() != nil {
				return
			}
			k := recs[i%int64(len(recs))].Key
			r, err := s.Get(k)
			if err == nil && r.Key != k {
				err = fmt.Errorf("read %q, got %q", k, r.Key)
			}
			if err != nil {
				failed.Store(&err)
				return
			}
		}
	})
	reads = float64(total) / time.Since(start).Seconds()
	if e := failed.Load(); e != nil {
		return 0, 0, 0, *e
	}
	return writes, reads, len(db.AppendRecord(nil, &recs[0])), nil
}

// parallel runs f on n goroutines and waits for all.
func parallel(n int, f func()) {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	wg.Wait()
}
