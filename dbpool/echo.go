package dbpool

import (
	"context"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
	"github.com/jackc/pgx/v5/tracelog"
)

// echoTracer logs every statement through slog, the way SQLAlchemy's
// echo=True does: text, arguments, duration and the command tag (rows).
func echoTracer(logger *slog.Logger) *tracelog.TraceLog {
	return &tracelog.TraceLog{
		LogLevel: tracelog.LogLevelInfo,
		Logger: tracelog.LoggerFunc(func(ctx context.Context, level tracelog.LogLevel, msg string, data map[string]any) {
			attrs := make([]slog.Attr, 0, len(data))
			for k, v := range data {
				attrs = append(attrs, slog.Any(k, v))
			}
			logger.LogAttrs(ctx, slogLevel(level), "sql "+msg, attrs...)
		}),
	}
}

func slogLevel(l tracelog.LogLevel) slog.Level {
	switch {
	case l <= tracelog.LogLevelError:
		return slog.LevelError
	case l == tracelog.LogLevelWarn:
		return slog.LevelWarn
	case l == tracelog.LogLevelInfo:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}

// combineTracers returns one tracer that calls both; either may be nil.
func combineTracers(a pgx.QueryTracer, b pgx.QueryTracer) pgx.QueryTracer {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return multitracer.New(a, b)
}
