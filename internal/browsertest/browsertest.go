// Package browsertest runs Debian's Chromium headless for the browser tests
// (through chromedp, the Chrome DevTools Protocol), and bundles their
// JavaScript with the esbuild that a test project installs from its lock
// file. It never downloads a browser: the tests use /usr/bin/chromium (or
// $CHROMIUM), skip with a clear message when it is missing outside CI, and
// fail under CI=true, whose .ci/run installs it. Test helper only.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// DefaultChromium is Debian's chromium package's binary.
const DefaultChromium = "/usr/bin/chromium"

// Find returns the Chromium binary: $CHROMIUM, else DefaultChromium, else
// "chromium" on the PATH; "" when there is none.
func Find() string {
	for _, p := range []string{os.Getenv("CHROMIUM"), DefaultChromium} {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	return ""
}

// skipOrFail skips the test with msg, except under CI (CI=true), which
// installs every prerequisite, where a missing one is a failure.
func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Browser is one headless Chromium with its own fresh profile
// (--user-data-dir in the test's temporary directory), so nothing a test
// stores (IndexedDB, localStorage) leaks into another.
type Browser struct {
	// Ctx is the browser's first tab; chromedp.Do(b.Ctx, ...) drives it.
	Ctx context.Context
	// ProfileDir is the browser's --user-data-dir.
	ProfileDir string
}

// Start starts Chromium for t and stops it (and only it) when t ends.
func Start(t testing.TB) *Browser {
	t.Helper()
	bin := Find()
	if bin == "" {
		skipOrFail(t, "needs Debian's chromium (apt-get install chromium), or $CHROMIUM")
		return nil
	}
	profile := filepath.Join(t.TempDir(), "profile")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	// Cancelling the browser context ends the browser process chromedp
	// started (by its PID) and waits for it.
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// The first action allocates the browser, which lives as long as ctx:
	// so no deadline on it (chromedp's rule); a stuck start ends with the
	// test's own timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	return &Browser{Ctx: ctx, ProfileDir: profile}
}

// Do runs actions on the browser's tab, in order, within d.
func (b *Browser) Do(t testing.TB, d time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

// Eval evaluates expr in the tab (awaiting it when it is a promise) within
// d and decodes its value as T.
func Eval[T any](t testing.TB, b *Browser, d time.Duration, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, d)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// WaitJS waits up to d for the JavaScript expression expr to be truthy,
// checking every 50 ms; what the failure says is why.
func WaitJS(t testing.TB, b *Browser, d time.Duration, expr, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, d+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(d))); err != nil {
		t.Fatalf("%s: waited %v for %s: %v", why, d, expr, err)
	}
}

// Bundle bundles entry (a file of the npm project in dir) for the browser
// with the project's esbuild into out, and returns out. args are extra
// esbuild arguments (aliases, defines). Without node, or with the project
// not installed, the test skips (fails under CI).
func Bundle(t testing.TB, dir, entry, out string, args ...string) string {
	t.Helper()
	esbuild := filepath.Join(dir, "node_modules", ".bin", "esbuild")
	if _, err := os.Stat(esbuild); err != nil {
		skipOrFail(t, fmt.Sprintf("needs the browser test's npm packages: run `(cd %s && npm ci)`", dir))
		return ""
	}
	cmd := exec.Command(esbuild, append([]string{entry, "--bundle", "--format=iife", "--platform=browser",
		"--log-level=warning", "--outfile=" + out}, args...)...)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("esbuild: %v\n%s", err, b)
	}
	return out
}

// SaveArtifact writes data as name in the test's artifact directory
// (t.ArtifactDir: kept under -outputdir with `go test -artifacts`) and, when
// $SWARMDB_ARTIFACTS names a directory, there too. It returns the paths.
func SaveArtifact(t *testing.T, name string, data []byte) []string {
	t.Helper()
	dirs := []string{t.ArtifactDir()}
	if d := os.Getenv("SWARMDB_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	var paths []string
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}
