package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDockerfile keeps the image honest without building it: the Go image
// is the release go.mod asks for, the metrics port the entrypoint serves is
// exposed, and the HEALTHCHECK runs a command this binary has, against it.
func TestDockerfile(t *testing.T) {
	df, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if goVersion == nil {
		t.Fatal("go.mod has no go line")
	}
	text := string(df)
	if want := "FROM golang:" + string(goVersion[1]) + "-"; !strings.Contains(text, want) {
		t.Errorf("Dockerfile does not build with go.mod's Go: want %q", want)
	}
	if !strings.Contains(text, `"--metrics", ":9100"]`) || !regexp.MustCompile(`(?m)^EXPOSE .*\b9100/tcp\b`).MatchString(text) {
		t.Error("the entrypoint's metrics port is not both served and exposed")
	}
	hc := regexp.MustCompile(`CMD \["swarmdb", "health", "--metrics", "127\.0\.0\.1:9100"\]`)
	if !regexp.MustCompile(`(?m)^HEALTHCHECK `).MatchString(text) || !hc.MatchString(text) {
		t.Error("no HEALTHCHECK running swarmdb health against the metrics port")
	}
	if code, _, errOut := runCLI(t.Context(), "health", "--metrics", "127.0.0.1:9100", "-h"); code != exitOK {
		t.Errorf("the health check's command line does not parse: %s", errOut)
	}
}
