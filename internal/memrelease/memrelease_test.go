package memrelease

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// A burst of notes releases once, Quiet after the last; a note soon after a
// release waits for MinInterval; one note alone releases after Quiet.
func TestReleaseAfterQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var released atomic.Uint64
		r := &releaser{release: func() { released.Add(1) }}
		// after lets d pass and checks how many releases there were by then.
		after := func(d time.Duration, want uint64, when string) {
			t.Helper()
			time.Sleep(d)
			synctest.Wait()
			if n := released.Load(); n != want {
				t.Fatalf("%d releases %s, want %d", n, when, want)
			}
		}
		for range 5 { // a burst: a note every Quiet/2
			r.note()
			after(Quiet/2, 0, "during the burst")
		}
		after(Quiet/2-time.Millisecond, 0, "before Quiet had passed")
		after(2*time.Millisecond, 1, "Quiet after the burst")

		// Again at once (the release was 1 ms ago): the next waits for
		// MinInterval.
		r.note()
		after(MinInterval-2*time.Millisecond, 1, "within MinInterval of the last")
		after(2*time.Millisecond, 2, "MinInterval after the last")

		// Long after: one note alone, Quiet later.
		time.Sleep(MinInterval)
		r.note()
		after(Quiet+time.Millisecond, 3, "Quiet after a lone note")
		r.timer.Stop()
	})
}

// What a sync.Pool holds is freed by a release, not kept in the pool's
// victim cache until some later collection.
func TestReleaseEmptiesPools(t *testing.T) {
	var pool sync.Pool
	freed := make(chan struct{})
	b := new([16 << 10]byte)
	runtime.AddCleanup(b, func(ch chan struct{}) { close(ch) }, freed)
	pool.Put(b)
	b = nil
	release()
	select {
	case <-freed:
	case <-time.After(5 * time.Second):
		t.Fatal("a pooled buffer outlived the release")
	}
	runtime.KeepAlive(&pool)
}
