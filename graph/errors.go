package graph

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"

	"chatql/admission"

	"github.com/99designs/gqlgen/graphql"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"chatql/auth"
	"chatql/chat"
	"chatql/dbpool"
	"chatql/web"
)

// Error codes: every error a client sees carries one in extensions.code.
// Request-level errors keep gqlgen's codes (GRAPHQL_PARSE_FAILED,
// GRAPHQL_VALIDATION_FAILED, COMPLEXITY_LIMIT_EXCEEDED,
// PERSISTED_QUERY_NOT_FOUND); the README documents both sets.
const (
	CodeUnauthenticated = "UNAUTHENTICATED"
	CodeForbidden       = "FORBIDDEN"
	CodeNotFound        = "NOT_FOUND"
	CodeBadUserInput    = "BAD_USER_INPUT"
	CodeConflict        = "CONFLICT"
	CodePoolTimeout     = "DB_POOL_TIMEOUT"
	CodeUnavailable     = "DB_UNAVAILABLE"
	CodeDBTimeout       = "DB_TIMEOUT"
	CodeInternal        = "INTERNAL"
	// CodeRealtimeDisabled answers messageAdded on a server run with
	// REALTIME=off.
	CodeRealtimeDisabled = "REALTIME_DISABLED"
	// CodeTooManyStatements: the operation (or subscription event) needed
	// more SQL statements than DB_MAX_STATEMENTS allows.
	CodeTooManyStatements = "TOO_MANY_STATEMENTS"
	// CodeRateLimited: a sign-in or sign-up over its client's limit, or
	// one the password gate has no room for. HTTP 429 with Retry-After,
	// and extensions.retryAfter (seconds) for websocket clients.
	CodeRateLimited = "RATE_LIMITED"
)

// errSignInRequired is returned where a viewer is needed and none signed in.
var errSignInRequired = fmt.Errorf("sign-in required: %w", auth.ErrUnauthenticated)

// errAnonymousRefused refuses a Supabase anonymous sign-in when the server
// does not accept them (AUTH_ALLOW_ANONYMOUS=false).
var errAnonymousRefused = errors.New("anonymous sign-ins are not accepted by this server")

// classify maps an error from any layer to its code and the message a
// client may see. Only classified errors keep their own message.
func classify(err error) (code, message string) {
	var input *chat.InputError
	var limited *rateLimitedError
	var refused *admission.RefusedError
	switch {
	case errors.As(err, &refused) && refused.Reason == admission.ReasonSubscriptions:
		return CodeRateLimited, "too many subscriptions open for this client: end one before starting another"
	case errors.As(err, &refused) && errors.Is(err, admission.ErrServerBusy):
		return CodeOverloaded, "the server is overloaded: retry after the time in Retry-After (extensions.retryAfter)"
	case errors.As(err, &refused):
		return CodeRateLimited, "too many operations of this client at once: retry after the time in Retry-After (extensions.retryAfter)"
	case errors.As(err, &input):
		return CodeBadUserInput, input.Error()
	case errors.As(err, &limited):
		return CodeRateLimited, limited.Error()
	case errors.Is(err, auth.ErrBusy):
		return CodeRateLimited, "the server is busy checking passwords: retry in a second"
	case errors.Is(err, errAnonymousRefused):
		return CodeForbidden, "anonymous sign-ins are not accepted by this server: sign in with an account"
	case errors.Is(err, errNoRealtime):
		return CodeRealtimeDisabled, "this server does not deliver messageAdded (REALTIME=off); poll the messages query instead"
	case errors.Is(err, chat.ErrNotFound):
		return CodeNotFound, "not found"
	case errors.Is(err, chat.ErrConflict):
		return CodeConflict, err.Error() // conflicts name what collided, nothing secret
	case errors.Is(err, chat.ErrBadCredentials):
		return CodeUnauthenticated, chat.ErrBadCredentials.Error()
	case errors.Is(err, errSignInRequired):
		return CodeUnauthenticated, "sign-in required: send Authorization: Bearer <token>"
	case errors.Is(err, auth.ErrUnauthenticated):
		return CodeUnauthenticated, "invalid or expired access token"
	case errors.Is(err, dbpool.ErrTooManyStatements):
		return CodeTooManyStatements, tooManyStatements(err)
	case errors.Is(err, dbpool.ErrPoolTimeout):
		return CodePoolTimeout, "no database connection became available in time; retry later"
	case isStatementTimeout(err):
		return CodeDBTimeout, "a database statement ran longer than the server allows; the operation was stopped"
	case errors.Is(err, dbpool.ErrUnavailable), errors.Is(err, dbpool.ErrClosed), dbpool.IsConnectionLost(err):
		return CodeUnavailable, "the database is unavailable; retry later"
	}
	return CodeInternal, "internal error"
}

// tooManyStatements is the message of an operation stopped by the
// statement budget: it names the budget, so that a client knows how far
// to split the operation.
func tooManyStatements(err error) string {
	var budget *dbpool.StatementBudgetError
	if errors.As(err, &budget) {
		return fmt.Sprintf("this operation needs more than %d database statements, the server's limit per operation: split it into smaller operations", budget.Max)
	}
	return "this operation needs more database statements than the server allows per operation: split it into smaller operations"
}

// isStatementTimeout reports a statement cancelled by statement_timeout
// (SQLSTATE 57014; a cancel for a client that left ends the same way, but
// then nobody reads the code).
func isStatementTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57014"
}

// errorPresenter gives every error a code, and logs the ones a client cannot
// do anything about with the details it must not see.
func errorPresenter(logger *slog.Logger) graphql.ErrorPresenterFunc {
	return func(ctx context.Context, err error) *gqlerror.Error {
		gqlErr := graphql.DefaultErrorPresenter(ctx, err)
		if gqlErr.Err == nil {
			// gqlgen's own request-level error (validation, APQ, a body it
			// could not decode, introspection off): the client's mistake.
			if gqlErr.Extensions["code"] == nil {
				if gqlErr.Extensions == nil {
					gqlErr.Extensions = map[string]any{}
				}
				gqlErr.Extensions["code"] = CodeBadUserInput
			}
			return gqlErr
		}
		cause := gqlErr.Err
		code, message := classify(cause)
		// A client that went away needs no log line for its aborted work.
		if (code == CodeInternal || code == CodeUnavailable) && ctx.Err() == nil {
			logger.ErrorContext(ctx, "operation error", "code", code, "path", gqlErr.Path.String(), "err", cause)
		}
		gqlErr.Message = message
		if gqlErr.Extensions == nil {
			gqlErr.Extensions = map[string]any{}
		}
		gqlErr.Extensions["code"] = code
		var input *chat.InputError
		if errors.As(cause, &input) {
			gqlErr.Extensions["field"] = input.Field
		}
		if wait, ok := retryAfter(cause); ok {
			// Websocket clients see no Retry-After header.
			gqlErr.Extensions["retryAfter"], _ = strconv.Atoi(web.RetryAfterSeconds(wait))
		}
		return gqlErr
	}
}

// errPanic is what a recovered resolver panic becomes.
var errPanic = errors.New("resolver panic")

func recoverFunc(logger *slog.Logger) graphql.RecoverFunc {
	return func(ctx context.Context, p any) error {
		path := ""
		if graphql.HasOperationContext(ctx) {
			if fc := graphql.GetFieldContext(ctx); fc != nil {
				path = fc.Path().String()
			}
		}
		logger.ErrorContext(ctx, "panic in resolver", "panic", p, "path", path, "stack", string(debug.Stack()))
		return fmt.Errorf("%w: %v", errPanic, p)
	}
}
