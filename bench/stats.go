package main

import (
	"fmt"
	"math"
	"slices"
)

// Sample is one side's measurements of one case: every repetition's value,
// or why there are none.
type Sample struct {
	Values []float64 `json:"values,omitempty"`
	// NA, when set, says why this side was not measured ("not available:
	// ..."); it is printed instead of numbers.
	NA string `json:"na,omitempty"`
}

// Add appends one repetition's value.
func (s *Sample) Add(v float64) { s.Values = append(s.Values, v) }

// OK reports whether the sample has at least one value.
func (s Sample) OK() bool { return len(s.Values) > 0 }

// Median returns the median (mean of the middle two for an even count),
// NaN when empty.
func (s Sample) Median() float64 {
	if len(s.Values) == 0 {
		return math.NaN()
	}
	v := slices.Sorted(slices.Values(s.Values))
	m := len(v) / 2
	if len(v)%2 == 1 {
		return v[m]
	}
	return (v[m-1] + v[m]) / 2
}

// Min returns the smallest value, NaN when empty.
func (s Sample) Min() float64 {
	if len(s.Values) == 0 {
		return math.NaN()
	}
	return slices.Min(s.Values)
}

// Max returns the largest value, NaN when empty.
func (s Sample) Max() float64 {
	if len(s.Values) == 0 {
		return math.NaN()
	}
	return slices.Max(s.Values)
}

// String renders "median (min–max)" with a precision fitting the size, or
// the NA reason.
func (s Sample) String() string {
	if !s.OK() {
		if s.NA == "" {
			return "—"
		}
		return s.NA
	}
	if len(s.Values) == 1 {
		return num(s.Median())
	}
	return fmt.Sprintf("%s (%s–%s)", num(s.Median()), num(s.Min()), num(s.Max()))
}

// num formats v with about three significant digits.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v):
		return "—"
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// Ratio returns median(a)/median(b), NaN when either is missing or b is
// below 0.001 (zero within measurement resolution), where a ratio means
// nothing.
func Ratio(a, b Sample) float64 {
	if !a.OK() || !b.OK() || math.Abs(b.Median()) < 1e-3 {
		return math.NaN()
	}
	return a.Median() / b.Median()
}
