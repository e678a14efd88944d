package mainline

import (
	"context"
	"log/slog"

	alog "github.com/anacrolix/log"
)

// libraryLogger routes the library's log lines into l at debug level (its
// "errors" are routine on a DHT: a router that does not answer, a node that
// went away); our own code logs what the user should see. When l does not
// take debug lines the library's are filtered before they are formatted.
func libraryLogger(l *slog.Logger) alog.Logger {
	al := alog.NewLogger("mainline")
	al.SetHandlers(slogHandler{l})
	if !l.Enabled(context.Background(), slog.LevelDebug) {
		return al.WithFilterLevel(alog.Critical)
	}
	return al.WithFilterLevel(alog.Debug)
}

type slogHandler struct{ l *slog.Logger }

func (h slogHandler) Handle(r alog.Record) {
	level := slog.LevelDebug
	if !r.Level.LessThan(alog.Critical) {
		level = slog.LevelWarn
	}
	h.l.Log(context.Background(), level, "mainline library", "text", r.Msg.String())
}
