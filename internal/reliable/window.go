package reliable

import "time"

// Receive-window auto-tuning. A window is a limit on what the peer may send
// ahead of the application, not an allocation, but a peer can fill it: a
// receiver whose application stops reading holds a whole window per stream.
// So a window starts at Config.StreamWindow (8 MiB in secure: a 100 ms path
// at 80 MB/s) and grows only for a reader that keeps up: each time a raise
// goes out, if the application read what it read since the last raise so
// fast that at that rate the whole window lasts less than two round trips,
// the window doubles, up to Config.MaxStreamWindow. Two round trips is what
// BBR keeps in flight (its cwnd gain), so below that the window, not the
// path, sets the rate. Measured in the bench's WAN lab at 80 ms RTT: a fixed
// 8 MiB window held one stream to 31–44 MiB/s (30 at 0.5 % loss), 32 MiB to
// 44–49 (44). The idea is quic-go's flow-control auto-tuning.
type windowTuner struct {
	epochStart int64  // when the last raise went out; 0 before the first
	epochRead  uint64 // what the application had read then
}

// grow returns the window to advertise in the raise going out now: window,
// or twice it (at most max) when the reads since the last raise say the
// window binds. read is what the application has read in all; srtt zero
// (no RTT sample yet) never grows it.
func (w *windowTuner) grow(now int64, srtt time.Duration, read, window, max uint64) uint64 {
	since, n := now-w.epochStart, read-w.epochRead
	if w.epochStart != 0 && srtt > 0 && window < max && n > 0 &&
		float64(since)*float64(window) < 2*float64(srtt)*float64(n) {
		window = min(2*window, max)
	}
	w.epochStart, w.epochRead = now, read
	return window
}
