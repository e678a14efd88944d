package swarm

import (
	"testing"
	"time"
)

func TestBackoffSchedule(t *testing.T) {
	var b Backoff
	cases := []struct {
		retry    int
		explicit bool
		rnd      float64
		want     time.Duration
		ok       bool
	}{
		{1, false, 0, time.Second, true},
		{1, false, 0.999999, 1500 * time.Millisecond, true},
		{2, false, 0, 5 * time.Second, true},
		{2, false, 0.5, 5500 * time.Millisecond, true},
		{3, false, 0, 15 * time.Second, true},
		{3, false, 0.5, 16500 * time.Millisecond, true},
		{4, false, 0, 0, false},
		{9, false, 0.3, 0, false},
		{4, true, 0, 10 * time.Minute, true},
		{40, true, 0.5, 11 * time.Minute, true},
		{1, true, 0, time.Second, true},
	}
	for _, c := range cases {
		got, ok := b.Delay(c.retry, c.explicit, c.rnd)
		if ok != c.ok || (ok && (got-c.want).Abs() > time.Millisecond) {
			t.Errorf("Delay(%d, explicit=%v, %v) = %v, %v; want %v, %v", c.retry, c.explicit, c.rnd, got, ok, c.want, c.ok)
		}
	}
}

func TestBackoffCustom(t *testing.T) {
	b := Backoff{Short: 10 * time.Millisecond, Medium: 20 * time.Millisecond, Long: 30 * time.Millisecond, Explicit: time.Second}
	for retry, want := range map[int]time.Duration{1: 10, 2: 20, 3: 30} {
		if got, _ := b.Delay(retry, false, 0); got != want*time.Millisecond {
			t.Errorf("retry %d: %v, want %v", retry, got, want*time.Millisecond)
		}
	}
	if got, ok := b.Delay(5, true, 0); !ok || got != time.Second {
		t.Errorf("explicit: %v %v", got, ok)
	}
}
