// Package pionlog routes pion's logs to a slog.Logger. Pion's warnings are
// mostly the ordinary noise of connections closing, so they are logged at
// debug level; its errors become warnings.
package pionlog

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// Factory returns a pion LoggerFactory writing to log.
func Factory(log *slog.Logger) logging.LoggerFactory { return factory{log} }

type factory struct{ log *slog.Logger }

func (f factory) NewLogger(scope string) logging.LeveledLogger {
	return logger{f.log.With("pion", scope)}
}

type logger struct{ log *slog.Logger }

func (l logger) emit(level slog.Level, msg string) {
	l.log.Log(context.Background(), level, msg)
}

func (l logger) Trace(msg string)                  {}
func (l logger) Tracef(format string, args ...any) {}
func (l logger) Debug(msg string)                  { l.emit(slog.LevelDebug, msg) }
func (l logger) Debugf(format string, args ...any) {
	l.emit(slog.LevelDebug, fmt.Sprintf(format, args...))
}
func (l logger) Info(msg string) { l.emit(slog.LevelDebug, msg) }
func (l logger) Infof(format string, args ...any) {
	l.emit(slog.LevelDebug, fmt.Sprintf(format, args...))
}
func (l logger) Warn(msg string) { l.emit(slog.LevelDebug, msg) }
func (l logger) Warnf(format string, args ...any) {
	l.emit(slog.LevelDebug, fmt.Sprintf(format, args...))
}
func (l logger) Error(msg string) { l.emit(slog.LevelWarn, msg) }
func (l logger) Errorf(format string, args ...any) {
	l.emit(slog.LevelWarn, fmt.Sprintf(format, args...))
}
