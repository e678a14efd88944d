package natlab

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// ciEnv names the environment variable that turns a missing prerequisite
// from a skip into a failure: CI must never silently skip the NAT lab.
const ciEnv = "CI"

// Require skips t with a clear message when the lab cannot run here (not
// root, or ip/nft missing). When the environment has CI=true it fails t
// instead. New calls it; call it directly in tests that need the lab's
// prerequisites without building a lab.
func Require(t testing.TB) {
	t.Helper()
	problem := prereqProblem(os.Geteuid(), exec.LookPath)
	switch decide(problem, os.Getenv(ciEnv)) {
	case verdictRun:
	case verdictFail:
		t.Fatalf("natlab: %s; CI=true, so the NAT lab must run (install nftables and iproute2, run as root)", problem)
	case verdictSkip:
		t.Skipf("natlab: %s; skipping NAT-lab test (needs root, ip and nft; with CI=true this fails instead)", problem)
	}
}

type verdict int

const (
	verdictRun verdict = iota
	verdictSkip
	verdictFail
)

// decide is Require's whole policy: run when nothing is missing, otherwise
// skip, unless ciValue says we are in CI ("true", "1", ... per
// strconv.ParseBool), where a missing prerequisite is a failure.
func decide(problem, ciValue string) verdict {
	if problem == "" {
		return verdictRun
	}
	if ci, err := strconv.ParseBool(strings.TrimSpace(ciValue)); err == nil && ci {
		return verdictFail
	}
	return verdictSkip
}

// prereqProblem describes what is missing for the lab, or returns "".
func prereqProblem(euid int, lookPath func(string) (string, error)) string {
	var missing []string
	if euid != 0 {
		missing = append(missing, "not running as root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := lookPath(tool); err != nil {
			missing = append(missing, "command "+strconv.Quote(tool)+" not found")
		}
	}
	return strings.Join(missing, ", ")
}
