package main

import (
	"math"
	"testing"
)

func TestSampleMedianMinMax(t *testing.T) {
	for _, tc := range []struct {
		in            []float64
		med, min, max float64
	}{
		{[]float64{3}, 3, 3, 3},
		{[]float64{5, 1, 3}, 3, 1, 5},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
	} {
		s := Sample{Values: tc.in}
		if s.Median() != tc.med || s.Min() != tc.min || s.Max() != tc.max {
			t.Errorf("%v: got median %v min %v max %v, want %v %v %v", tc.in, s.Median(), s.Min(), s.Max(), tc.med, tc.min, tc.max)
		}
	}
	if !math.IsNaN(Sample{}.Median()) {
		t.Error("median of an empty sample should be NaN")
	}
}

func TestSampleString(t *testing.T) {
	if got := (Sample{Values: []float64{12.34, 10, 15}}).String(); got != "12.3 (10.0–15.0)" {
		t.Errorf("got %q", got)
	}
	if got := (Sample{NA: "not available"}).String(); got != "not available" {
		t.Errorf("got %q", got)
	}
}

func TestRatio(t *testing.T) {
	a := Sample{Values: []float64{2, 4, 6}}
	b := Sample{Values: []float64{2}}
	if r := Ratio(a, b); r != 2 {
		t.Errorf("ratio %v, want 2", r)
	}
	if r := Ratio(a, Sample{NA: "x"}); !math.IsNaN(r) {
		t.Errorf("ratio against a missing side %v, want NaN", r)
	}
}

func TestVerdict(t *testing.T) {
	fast := Comparison{Other: "X", Swarm: Sample{Values: []float64{10}}, Them: Sample{Values: []float64{20}}}
	if v := fast.Verdict(); v != "swarmdb" {
		t.Errorf("lower time: %q, want swarmdb", v)
	}
	rate := fast
	rate.Higher = true
	if v := rate.Verdict(); v != "X" {
		t.Errorf("lower rate: %q, want X", v)
	}
	tie := Comparison{Other: "X", Swarm: Sample{Values: []float64{100}}, Them: Sample{Values: []float64{103}}}
	if v := tie.Verdict(); v != "tie" {
		t.Errorf("within 5%%: %q, want tie", v)
	}
	if v := (Comparison{Other: "X", Them: Sample{Values: []float64{1}}}).Verdict(); v != "" {
		t.Errorf("missing side: %q, want empty", v)
	}
}

func TestGridPrefix(t *testing.T) {
	if got := gridPrefix("nat-ms-open-to-open"); got != "nat-ms-" {
		t.Errorf("got %q", got)
	}
}

func TestRatioNearZero(t *testing.T) {
	if r := Ratio(Sample{Values: []float64{0.1}}, Sample{Values: []float64{0.1 - 0.1 + 1e-9}}); !math.IsNaN(r) {
		t.Errorf("ratio against ~0: %v, want NaN", r)
	}
}
