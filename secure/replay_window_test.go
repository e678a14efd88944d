package secure

import (
	"encoding/binary"
	"errors"
	"testing"
)

func TestReplayWindow(t *testing.T) {
	var w replayWindow
	step := func(c uint64, want error) {
		t.Helper()
		err := w.check(c)
		if !errors.Is(err, want) && !(err == nil && want == nil) {
			t.Fatalf("check(%d) = %v, want %v", c, err, want)
		}
		if err == nil {
			w.accept(c)
		}
	}
	step(0, nil)
	step(0, ErrReplayed)
	step(1, nil)
	step(5, nil)
	step(3, nil) // reordered, inside the window
	step(3, ErrReplayed)
	step(5, ErrReplayed)
	step(4, nil)
	step(5000, nil)
	step(5000-ReplayWindowSize+1, nil)     // oldest still tracked
	step(5000-ReplayWindowSize, ErrTooOld) // just behind
	step(6, ErrTooOld)
	step(4999, nil)
	step(1<<40, nil) // big jump clears everything
	step(1<<40-1, nil)
	step(5000, ErrTooOld)
	step(1<<40, ErrReplayed)
}

// reference model: a set of accepted counters and the highest one.
type replayModel struct {
	seen map[uint64]bool
	max  uint64
	any  bool
}

func (m *replayModel) step(c uint64) error {
	if m.any && c <= m.max && m.max-c >= ReplayWindowSize {
		return ErrTooOld
	}
	if m.seen[c] {
		return ErrReplayed
	}
	m.seen[c] = true
	if !m.any || c > m.max {
		m.max, m.any = c, true
	}
	return nil
}

// FuzzReplayWindow compares the bitmap to a plain set on arbitrary counter sequences.
func FuzzReplayWindow(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, 3000), 10))
	f.Fuzz(func(t *testing.T, b []byte) {
		var w replayWindow
		m := replayModel{seen: map[uint64]bool{}}
		base := uint64(0)
		for len(b) >= 2 {
			// Mostly small moves around a drifting base, so reorderings near the window
			// edge are exercised, plus occasional big jumps.
			d := binary.BigEndian.Uint16(b)
			b = b[2:]
			if d&0x8000 != 0 {
				base += uint64(d&0x7fff) * 3
			}
			c := base + uint64(d&0xfff)
			want := m.step(c)
			got := w.check(c)
			if (got == nil) != (want == nil) || (got != nil && !errors.Is(got, want)) {
				t.Fatalf("counter %d: window says %v, model says %v", c, got, want)
			}
			if got == nil {
				w.accept(c)
			}
		}
	})
}

func BenchmarkReplayWindow(b *testing.B) {
	var w replayWindow
	var c uint64
	for b.Loop() {
		if w.check(c) == nil {
			w.accept(c)
		}
		c++
	}
}
