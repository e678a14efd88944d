package testutil

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// LogOnFailure returns a debug logger that keeps its last maxLines lines
// and writes them to t's log only if the test fails: a rare failure then
// explains itself without every passing run printing pages of logs.
func LogOnFailure(t testing.TB, maxLines int) *slog.Logger {
	w := &lastLines{max: maxLines}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the last %d log lines:\n%s", maxLines, w.String())
		}
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lastLines is an io.Writer that keeps the last max lines written to it.
type lastLines struct {
	max int

	mu    sync.Mutex
	lines []string
	part  bytes.Buffer // a line not yet ended
}

func (w *lastLines) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.part.Write(p)
	for {
		line, err := w.part.ReadString('\n')
		if err != nil { // no newline yet: keep the start for the next write
			w.part.Reset()
			w.part.WriteString(line)
			return len(p), nil
		}
		w.lines = append(w.lines, strings.TrimSuffix(line, "\n"))
		if len(w.lines) > w.max {
			w.lines = w.lines[len(w.lines)-w.max:]
		}
	}
}

func (w *lastLines) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}
