// Package logging builds the exporter's zap logger from the --log.level
// and --log.format flags, and bridges it to log/slog for libraries that
// log through slog (exporter-toolkit).
package logging

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	zaplogfmt "github.com/jsternberg/zap-logfmt"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"
	"go.uber.org/zap/zapcore"
)

// Levels are the accepted --log.level values.
var Levels = []string{"debug", "info", "warn", "error"}

// Formats are the accepted --log.format values.
var Formats = []string{"logfmt", "json"}

// Errors of New for a level or format it does not know; the error wraps
// one and quotes the value.
var (
	ErrUnknownLevel  = errors.New("unknown level")
	ErrUnknownFormat = errors.New("unknown format")
)

// New returns a logger writing to w at the given level and format.
func New(level, format string, w io.Writer) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil || level == "" {
		return nil, fmt.Errorf("log level: %w %q (want debug, info, warn or error)", ErrUnknownLevel, level)
	}
	cfg := zapcore.EncoderConfig{
		TimeKey:        "ts",
		LevelKey:       "level",
		NameKey:        "logger",
		CallerKey:      "caller",
		MessageKey:     "msg",
		StacktraceKey:  "stacktrace",
		LineEnding:     zapcore.DefaultLineEnding,
		EncodeLevel:    zapcore.LowercaseLevelEncoder,
		EncodeTime:     zapcore.TimeEncoderOfLayout(time.RFC3339Nano),
		EncodeDuration: zapcore.StringDurationEncoder,
		EncodeCaller:   zapcore.ShortCallerEncoder,
	}
	var enc zapcore.Encoder
	switch format {
	case "logfmt":
		enc = zaplogfmt.NewEncoder(cfg)
	case "json":
		enc = zapcore.NewJSONEncoder(cfg)
	default:
		return nil, fmt.Errorf("log format: %w %q (want logfmt or json)", ErrUnknownFormat, format)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core, zap.AddCaller()), nil
}

// Slog returns a slog.Logger that writes through l.
func Slog(l *zap.Logger) *slog.Logger {
	return slog.New(zapslog.NewHandler(l.Core(), zapslog.WithCaller(true)))
}
