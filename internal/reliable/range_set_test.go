package reliable

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// op is one step of a rangeSet table test.
type rangeOp struct {
	add        bool
	start, end uint64
}

func TestRangeSet(t *testing.T) {
	tests := []struct {
		name string
		ops  []rangeOp
		want []span
	}{
		{"empty", nil, nil},
		{"one", []rangeOp{{true, 5, 10}}, []span{{5, 10}}},
		{"empty interval is ignored", []rangeOp{{true, 5, 5}, {true, 7, 3}}, nil},
		{"disjoint in order", []rangeOp{{true, 0, 2}, {true, 4, 6}, {true, 8, 10}}, []span{{0, 2}, {4, 6}, {8, 10}}},
		{"disjoint reversed", []rangeOp{{true, 8, 10}, {true, 4, 6}, {true, 0, 2}}, []span{{0, 2}, {4, 6}, {8, 10}}},
		{"touching coalesces", []rangeOp{{true, 0, 5}, {true, 5, 10}}, []span{{0, 10}}},
		{"touching below coalesces", []rangeOp{{true, 5, 10}, {true, 0, 5}}, []span{{0, 10}}},
		{"fills a gap", []rangeOp{{true, 0, 2}, {true, 4, 6}, {true, 2, 4}}, []span{{0, 6}}},
		{"swallows several", []rangeOp{{true, 2, 3}, {true, 5, 6}, {true, 8, 9}, {true, 11, 12}, {true, 1, 10}}, []span{{1, 10}, {11, 12}}},
		{"inside is a no-op", []rangeOp{{true, 0, 10}, {true, 3, 4}}, []span{{0, 10}}},
		{"overlap extends both ways", []rangeOp{{true, 3, 5}, {true, 1, 8}}, []span{{1, 8}}},
		{"remove all", []rangeOp{{true, 0, 10}, {false, 0, 10}}, nil},
		{"remove more than all", []rangeOp{{true, 3, 10}, {false, 0, 20}}, nil},
		{"remove splits", []rangeOp{{true, 0, 10}, {false, 3, 5}}, []span{{0, 3}, {5, 10}}},
		{"remove head", []rangeOp{{true, 0, 10}, {false, 0, 4}}, []span{{4, 10}}},
		{"remove tail", []rangeOp{{true, 0, 10}, {false, 6, 10}}, []span{{0, 6}}},
		{"remove across spans", []rangeOp{{true, 0, 3}, {true, 5, 8}, {true, 10, 13}, {false, 2, 11}}, []span{{0, 2}, {11, 13}}},
		{"remove in a gap", []rangeOp{{true, 0, 3}, {true, 5, 8}, {false, 3, 5}}, []span{{0, 3}, {5, 8}}},
		{"remove from empty", []rangeOp{{false, 0, 3}}, nil},
		{"split grows past inline", []rangeOp{{true, 0, 10}, {true, 20, 30}, {false, 4, 6}}, []span{{0, 4}, {6, 10}, {20, 30}}},
		{"top of uint64", []rangeOp{{true, math.MaxUint64 - 2, math.MaxUint64}}, []span{{math.MaxUint64 - 2, math.MaxUint64}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s rangeSet
			for _, o := range tt.ops {
				if o.add {
					s.add(o.start, o.end)
				} else {
					s.remove(o.start, o.end)
				}
			}
			if got := s.spans(); !slices.Equal(got, tt.want) {
				t.Fatalf("spans = %v, want %v", got, tt.want)
			}
			if s.empty() != (len(tt.want) == 0) {
				t.Errorf("empty = %t with %d spans", s.empty(), len(tt.want))
			}
			start, end, ok := s.first()
			if ok != (len(tt.want) > 0) || ok && (span{start, end}) != tt.want[0] {
				t.Errorf("first = %d, %d, %t", start, end, ok)
			}
		})
	}
}

func TestRangeSetQueries(t *testing.T) {
	var s rangeSet
	s.add(10, 20)
	s.add(30, 40)
	s.add(50, 60)
	for _, c := range []struct {
		x    uint64
		want bool
	}{{0, false}, {9, false}, {10, true}, {19, true}, {20, false}, {29, false}, {30, true}, {59, true}, {60, false}, {math.MaxUint64, false}} {
		if got := s.contains(c.x); got != c.want {
			t.Errorf("contains(%d) = %t, want %t", c.x, got, c.want)
		}
	}
	for _, c := range []struct {
		start, end uint64
		want       bool
	}{
		{10, 20, true}, {12, 15, true}, {10, 21, false}, {9, 12, false}, {15, 35, false},
		{30, 40, true}, {55, 60, true}, {20, 30, false}, {5, 5, true}, {25, 25, true}, {61, 70, false},
	} {
		if got := s.covers(c.start, c.end); got != c.want {
			t.Errorf("covers(%d, %d) = %t, want %t", c.start, c.end, got, c.want)
		}
	}
	s.add(math.MaxUint64-1, math.MaxUint64)
	if !s.contains(math.MaxUint64-1) || s.contains(math.MaxUint64) {
		t.Errorf("top of uint64: contains(max-1) = %t, contains(max) = %t", s.contains(math.MaxUint64-1), s.contains(math.MaxUint64))
	}
}

// TestRangeSetHeapArray checks that a set keeps up to two spans without a heap
// array, keeps the one it needed for more while it empties and fills again
// (no allocation per loss or reordering episode), and gives it back on clear.
func TestRangeSetHeapArray(t *testing.T) {
	var s rangeSet
	s.add(0, 1)
	s.add(2, 3)
	if s.big != nil {
		t.Fatal("two spans took a heap array")
	}
	s.add(4, 5)
	if s.big == nil {
		t.Fatal("three spans and no heap array")
	}
	s.remove(0, 3)
	if len(s.spans()) != 1 {
		t.Fatalf("spans %v", s.spans())
	}
	s.remove(4, 5)
	if !s.empty() || s.big == nil {
		t.Fatalf("empty %t, heap array %t", s.empty(), s.big != nil)
	}
	if _, _, ok := s.first(); ok {
		t.Fatal("first on an empty set")
	}
	burst := func() {
		s.add(10, 20)
		s.add(30, 40)
		s.remove(12, 14) // three spans
		s.remove(0, 100)
	}
	if n := testing.AllocsPerRun(100, burst); n != 0 {
		t.Errorf("%v allocations for a burst of three spans with the array kept, want 0", n)
	}
	s.clear()
	if s.big != nil || !s.empty() {
		t.Fatal("clear kept the array")
	}
	if n := testing.AllocsPerRun(100, func() { burst(); s.clear() }); n != 1 {
		t.Errorf("%v allocations for a burst of three spans from clear, want 1", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		s.add(10, 20)
		s.add(30, 40)
		s.remove(10, 15)
		s.remove(0, 100)
	}); n != 0 {
		t.Errorf("%v allocations for two spans, want 0", n)
	}
}

// TestRangeSetModel applies random adds and removes to a rangeSet and to a
// bitmap, checking after each that they hold the same values and that the
// spans are sorted, disjoint and coalesced.
func TestRangeSetModel(t *testing.T) {
	t.Parallel() // a long simulation: run beside the others
	const size = 200
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 1))
		var s rangeSet
		var model [size]bool
		for step := range 400 {
			start := rng.Uint64N(size)
			end := start + rng.Uint64N(min(size-start, 30)+1)
			if rng.IntN(3) == 0 {
				// Mostly narrow ranges, so that many spans build up; now and
				// then a wide remove that clears a stretch.
				end = start + rng.Uint64N(size-start+1)
			}
			add := rng.IntN(5) < 3
			if add {
				s.add(start, end)
			} else {
				s.remove(start, end)
			}
			for i := start; i < end; i++ {
				model[i] = add
			}
			checkAgainstModel(t, &s, model[:], seed, step)
			if t.Failed() {
				return
			}
		}
	}
}

func checkAgainstModel(t *testing.T, s *rangeSet, model []bool, seed uint64, step int) {
	t.Helper()
	var want []span
	for i := 0; i < len(model); {
		if !model[i] {
			i++
			continue
		}
		j := i
		for j < len(model) && model[j] {
			j++
		}
		want = append(want, span{uint64(i), uint64(j)})
		i = j
	}
	if got := s.spans(); !slices.Equal(got, want) {
		t.Fatalf("seed %d step %d: spans %v, want %v", seed, step, got, want)
	}
	for i, in := range model {
		if s.contains(uint64(i)) != in {
			t.Fatalf("seed %d step %d: contains(%d) = %t", seed, step, i, !in)
		}
	}
	// covers against the model for a few intervals.
	for a := 0; a < len(model); a += 7 {
		for b := a; b <= len(model) && b < a+40; b += 3 {
			want := true
			for i := a; i < b; i++ {
				want = want && model[i]
			}
			if s.covers(uint64(a), uint64(b)) != want {
				t.Fatalf("seed %d step %d: covers(%d, %d) = %t", seed, step, a, b, !want)
			}
		}
	}
	if s.empty() != (len(want) == 0) {
		t.Fatalf("seed %d step %d: empty = %t", seed, step, s.empty())
	}
}
