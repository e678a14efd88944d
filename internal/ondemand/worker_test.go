package ondemand

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWorkerSeesEveryItem: producers queue items and kick from many
// goroutines; Run drains the queue. Every item must be taken, Run must never
// run twice at once, and after Wait no goroutine of the worker is left.
func TestWorkerSeesEveryItem(t *testing.T) {
	const producers, items = 8, 2000
	var (
		mu      sync.Mutex
		queue   []int
		taken   atomic.Int64
		inRun   atomic.Int32
		overlap atomic.Bool
	)
	w := &Worker{Run: func() {
		if inRun.Add(1) != 1 {
			overlap.Store(true)
		}
		defer inRun.Add(-1)
		for {
			mu.Lock()
			if len(queue) == 0 {
				mu.Unlock()
				return
			}
			queue = queue[1:]
			mu.Unlock()
			taken.Add(1)
		}
	}}
	before := runtime.NumGoroutine()
	var wg sync.WaitGroup
	for range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range items {
				mu.Lock()
				queue = append(queue, i)
				mu.Unlock()
				w.Kick()
				if i%100 == 0 {
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
	w.Wait()
	if got := taken.Load(); got != producers*items {
		t.Fatalf("Run took %d items, want %d", got, producers*items)
	}
	if overlap.Load() {
		t.Error("Run ran twice at once")
	}
	// The worker's goroutine has returned from loop; give it the moment it
	// needs to be gone from the count.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Wait, %d before: the worker's goroutine is still there", n, before)
	}
}

// TestWorkerRunsAfterKick: a Kick while Run is busy makes Run run again, so
// work queued after Run last looked is not left behind.
func TestWorkerRunsAfterKick(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	w := &Worker{Run: func() {
		if calls.Add(1) == 1 {
			close(entered)
			<-release
		}
	}}
	w.Kick()
	<-entered
	w.Kick() // while the first call is busy
	w.Kick() // coalesced with the one before
	close(release)
	w.Wait()
	if got := calls.Load(); got != 2 {
		t.Errorf("Run called %d times, want 2 (the first, then once for the kicks during it)", got)
	}
}

// TestWorkerIdleWaitReturns: Wait on a worker never kicked returns at once.
func TestWorkerIdleWaitReturns(t *testing.T) {
	w := &Worker{Run: func() {}}
	w.Wait()
	w.Kick()
	w.Wait()
}
