package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// natConfig is what `go run ./bench -parts nat` hands to TestNATMatrix
// (through the BENCH_NAT environment variable as JSON).
type natConfig struct {
	Out        string    `json:"out"` // where the test writes its PartResult
	Reps       int       `json:"reps"`
	Swarmdb    string    `json:"swarmdb"`     // built binary ("" if the build failed)
	SwarmdbNA  string    `json:"swarmdb_na"`  // why swarmdb's pipe side is unavailable
	JS         string    `json:"js"`          // bench/js
	LossMiB    int       `json:"loss_mib"`    // MiB piped per loss run
	LossRates  []float64 `json:"loss_rates"`  // e.g. 0, 0.005, 0.02
	TimeoutSec float64   `json:"timeout_sec"` // per connection attempt
	// The WAN matrix (TestWANMatrix): one stream between two port-restricted
	// hosts for every RTT × loss.
	WANMiB    int       `json:"wan_mib"`
	WANRTTsMs []int     `json:"wan_rtts_ms"`
	WANLoss   []float64 `json:"wan_loss"`
}

// natEnv names the variable that carries natConfig; without it
// TestNATMatrix skips at once, so `go test ./bench` stays fast.
const natEnv = "BENCH_NAT"

// runNAT runs test (TestNATMatrix, TestWANMatrix or TestReplication), which builds the NAT
// lab (internal/natlab needs a testing.TB) and runs processes in its
// namespaces.
func runNAT(ctx context.Context, o options, sw swarmdbBin, test string) (*PartResult, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("the NAT lab needs root (network namespaces and nftables)")
	}
	cfg := natConfig{
		Out: filepath.Join(o.tmp, test+".json"), Reps: o.reps, Swarmdb: sw.path, SwarmdbNA: sw.why, JS: o.js,
		LossMiB: 16, LossRates: []float64{0, 0.005, 0.02}, TimeoutSec: 30,
		WANMiB: o.wanMiB, WANRTTsMs: []int{0, 20, 80}, WANLoss: []float64{0, 0.005, 0.02, 0.05},
	}
	b, _ := json.Marshal(cfg)
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-timeout=120m", "-run=^"+test+"$", "-v", "./bench")
	cmd.Dir = o.root
	cmd.Env = append(os.Environ(), natEnv+"="+string(b))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	err := cmd.Run()
	o.log.Info("nat lab run finished", "took", time.Since(start).Round(time.Second), "err", err)
	out, rerr := os.ReadFile(cfg.Out)
	if rerr != nil {
		if err == nil {
			err = rerr
		}
		return nil, fmt.Errorf("%s: %w", test, err)
	}
	var pr PartResult
	if err := json.Unmarshal(out, &pr); err != nil {
		return nil, err
	}
	if err != nil && pr.Error == "" {
		pr.Error = test + " failed part-way: " + err.Error()
	}
	return &pr, nil
}
