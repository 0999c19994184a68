package dbpool

import (
	"context"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
	"github.com/jackc/pgx/v5/tracelog"
)

// hiddenParameters stands in for a statement's arguments in the echo log
// unless Config.EchoParameters is set.
const hiddenParameters = "(hidden; DB_ECHO_PARAMETERS=true shows them)"

// echoTracer logs every statement through slog, the way SQLAlchemy's
// echo=True does: text, duration and the command tag (rows). Arguments carry
// password hashes and message bodies, so they are shown only with
// showParameters (SQLAlchemy's hide_parameters, inverted to default safe).
func echoTracer(logger *slog.Logger, showParameters bool) *tracelog.TraceLog {
	return &tracelog.TraceLog{
		LogLevel: tracelog.LogLevelInfo,
		Logger: tracelog.LoggerFunc(func(ctx context.Context, level tracelog.LogLevel, msg string, data map[string]any) {
			attrs := make([]slog.Attr, 0, len(data))
			for k, v := range data {
				if k == "args" && !showParameters {
					v = hiddenParameters
				}
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
