package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// maxPasswordBytes is bcrypt's input limit; it ignores anything past it.
const maxPasswordBytes = 72

// ErrPasswordTooLong is returned by HashPassword for a password over 72
// bytes. bcrypt would otherwise ignore everything past the 72nd byte, so two
// long passwords sharing a prefix would be the same password.
var ErrPasswordTooLong = errors.New("password longer than 72 bytes")

// HashPassword returns the bcrypt hash (at bcrypt.DefaultCost) of password.
// It does not judge password strength; that policy is the caller's.
func HashPassword(password string) (string, error) {
	if len(password) > maxPasswordBytes {
		return "", ErrPasswordTooLong
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// CheckPassword reports whether password matches hash. A malformed hash, or
// a password HashPassword would have refused, is simply a mismatch. The
// comparison is constant-time in the hash.
func CheckPassword(hash, password string) bool {
	if len(password) > maxPasswordBytes {
		// Refuse rather than let bcrypt compare only the first 72 bytes.
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}

// dummyHash is the hash DummyCheck compares against: a random password,
// hashed once per process on first use (a bcrypt hash costs tens of
// milliseconds, too much to pay at import time). It is never modified.
var dummyHash = sync.OnceValue(func() string {
	h, err := bcrypt.GenerateFromPassword([]byte(rand.Text()), bcrypt.DefaultCost)
	if err != nil {
		// Only reachable if DefaultCost or the password length were
		// invalid, both of which are constants here.
		panic(fmt.Sprintf("auth: hash dummy password: %v", err))
	}
	return string(h)
})

// ErrBusy is returned by Passwords when as many hashes and checks as it
// queues are already waiting: the attempt is refused at once rather than
// queued behind work that would take longer than a client waits.
var ErrBusy = errors.New("auth: too many password hashes and checks in progress")

// Passwords runs bcrypt, the server's costliest work by design (tens of
// milliseconds of CPU per hash or check), under a concurrency limit, so
// that a flood of sign-ins cannot take every core from the other requests.
// Up to a fixed number run at once; a short queue waits behind them (with
// the caller's context); beyond that Hash and Check fail with ErrBusy at
// once. Admit takes the place ahead of the work, for a caller that has
// something to do first. Safe for concurrent use.
//
// HashPassword and CheckPassword are the same work without the limit, for
// callers outside request handling (fixtures, tools).
type Passwords struct {
	// admitted holds a token per call in the gate, running or waiting;
	// running, one per call running.
	admitted, running chan struct{}
}

// NewPasswords returns a Passwords running at most concurrency (at least
// 1) hashes and checks at once, with up to queue (at least 0) more
// waiting.
func NewPasswords(concurrency, queue int) *Passwords {
	concurrency, queue = max(1, concurrency), max(0, queue)
	return &Passwords{
		admitted: make(chan struct{}, concurrency+queue),
		running:  make(chan struct{}, concurrency),
	}
}

// DefaultPasswords returns the server's limit: half of the cores Go uses
// (GOMAXPROCS), at least one, and a queue twice that, so that the other
// half stays for everything else and a waiting check starts within about
// three checks' time.
func DefaultPasswords() *Passwords {
	n := max(1, runtime.GOMAXPROCS(0)/2)
	return NewPasswords(n, 2*n)
}

// Admit takes a place in the gate without waiting, or fails with ErrBusy
// when the queue is full: a caller with work to do before its hash or
// check (a sign-in's database lookup) learns that it would be refused
// before doing it. The Turn's Hash, Check or DummyCheck then waits for a
// running slot; Release gives an unused place back.
func (p *Passwords) Admit() (*Turn, error) {
	select {
	case p.admitted <- struct{}{}:
		return &Turn{p: p}, nil
	default:
		return nil, ErrBusy
	}
}

// Acquire takes a place in the gate and waits for a running slot with
// ctx, as Hash and Check do, for work of the caller's own under the same
// limit: ErrBusy at once when the queue is full, ctx's error if ctx ends
// first. release must be called; it is idempotent.
func (p *Passwords) Acquire(ctx context.Context) (release func(), err error) {
	t, err := p.Admit()
	if err != nil {
		return nil, err
	}
	if err := t.wait(ctx); err != nil {
		t.Release()
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(t.end) }, nil
}

// InGate is the number of hashes and checks running or waiting.
func (p *Passwords) InGate() int { return len(p.admitted) }

// Hash is HashPassword under the limit. A password over 72 bytes is
// ErrPasswordTooLong without waiting.
func (p *Passwords) Hash(ctx context.Context, password string) (string, error) {
	if len(password) > maxPasswordBytes {
		return "", ErrPasswordTooLong
	}
	t, err := p.Admit()
	if err != nil {
		return "", err
	}
	return t.Hash(ctx, password)
}

// Check is CheckPassword under the limit: a mismatch is (false, nil); an
// error (ErrBusy, ctx's) means no verdict.
func (p *Passwords) Check(ctx context.Context, hash, password string) (bool, error) {
	t, err := p.Admit()
	if err != nil {
		return false, err
	}
	return t.Check(ctx, hash, password)
}

// DummyCheck does the work of one Check and discards the result. A
// sign-in for an email with no account (or no password) calls it so that
// it takes as long as a wrong password, and response times do not reveal
// which emails are registered. It fails only as Check does.
func (p *Passwords) DummyCheck(ctx context.Context, password string) error {
	t, err := p.Admit()
	if err != nil {
		return err
	}
	return t.DummyCheck(ctx, password)
}

// Turn is a place in a Passwords gate taken by Admit, for one Hash, Check
// or DummyCheck, each of which ends the turn. It belongs to one goroutine.
type Turn struct {
	p     *Passwords
	state turnState
}

type turnState int

const (
	turnAdmitted turnState = iota
	turnRunning
	turnEnded
)

// errTurnEnded is returned by a Turn used twice: a bug in the caller.
var errTurnEnded = errors.New("auth: password turn already used")

// wait moves the turn from the queue to a running slot, or returns ctx's
// error.
func (t *Turn) wait(ctx context.Context) error {
	if t.state != turnAdmitted {
		return errTurnEnded
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case t.p.running <- struct{}{}:
		t.state = turnRunning
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// end gives back the running slot, if any, and the place.
func (t *Turn) end() {
	switch t.state {
	case turnRunning:
		<-t.p.running
		fallthrough
	case turnAdmitted:
		<-t.p.admitted
	}
	t.state = turnEnded
}

// Release gives the place back if the turn was not used; afterwards, and
// after use, it does nothing.
func (t *Turn) Release() { t.end() }

// Hash is Passwords.Hash on this turn.
func (t *Turn) Hash(ctx context.Context, password string) (string, error) {
	defer t.end()
	if len(password) > maxPasswordBytes {
		return "", ErrPasswordTooLong
	}
	if err := t.wait(ctx); err != nil {
		return "", err
	}
	return HashPassword(password)
}

// Check is Passwords.Check on this turn.
func (t *Turn) Check(ctx context.Context, hash, password string) (bool, error) {
	defer t.end()
	if err := t.wait(ctx); err != nil {
		return false, err
	}
	return CheckPassword(hash, password), nil
}

// DummyCheck is Passwords.DummyCheck on this turn.
func (t *Turn) DummyCheck(ctx context.Context, password string) error {
	_, err := t.Check(ctx, dummyHash(), password)
	return err
}
