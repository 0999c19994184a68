package graph

// The guards on signIn and signUp, whose bcrypt is the costliest work a
// client can ask for and whose answer is what a password guesser wants:
// one of them per operation (oneSignIn), failed sign-ins limited per email
// and client address, sign-ups per client address (signInGuard), and
// bcrypt itself under a concurrency limit (auth.Passwords).

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"chatql/admission"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"chatql/auth"
	"chatql/chat"
	"chatql/ratelimit"
	"chatql/web"
)

// SignUpWindow is the window of SignInLimits.MaxSignUpsPerAddress.
const SignUpWindow = time.Hour

// SignInLimits bound password guessing and account creation. A zero count
// means no limit. The counts are per process (see package ratelimit).
type SignInLimits struct {
	// MaxFailures is how many failed sign-ins one email may have from one
	// client address (ClientKey) per Window.
	MaxFailures int
	// MaxFailuresPerEmail is how many failed sign-ins one email may have
	// from all addresses together per Window: looser than MaxFailures, so
	// that an attacker at one address cannot lock the owner out, yet a
	// bound on guessing from many addresses.
	MaxFailuresPerEmail int
	Window              time.Duration
	// MaxSignUpsPerAddress is how many sign-ups one client address may
	// attempt per SignUpWindow.
	MaxSignUpsPerAddress int
}

// oneSignIn refuses an operation with more than one signIn or signUp root
// field before it runs: aliases would otherwise run bcrypt once each, one
// request testing dozens of passwords, and the one alias without an error
// would tell which was right. Fields are counted as they will run: after
// @skip and @include, through fragments, identical fields merged.
type oneSignIn struct{}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = oneSignIn{}

func (oneSignIn) ExtensionName() string { return "OneSignIn" }

func (oneSignIn) Validate(graphql.ExecutableSchema) error { return nil }

func (oneSignIn) MutateOperationContext(_ context.Context, opCtx *graphql.OperationContext) *gqlerror.Error {
	if opCtx.Operation == nil || opCtx.Operation.Operation != ast.Mutation {
		return nil
	}
	n := 0
	for _, f := range graphql.CollectFields(opCtx, opCtx.Operation.SelectionSet, mutationImplementors) {
		if f.Name == "signIn" || f.Name == "signUp" {
			n++
		}
	}
	if n <= 1 {
		return nil
	}
	err := gqlerror.Errorf("at most one signIn or signUp per operation (this one has %d): send each in a request of its own", n)
	errcode.Set(err, errcode.ValidationFailed)
	return err
}

// rateLimitedError refuses an attempt over a limit; retryAfter is when the
// client may try again.
type rateLimitedError struct {
	message    string
	retryAfter time.Duration
}

func (e *rateLimitedError) Error() string { return e.message }

// retryAfter reports how long a client refused with err should wait:
// the limit's own time, or a second for a full password gate.
func retryAfter(err error) (time.Duration, bool) {
	var limited *rateLimitedError
	var refused *admission.RefusedError
	switch {
	case errors.As(err, &limited):
		return limited.retryAfter, true
	case errors.As(err, &refused):
		return refused.RetryAfter, true
	case errors.Is(err, auth.ErrBusy):
		return time.Second, true
	}
	return 0, false
}

// signInGuard holds the sign-in and sign-up limits of one handler.
type signInGuard struct {
	failures, failuresPerEmail, signUps *ratelimit.Limiter
}

func newSignInGuard(l SignInLimits, now func() time.Time) *signInGuard {
	return &signInGuard{
		failures:         ratelimit.New(ratelimit.Config{Limit: l.MaxFailures, Window: l.Window, Now: now}),
		failuresPerEmail: ratelimit.New(ratelimit.Config{Limit: l.MaxFailuresPerEmail, Window: l.Window, Now: now}),
		signUps:          ratelimit.New(ratelimit.Config{Limit: l.MaxSignUpsPerAddress, Window: SignUpWindow, Now: now}),
	}
}

// signInAttempt is one sign-in, counted as a failure from the start (so
// that concurrent attempts cannot overrun the limits) until end says how
// it went.
type signInAttempt struct {
	g           *signInGuard
	pair, email string
}

// beginSignIn counts a sign-in for email from ctx's client, or refuses it
// with a *rateLimitedError when either limit is reached. It runs before
// anything else, so a refused attempt costs no bcrypt and no connection,
// and is refused whatever its password: otherwise the answer to the right
// password would still tell it apart.
func (g *signInGuard) beginSignIn(ctx context.Context, email string) (signInAttempt, error) {
	email = emailKey(email)
	a := signInAttempt{g: g, pair: email + "\x00" + web.ClientKey(ctx), email: email}
	if ok, wait := g.failuresPerEmail.Allow(a.email); !ok {
		return signInAttempt{}, &rateLimitedError{retryAfter: wait,
			message: fmt.Sprintf("too many failed sign-ins for this email: retry in %s seconds", web.RetryAfterSeconds(wait))}
	}
	if ok, wait := g.failures.Allow(a.pair); !ok {
		g.failuresPerEmail.Undo(a.email)
		return signInAttempt{}, &rateLimitedError{retryAfter: wait,
			message: fmt.Sprintf("too many failed sign-ins for this email from your address: retry in %s seconds", web.RetryAfterSeconds(wait))}
	}
	return a, nil
}

// end settles the attempt by its outcome: a wrong email or password stays
// counted; a success forgets this address's failures for the email (its
// owner is back) and gives back its place in the per-email count; any
// other error (the password gate full, the client gone, the database
// down) judged no password and gives back both.
func (a signInAttempt) end(err error) {
	switch {
	case err == nil:
		a.g.failures.Reset(a.pair)
		a.g.failuresPerEmail.Undo(a.email)
	case errors.Is(err, chat.ErrBadCredentials):
	default:
		a.g.failures.Undo(a.pair)
		a.g.failuresPerEmail.Undo(a.email)
	}
}

// beginSignUp counts a sign-up from ctx's client, or refuses it with a
// *rateLimitedError. The returned undo gives the attempt back, for one
// that hashed nothing (invalid input, the password gate full).
func (g *signInGuard) beginSignUp(ctx context.Context) (undo func(), err error) {
	key := web.ClientKey(ctx)
	if ok, wait := g.signUps.Allow(key); !ok {
		return nil, &rateLimitedError{retryAfter: wait,
			message: fmt.Sprintf("too many sign-ups from your address: retry in %s seconds", web.RetryAfterSeconds(wait))}
	}
	return func() { g.signUps.Undo(key) }, nil
}

// maxEmailKey bounds an email used as a key: no account's email is longer
// (chat's rule), so longer ones need not be told apart.
const maxEmailKey = 254

// emailKey is email as sign-in looks it up: trimmed, in any case.
func emailKey(email string) string {
	email = strings.ToLower(strings.TrimSpace(email))
	if len(email) > maxEmailKey {
		email = email[:maxEmailKey]
	}
	return email
}
