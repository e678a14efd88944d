package reliable

import (
	"math"
	"slices"
)

// The stream buffers keep sets of byte offsets: the ranges a sender has had
// acknowledged above its contiguous prefix and the ranges it must send again
// (RFC 9000 §13.3), the ranges a receiver holds beyond the first gap (RFC
// 9000 §2.2). Such sets are almost always empty or a span or two, and an
// idle stream must cost little memory, so a rangeSet keeps its first two
// spans in the struct and moves to the heap only when a third one appears.
// It keeps that array while it empties and fills again, as it does all the
// time while data flows with losses or reordering; clear gives it back, and
// a stream calls it when it goes idle.
//
// Pure and not goroutine-safe, like everything in this package.

// span is the half-open interval [start, end) of a rangeSet; never empty.
type span struct{ start, end uint64 }

// rangeSet is a set of uint64 held as sorted, disjoint, coalesced half-open
// intervals: two spans never overlap or touch. The zero value is empty.
type rangeSet struct {
	n      int     // spans held in inline while big is nil
	inline [2]span // the spans while there are at most two, and big is nil
	big    []span  // every span once more than two were held at once, until clear
}

// spans returns the set's spans in order. The slice aliases the set: it is
// valid until the set changes.
func (s *rangeSet) spans() []span {
	if s.big != nil {
		return s.big
	}
	return s.inline[:s.n]
}

// empty reports whether the set holds nothing.
func (s *rangeSet) empty() bool { return len(s.big) == 0 && s.n == 0 }

// first returns the lowest span.
func (s *rangeSet) first() (start, end uint64, ok bool) {
	r := s.spans()
	if len(r) == 0 {
		return 0, 0, false
	}
	return r[0].start, r[0].end, true
}

// clear empties the set and gives back its heap array, if it has one.
func (s *rangeSet) clear() { *s = rangeSet{} }

// searchEnd returns the index of the first span whose end is at least x
// (len(r) if none).
func searchEnd(r []span, x uint64) int {
	lo, hi := 0, len(r)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r[m].end < x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// contains reports whether x is in the set.
func (s *rangeSet) contains(x uint64) bool {
	if x == math.MaxUint64 {
		return false // an end is exclusive, so no span reaches it
	}
	return s.covers(x, x+1)
}

// covers reports whether every value of [start, end) is in the set; an
// empty interval is always covered.
func (s *rangeSet) covers(start, end uint64) bool {
	if start >= end {
		return true
	}
	r := s.spans()
	// The span that holds start is the first whose end exceeds it.
	i := searchEnd(r, start+1)
	return i < len(r) && r[i].start <= start && r[i].end >= end
}

// add puts [start, end) in the set, merging it with the spans it overlaps
// or touches.
func (s *rangeSet) add(start, end uint64) {
	if start >= end {
		return
	}
	r := s.spans()
	i := searchEnd(r, start) // the first span that ends at or after start: it may touch
	j := i
	for j < len(r) && r[j].start <= end {
		j++
	}
	if i == j {
		s.replace(i, i, span{start, end})
		return
	}
	s.replace(i, j, span{min(start, r[i].start), max(end, r[j-1].end)})
}

// remove takes [start, end) out of the set, splitting a span it falls
// inside.
func (s *rangeSet) remove(start, end uint64) {
	if start >= end {
		return
	}
	r := s.spans()
	i := searchEnd(r, start+1) // the first span that ends after start
	j := i
	for j < len(r) && r[j].start < end {
		j++
	}
	if i == j {
		return
	}
	left, right := r[i], r[j-1]
	switch {
	case left.start < start && right.end > end:
		s.replace(i, j, span{left.start, start}, span{end, right.end})
	case left.start < start:
		s.replace(i, j, span{left.start, start})
	case right.end > end:
		s.replace(i, j, span{end, right.end})
	default:
		s.replace(i, j)
	}
}

// replace puts v in place of spans [i, j), in the inline array while the
// result fits there and big is unused, else in big.
func (s *rangeSet) replace(i, j int, v ...span) {
	if s.big == nil {
		n := s.n - (j - i) + len(v)
		if n <= len(s.inline) {
			copy(s.inline[i+len(v):n], s.inline[j:s.n])
			copy(s.inline[i:], v)
			s.n = n
			return
		}
		// A third span: room for a few more, so that a burst of losses
		// grows the array once or twice, not at every span.
		big := make([]span, s.n, 8)
		copy(big, s.inline[:s.n])
		s.big, s.n = big, 0
	}
	s.big = slices.Replace(s.big, i, j, v...)
}
