package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteReportNamesLosses checks that a comparison swarmdb loses is
// listed in the closing note with its cause, that a missing swarmdb side is
// reported as such, and that grid cells stay out of the summary.
func TestWriteReportNamesLosses(t *testing.T) {
	r := &Results{Parts: map[string]*PartResult{
		"loopback": {Comparisons: []Comparison{
			{Name: "one-stream throughput", Key: "loop-mibps", Unit: "MiB/s", Higher: true, Other: "Hyperswarm",
				Swarm: Sample{Values: []float64{50, 60}}, Them: Sample{Values: []float64{90}}},
			{Name: "join to first connection", Key: "loop-connect-ms", Unit: "ms", Other: "Hyperswarm",
				Swarm: Sample{NA: "not available: no pipe"}, Them: Sample{Values: []float64{25}}},
		}},
		"nat": {Comparisons: []Comparison{
			{Name: "connect time open-to-open", Key: "nat-ms-open-to-open", Unit: "ms", Other: "Hyperswarm", Detail: true,
				Swarm: Sample{Values: []float64{55}}, Them: Sample{Values: []float64{25}}},
		}},
	}}
	path := filepath.Join(t.TempDir(), "REPORT.md")
	if err := writeReport(path, r); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	report := string(b)
	closing := report[strings.Index(report, "## Closing note"):]
	for _, want := range []string{
		"**one-stream throughput** (loopback): swarmdb 55.0 vs Hyperswarm 90.0 MiB/s. Cause: " + loseCauses["loop-mibps"],
		"**nat-ms** (nat), 1 cells: open-to-open 55.0 vs 25.0",
		"join to first connection: swarmdb not available: no pipe",
		"- dht: not run yet.",
	} {
		if !strings.Contains(closing, want) {
			t.Errorf("closing note lacks %q:\n%s", want, closing)
		}
	}
	summary := report[strings.Index(report, "## Summary"):strings.Index(report, "## DHT")]
	if strings.Contains(summary, "open-to-open") {
		t.Errorf("a grid cell is in the summary:\n%s", summary)
	}
	if !strings.Contains(summary, "| 0.61 | Hyperswarm |") {
		t.Errorf("summary lacks the ratio and verdict of the throughput row:\n%s", summary)
	}
}

func TestUsageOfSelf(t *testing.T) {
	u, err := usageOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.RSS <= 0 {
		t.Errorf("RSS %d, want > 0", u.RSS)
	}
}

func TestCauseFor(t *testing.T) {
	if got := causeFor("nat-loss-0.02"); got != loseCauses["nat-loss"] {
		t.Errorf("2 %% loss row: %q", got)
	}
	if got := causeFor("nat-loss-0"); got != exactCauses["nat-loss-0"] {
		t.Errorf("no-loss row: %q", got)
	}
	if got := causeFor("nat-ms-open-to-open"); got != loseCauses["nat-ms"] {
		t.Errorf("grid cell: %q", got)
	}
}
