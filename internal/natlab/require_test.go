package natlab

import (
	"errors"
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	tests := []struct {
		name    string
		problem string
		ci      string
		want    verdict
	}{
		{"ready, no CI", "", "", verdictRun},
		{"ready, CI", "", "true", verdictRun},
		{"not root, no CI skips", "not running as root", "", verdictSkip},
		{"not root, CI=false skips", "not running as root", "false", verdictSkip},
		{"not root, CI=garbage skips", "not running as root", "yes please", verdictSkip},
		{"not root, CI=true fails", "not running as root", "true", verdictFail},
		{"no nft, CI=1 fails", `command "nft" not found`, "1", verdictFail},
		{"no nft, CI=TRUE fails", `command "nft" not found`, "TRUE", verdictFail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decide(tt.problem, tt.ci); got != tt.want {
				t.Errorf("decide(%q, %q) = %v, want %v", tt.problem, tt.ci, got, tt.want)
			}
		})
	}
}

func TestPrereqProblem(t *testing.T) {
	have := func(string) (string, error) { return "/usr/sbin/x", nil }
	noNft := func(name string) (string, error) {
		if name == "nft" {
			return "", errors.New("not found")
		}
		return "/usr/sbin/" + name, nil
	}
	if got := prereqProblem(0, have); got != "" {
		t.Errorf("root with tools: got %q, want no problem", got)
	}
	if got := prereqProblem(1000, have); !strings.Contains(got, "root") {
		t.Errorf("non-root: got %q, want it to mention root", got)
	}
	got := prereqProblem(1000, noNft)
	if !strings.Contains(got, "root") || !strings.Contains(got, `"nft"`) || strings.Contains(got, `"ip"`) {
		t.Errorf("non-root without nft: got %q", got)
	}
}
