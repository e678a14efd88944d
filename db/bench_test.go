package db

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchRecords signs n records for distinct keys (outside the timer).
func benchRecords(b *testing.B, n int) []Record {
	b.Helper()
	u := mustUser(b)
	recs := make([]Record, n)
	now := time.Now()
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				r, err := u.NewRecord(fmt.Sprintf("bench/%d", i), []byte(fmt.Sprintf(`{"i":%d,"msg":"hello world"}`, i)), "", now, 0)
				if err != nil {
					panic(err)
				}
				recs[i] = r
			}
		}()
	}
	wg.Wait()
	return recs
}

// putAll writes recs with `writers` concurrent callers into a store on the real file system,
// each Put verified (hash + signature) and acknowledged only after fsync.
func putAll(b *testing.B, s *Store, recs []Record, writers int) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(recs)) {
					return
				}
				if _, err := s.Put(context.Background(), recs[i]); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// BenchmarkPutDurable: verified, durable writes per second (64 concurrent writers sharing
// fsyncs through the group-commit writer).
func BenchmarkPutDurable(b *testing.B) {
	recs := benchRecords(b, b.N)
	s, err := Open(Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ResetTimer()
	d := putAll(b, s, recs, 64)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/d.Seconds(), "writes/s")
	b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "cores")
	b.ReportMetric(float64(b.N)/float64(max(s.Stats().Commits, 1)), "writes/fsync")
}

// BenchmarkGet: reads per second of records by key.
func BenchmarkGet(b *testing.B) {
	const n = 10000
	recs := benchRecords(b, n)
	s, err := Open(Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	putAll(b, s, recs, 64)
	var ctr atomic.Int64
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := ctr.Add(1) % n
			if _, err := s.Get(recs[i].Key); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reads/s")
	b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "cores")
}

// BenchmarkSideBySideToolDb runs ToolDb 2.6.6's server-side put path (Node, leveldb store,
// 64 puts in flight, not fsynced) and ours (durable) on the same number of records in the same
// run, and reports the ratio. Needs node and `(cd db/testdata/tooldb && npm ci)`.
func BenchmarkSideBySideToolDb(b *testing.B) {
	const n = 5000
	script := nodeScriptB(b)
	for i := 0; i < b.N; i++ {
		out, err := exec.Command("node", script, "bench", fmt.Sprint(n)).Output()
		if err != nil {
			b.Fatalf("node bench: %v %s", err, out)
		}
		var js struct {
			PerSec float64 `json:"perSec"`
		}
		if err := json.Unmarshal(out, &js); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
		recs := benchRecords(b, n)
		s, err := Open(Config{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		d := putAll(b, s, recs, 64)
		_ = s.Close()
		goRate := float64(n) / d.Seconds()
		b.ReportMetric(js.PerSec, "tooldb-writes/s")
		b.ReportMetric(goRate, "go-writes/s")
		b.ReportMetric(goRate/js.PerSec, "x-tooldb")
		b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "cores")
	}
}

func nodeScriptB(b *testing.B) string {
	script := nodeScriptPath()
	if script == "" {
		b.Skip("needs node and the pinned tool-db: run `(cd db/testdata/tooldb && npm ci)`")
	}
	return script
}
