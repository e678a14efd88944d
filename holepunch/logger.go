package holepunch

import (
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLogger adapts slog to pion's logging interfaces (STYLE §8). pion is
// chatty at Warn about things that are normal for us (unknown packets on a
// shared socket), so its Warn becomes Debug.
type pionLogger struct{ log *slog.Logger }

var (
	_ logging.LoggerFactory = pionLogger{}
	_ logging.LeveledLogger = pionLogger{}
)

func (l pionLogger) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: l.log.With("scope", scope)}
}

func (l pionLogger) Trace(string)          {}
func (l pionLogger) Tracef(string, ...any) {}
func (l pionLogger) Debug(msg string)      { l.log.Debug("pion", "detail", msg) }
func (l pionLogger) Debugf(f string, a ...any) {
	l.log.Debug("pion", "detail", fmt.Sprintf(f, a...))
}
func (l pionLogger) Info(msg string)          { l.log.Debug("pion", "detail", msg) }
func (l pionLogger) Infof(f string, a ...any) { l.log.Debug("pion", "detail", fmt.Sprintf(f, a...)) }
func (l pionLogger) Warn(msg string)          { l.log.Debug("pion", "detail", msg) }
func (l pionLogger) Warnf(f string, a ...any) { l.log.Debug("pion", "detail", fmt.Sprintf(f, a...)) }
func (l pionLogger) Error(msg string)         { l.log.Info("pion", "detail", msg) }
func (l pionLogger) Errorf(f string, a ...any) {
	l.log.Info("pion", "detail", fmt.Sprintf(f, a...))
}
