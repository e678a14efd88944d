package memrelease

import (
	"testing"
	"testing/synctest"
	"time"
)

// A burst of notes releases once, Quiet after the last; a note soon after a
// release waits for MinInterval; one note alone releases after Quiet.
func TestReleaseAfterQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &releaser{release: func() {}}
		for range 5 { // a burst: a note every Quiet/2
			r.note()
			time.Sleep(Quiet / 2)
		}
		if n := r.count.Load(); n != 0 {
			t.Fatalf("%d releases during the burst", n)
		}
		time.Sleep(Quiet/2 - time.Millisecond)
		synctest.Wait()
		if n := r.count.Load(); n != 0 {
			t.Fatalf("released %d times before Quiet had passed", n)
		}
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		if n := r.count.Load(); n != 1 {
			t.Fatalf("%d releases Quiet after the burst, want 1", n)
		}

		// Again at once (the release was 1 ms ago): the next waits for
		// MinInterval.
		released := time.Now().Add(-time.Millisecond)
		r.note()
		time.Sleep(MinInterval - 2*time.Millisecond)
		synctest.Wait()
		if n := r.count.Load(); n != 1 {
			t.Fatalf("%d releases within MinInterval of the last, want 1", n)
		}
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		if n := r.count.Load(); n != 2 {
			t.Fatalf("%d releases %v after the first, want 2", n, time.Since(released))
		}

		// Long after: one note alone, Quiet later.
		time.Sleep(MinInterval)
		r.note()
		time.Sleep(Quiet + time.Millisecond)
		synctest.Wait()
		if n := r.count.Load(); n != 3 {
			t.Fatalf("%d releases, want 3", n)
		}
		r.timer.Stop()
	})
}
