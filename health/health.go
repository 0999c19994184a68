// Package health serves the endpoints monitors and orchestrators poll:
// liveness, the pool snapshot, the admission state, and readiness.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"chatql/admission"
	"chatql/dbpool"
)

// ReadyTimeout bounds the readiness probe's SELECT 1, waiting included.
const ReadyTimeout = 2 * time.Second

// Reasons the readiness probe reports with a 503.
const (
	ReasonPoolExhausted = "pool exhausted"
	ReasonUnreachable   = "database unreachable"
	ReasonDatabaseError = "database error"
	ReasonNoSigningKeys = "no signing keys"
)

// Check is a readiness condition besides the database: ok, or the reason
// it is not (a configured key set that has never loaded, say). It must be
// cheap and must not block.
type Check func() (reason string, ok bool)

// Register adds the health endpoints to mux:
//
//	GET /health          200 {"status":"ok"} while the process is up; no database access
//	GET /health/db-pool  200 with the pool snapshot; never borrows a connection
//	GET /health/ready    200 when every check holds and SELECT 1 through the pool succeeds within 2 s, else 503 with the reason
//
// guard, when not nil, wraps /health/db-pool (METRICS_TOKEN protects it
// like /metrics); liveness and readiness stay open for orchestrators.
func Register(mux *http.ServeMux, pool *dbpool.Pool, logger *slog.Logger, guard func(http.Handler) http.Handler, checks ...Check) {
	if guard == nil {
		guard = func(h http.Handler) http.Handler { return h }
	}
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET /health/db-pool", guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, pool.Stats())
	})))
	mux.HandleFunc("GET /health/ready", func(w http.ResponseWriter, r *http.Request) {
		for _, check := range checks {
			if reason, ok := check(); !ok {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": reason})
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), ReadyTimeout)
		defer cancel()
		if err := pool.Ping(ctx); err != nil {
			reason := Reason(err)
			logger.Warn("readiness check failed", "reason", reason, "err", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": reason})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

// Reason names why a readiness ping failed: no connection came in time
// (the pool is exhausted), or the database could not be reached.
func Reason(err error) string {
	switch {
	case errors.Is(err, dbpool.ErrUnavailable):
		return ReasonUnreachable
	case errors.Is(err, dbpool.ErrPoolTimeout), errors.Is(err, context.DeadlineExceeded):
		return ReasonPoolExhausted
	default:
		return ReasonDatabaseError
	}
}

// RegisterAdmission adds GET /health/admission: the admission
// controller's limits, what runs and waits now, and its totals, behind
// guard like /health/db-pool.
func RegisterAdmission(mux *http.ServeMux, c *admission.Controller, guard func(http.Handler) http.Handler) {
	if guard == nil {
		guard = func(h http.Handler) http.Handler { return h }
	}
	mux.Handle("GET /health/admission", guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, c.Stats())
	})))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
