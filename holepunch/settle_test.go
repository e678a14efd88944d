package holepunch

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"
)

// A session that started on an early path takes ICE's choice when it comes
// within settleWait, and keeps its early path when it does not (the answers
// to the nomination were lost) or when its context ends.
func TestSettleOn(t *testing.T) {
	early := pathChoice{PathDirect, netip.MustParseAddrPort("198.51.100.7:4000")}
	nominated := pathChoice{PathDirect, netip.MustParseAddrPort("198.51.100.7:4001")}
	log := slog.New(slog.DiscardHandler)
	synctest.Test(t, func(t *testing.T) {
		final := make(chan pathChoice, 1)
		go func() { time.Sleep(settleWait / 2); final <- nominated }()
		start := time.Now()
		if got := settleOn(t.Context(), final, early, log); got != nominated || time.Since(start) != settleWait/2 {
			t.Errorf("ICE nominated after %v: settled on %v after %v, want %v then", settleWait/2, got, time.Since(start), nominated)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if got := settleOn(t.Context(), make(chan pathChoice), early, log); got != early || time.Since(start) != settleWait {
			t.Errorf("no nomination: settled on %v after %v, want %v after %v", got, time.Since(start), early, settleWait)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start := time.Now()
		if got := settleOn(ctx, make(chan pathChoice), early, log); got != early || time.Since(start) != time.Second {
			t.Errorf("context ended at 1 s: settled on %v after %v, want %v at once", got, time.Since(start), early)
		}
	})
}
