// Package tooldbtest finds the Node.js test projects that drive the real
// tool-db@2.6.6 from npm (db/testdata/tooldb, bridge/testdata/tooldb), for
// the interop tests of db, bridge and node. Test helper only.
package tooldbtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Find returns the absolute path of the project in dir when node is on the
// PATH and the project's pinned tool-db is installed, and "" otherwise.
func Find(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	_, errNode := exec.LookPath("node")
	_, errMods := os.Stat(filepath.Join(abs, "node_modules", "tool-db", "package.json"))
	if errNode != nil || errMods != nil {
		return ""
	}
	return abs
}

// Require is Find for tests: without node or the installed project the
// test skips, except in CI (CI=true), which installs both, where it fails.
// install is how the project is installed, for the message.
func Require(t testing.TB, dir, install string) string {
	t.Helper()
	if abs := Find(dir); abs != "" {
		return abs
	}
	msg := fmt.Sprintf("needs node and the pinned tool-db: run `(cd %s && npm ci)`", install)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
