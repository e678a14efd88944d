package secure

// Replay protection for sealed datagrams, after RFC 6479 (the ring-of-words bitmap that
// WireGuard and nebula use): the window remembers which of the last ReplayWindowSize
// counters have been accepted; anything older is rejected outright.
//
// Pure and not goroutine-safe: the datagram read loop owns it.

const (
	replayWordBits  = 64
	replayRingWords = 32 // 2048-bit ring
	// ReplayWindowSize: a datagram is accepted only if its counter is new and
	// max−counter < ReplayWindowSize, max being the highest counter accepted so far. The
	// ring holds 2048 bits; one word is always being recycled, so 1984 counters are
	// tracked. At 100 MB/s of 1200-byte datagrams that is
	// about 24 ms of reordering, far beyond what real paths do.
	ReplayWindowSize = (replayRingWords - 1) * replayWordBits
)

type replayWindow struct {
	next uint64 // highest accepted counter + 1; 0 before the first
	ring [replayRingWords]uint64
}

// check reports whether counter may be accepted: nil, ErrReplayed or ErrTooOld. It does
// not change the window, so it can run before the (costly) authentication.
func (w *replayWindow) check(counter uint64) error {
	if counter >= w.next {
		return nil
	}
	if w.next-counter > ReplayWindowSize {
		return ErrTooOld
	}
	word, bit := (counter/replayWordBits)%replayRingWords, counter%replayWordBits
	if w.ring[word]&(1<<bit) != 0 {
		return ErrReplayed
	}
	return nil
}

// accept records counter as seen. Call it only after check passed and the datagram
// authenticated, so forged datagrams cannot move the window.
func (w *replayWindow) accept(counter uint64) {
	if counter >= w.next {
		// Slide forward: recycle the words after the old top's word, up to counter's.
		if w.next > 0 {
			old, top := (w.next-1)/replayWordBits, counter/replayWordBits
			if top-old >= replayRingWords {
				clear(w.ring[:])
			} else {
				for i := old + 1; i <= top; i++ {
					w.ring[i%replayRingWords] = 0
				}
			}
		}
		w.next = counter + 1
	}
	w.ring[(counter/replayWordBits)%replayRingWords] |= 1 << (counter % replayWordBits)
}
