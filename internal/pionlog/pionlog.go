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

// NewLogger implements logging.LoggerFactory.
func (f factory) NewLogger(scope string) logging.LeveledLogger {
	return logger{f.log.With("pion", scope)}
}

// logger implements logging.LeveledLogger.
type logger struct{ log *slog.Logger }

func (l logger) emit(level slog.Level, msg string) {
	l.log.Log(context.Background(), level, msg)
}

func (l logger) emitf(level slog.Level, format string, args []any) {
	if l.log.Enabled(context.Background(), level) {
		l.emit(level, fmt.Sprintf(format, args...))
	}
}

// Trace drops msg: pion's traces are per packet.
func (l logger) Trace(msg string) {}

// Tracef drops the message.
func (l logger) Tracef(format string, args ...any) {}

// Debug logs at debug level.
func (l logger) Debug(msg string) { l.emit(slog.LevelDebug, msg) }

// Debugf logs at debug level.
func (l logger) Debugf(format string, args ...any) { l.emitf(slog.LevelDebug, format, args) }

// Info logs at debug level.
func (l logger) Info(msg string) { l.emit(slog.LevelDebug, msg) }

// Infof logs at debug level.
func (l logger) Infof(format string, args ...any) { l.emitf(slog.LevelDebug, format, args) }

// Warn logs at debug level.
func (l logger) Warn(msg string) { l.emit(slog.LevelDebug, msg) }

// Warnf logs at debug level.
func (l logger) Warnf(format string, args ...any) { l.emitf(slog.LevelDebug, format, args) }

// Error logs a warning.
func (l logger) Error(msg string) { l.emit(slog.LevelWarn, msg) }

// Errorf logs a warning.
func (l logger) Errorf(format string, args ...any) { l.emitf(slog.LevelWarn, format, args) }
