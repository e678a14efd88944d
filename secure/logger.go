package secure

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// levelTrace is below slog.LevelDebug; pion traces every chunk.
const levelTrace = slog.LevelDebug - 4

// pionLoggerFactory adapts slog to pion's logging.LoggerFactory. Messages keep a
// constant text ("pion") with pion's formatted line under "detail", per our logging
// rules; formatting only happens when the level is enabled (pion logs per chunk).
type pionLoggerFactory struct{ log *slog.Logger }

func (f pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.log.With("scope", scope)}
}

type pionLogger struct{ log *slog.Logger }

var _ logging.LeveledLogger = pionLogger{}

func (l pionLogger) emit(level slog.Level, detail string) {
	l.log.Log(context.Background(), level, "pion", "detail", detail)
}

func (l pionLogger) emitf(level slog.Level, format string, args ...any) {
	if l.log.Enabled(context.Background(), level) {
		l.emit(level, fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) Trace(msg string)                  { l.emit(levelTrace, msg) }
func (l pionLogger) Tracef(format string, args ...any) { l.emitf(levelTrace, format, args...) }
func (l pionLogger) Debug(msg string)                  { l.emit(slog.LevelDebug, msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.emitf(slog.LevelDebug, format, args...) }
func (l pionLogger) Info(msg string)                   { l.emit(slog.LevelInfo, msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.emitf(slog.LevelInfo, format, args...) }

// pion logs expected teardown events as warnings; they are debug for us.
func (l pionLogger) Warn(msg string)                   { l.emit(slog.LevelDebug, msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.emitf(slog.LevelDebug, format, args...) }
func (l pionLogger) Error(msg string)                  { l.emit(slog.LevelWarn, msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.emitf(slog.LevelWarn, format, args...) }
