// Package pionlog adapts log/slog to pion's logging interfaces, so pion's
// ICE, SCTP and TURN code logs through the logger a component was given
// (STYLE §8). Messages keep the constant text "pion" with pion's line under
// "detail" and the pion scope under "scope"; lines are only formatted when
// their level is enabled (pion traces every packet).
//
// pion is loud about things that are normal on a shared socket (packets it
// does not know, closed connections), so its Info and Warn become Debug and
// its Error becomes Info. Users: secure, holepunch.
package pionlog

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// LevelTrace is below slog.LevelDebug; pion traces every chunk.
const LevelTrace = slog.LevelDebug - 4

// Factory returns a pion LoggerFactory that logs to log.
func Factory(log *slog.Logger) logging.LoggerFactory { return factory{log} }

type factory struct{ log *slog.Logger }

func (f factory) NewLogger(scope string) logging.LeveledLogger {
	return logger{f.log.With("scope", scope)}
}

type logger struct{ log *slog.Logger }

var _ logging.LeveledLogger = logger{}

func (l logger) emit(level slog.Level, detail string) {
	l.log.Log(context.Background(), level, "pion", "detail", detail)
}

func (l logger) emitf(level slog.Level, format string, args ...any) {
	if l.log.Enabled(context.Background(), level) {
		l.emit(level, fmt.Sprintf(format, args...))
	}
}

func (l logger) Trace(msg string)                  { l.emit(LevelTrace, msg) }
func (l logger) Tracef(format string, args ...any) { l.emitf(LevelTrace, format, args...) }
func (l logger) Debug(msg string)                  { l.emit(slog.LevelDebug, msg) }
func (l logger) Debugf(format string, args ...any) { l.emitf(slog.LevelDebug, format, args...) }
func (l logger) Info(msg string)                   { l.emit(slog.LevelDebug, msg) }
func (l logger) Infof(format string, args ...any)  { l.emitf(slog.LevelDebug, format, args...) }
func (l logger) Warn(msg string)                   { l.emit(slog.LevelDebug, msg) }
func (l logger) Warnf(format string, args ...any)  { l.emitf(slog.LevelDebug, format, args...) }
func (l logger) Error(msg string)                  { l.emit(slog.LevelInfo, msg) }
func (l logger) Errorf(format string, args ...any) { l.emitf(slog.LevelInfo, format, args...) }
