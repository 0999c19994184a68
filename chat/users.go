package chat

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"chatql/auth"
	"chatql/dbpool"
)

// userColumns reads a user row; a NULL email (no email) reads as "".
const userColumns = "u.id, coalesce(u.email, ''), u.display_name, u.created_at"

func scanUser(row pgx.CollectableRow) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Email, &u.DisplayName, &u.CreatedAt)
	return u, err
}

// UserByID loads one user; ok is false when there is none. The viewer
// check of every operation calls it: PostgreSQL plans UsersByID's
// `= ANY($1)` for ten rows whatever the array holds, so with one id it
// plans the statement anew on every call, where an equality is planned
// once (48 against 77 µs of PostgreSQL's CPU a call).
func UserByID(ctx context.Context, db dbpool.DB, id string) (u User, ok bool, err error) {
	u, err = dbpool.CollectOne(ctx, db, "SELECT "+userColumns+" FROM users u WHERE u.id = $1", []any{id}, scanUser)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, false, nil
	}
	if err != nil {
		return User{}, false, fmt.Errorf("load user: %w", err)
	}
	return u, true, nil
}

// UsersByID loads users by id; ids with no user are absent from the map.
// Any user may be looked up: a profile reveals no conversation.
func UsersByID(ctx context.Context, db dbpool.DB, ids []string) (map[string]User, error) {
	users, err := dbpool.Collect(ctx, db,
		"SELECT "+userColumns+" FROM users u WHERE u.id = ANY($1::uuid[])", []any{ids}, scanUser)
	if err != nil {
		return nil, fmt.Errorf("load users: %w", err)
	}
	out := make(map[string]User, len(users))
	for _, u := range users {
		out[u.ID] = u
	}
	return out, nil
}

// SignUpInput is what a new account needs.
type SignUpInput struct {
	Email, Password, DisplayName string
}

// Account is a validated sign-up with its password hashed, ready to store.
type Account struct {
	email, displayName, hash string
}

// NewAccount validates a sign-up and hashes its password with passwords
// (under its concurrency limit: auth.ErrBusy when that is full, ctx's
// error if ctx ends while it waits). It needs no database: call it before
// borrowing a connection, so that the deliberately slow hashing holds
// none. Invalid input is refused before any hashing.
func NewAccount(ctx context.Context, passwords *auth.Passwords, in SignUpInput) (Account, error) {
	email, err := normalizeEmail("email", in.Email)
	if err != nil {
		return Account{}, err
	}
	name := strings.TrimSpace(in.DisplayName)
	if err := textLength("displayName", name, 1, MaxDisplayNameLength); err != nil {
		return Account{}, err
	}
	if err := textLength("password", in.Password, MinPasswordLength, 1<<10); err != nil {
		return Account{}, err
	}
	hash, err := passwords.Hash(ctx, in.Password)
	if errors.Is(err, auth.ErrPasswordTooLong) {
		return Account{}, badInput("password", "must be at most 72 bytes")
	}
	if err != nil {
		return Account{}, err
	}
	return Account{email: email, displayName: name, hash: hash}, nil
}

// CreateUser stores an account. A taken email (in any case) is ErrConflict.
func CreateUser(ctx context.Context, db dbpool.DB, a Account) (User, error) {
	u, err := dbpool.CollectOne(ctx, db, `
		INSERT INTO users AS u (email, display_name, password_hash) VALUES ($1, $2, $3)
		RETURNING `+userColumns, []any{a.email, a.displayName, a.hash}, scanUser)
	if isUniqueViolation(err) {
		return User{}, fmt.Errorf("email %q is already registered: %w", a.email, ErrConflict)
	}
	if err != nil {
		return User{}, fmt.Errorf("insert user: %w", err)
	}
	return u, nil
}

// Credentials are what a sign-in checks a password against.
type Credentials struct {
	user User
	hash *string // nil: no such user, or one from Supabase without a password
}

// LookupCredentials loads the user with email (in any case), if any.
func LookupCredentials(ctx context.Context, db dbpool.DB, email string) (Credentials, error) {
	if _, err := normalizeEmail("email", email); err != nil {
		return Credentials{}, nil // no account can have it
	}
	c, err := dbpool.CollectOne(ctx, db,
		"SELECT "+userColumns+", u.password_hash FROM users u WHERE lower(u.email) = lower($1)",
		[]any{strings.TrimSpace(email)}, func(row pgx.CollectableRow) (Credentials, error) {
			var c Credentials
			err := row.Scan(&c.user.ID, &c.user.Email, &c.user.DisplayName, &c.user.CreatedAt, &c.hash)
			return c, err
		})
	if errors.Is(err, pgx.ErrNoRows) {
		return Credentials{}, nil
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("load user: %w", err)
	}
	return c, nil
}

// PasswordChecker checks passwords under the server's bcrypt limit: an
// *auth.Passwords, or an *auth.Turn admitted before the lookup.
type PasswordChecker interface {
	Check(ctx context.Context, hash, password string) (bool, error)
	DummyCheck(ctx context.Context, password string) error
}

// Check compares password with the stored hash, with passwords (under its
// concurrency limit). An unknown email and a wrong password are both
// ErrBadCredentials, and take the same time; any other error (auth.ErrBusy,
// ctx's) is no verdict. It needs no database: run it after giving the
// connection back.
func (c Credentials) Check(ctx context.Context, passwords PasswordChecker, password string) (User, error) {
	if c.hash == nil {
		if err := passwords.DummyCheck(ctx, password); err != nil {
			return User{}, err
		}
		return User{}, ErrBadCredentials
	}
	ok, err := passwords.Check(ctx, *c.hash, password)
	if err != nil {
		return User{}, err
	}
	if !ok {
		return User{}, ErrBadCredentials
	}
	return c.user, nil
}

// Provision creates the user row for a Supabase identity on its first
// request. Concurrent first requests create one row; an email already used
// by another account is ErrConflict. A token without an email (an
// anonymous or phone sign-in) gives a user whose email is NULL.
func Provision(ctx context.Context, db dbpool.DB, id auth.Identity) (User, error) {
	// One with an email must carry a real one, by signUp's rules.
	var email *string
	if e := strings.TrimSpace(id.Email); e != "" {
		e, err := normalizeEmail("email", e)
		if err != nil {
			return User{}, badInput("email", "the access token's email is not an email address")
		}
		email = &e
	}
	// The name is only a default the user can see (and change with
	// updateProfile): never a reason to fail.
	name := strings.TrimSpace(strings.ReplaceAll(strings.ToValidUTF8(id.Name, ""), "\x00", ""))
	switch {
	case name != "":
	case email != nil:
		name, _, _ = strings.Cut(*email, "@")
	case id.Anonymous:
		name = "Guest " + id.UserID[:8]
	default:
		name = "User " + id.UserID[:8]
	}
	if r := []rune(name); len(r) > MaxDisplayNameLength {
		name = string(r[:MaxDisplayNameLength])
	}
	if _, err := db.Exec(ctx, `
		INSERT INTO users (id, email, display_name) VALUES ($1, $2, $3)
		ON CONFLICT DO NOTHING`, id.UserID, email, name); err != nil {
		return User{}, fmt.Errorf("provision user: %w", err)
	}
	users, err := UsersByID(ctx, db, []string{id.UserID})
	if err != nil {
		return User{}, err
	}
	u, ok := users[id.UserID]
	if !ok {
		return User{}, fmt.Errorf("%w: the access token's email belongs to another account", ErrConflict)
	}
	return u, nil
}

// CheckDisplayName trims a display name and checks it by signUp's rules.
// It needs no database.
func CheckDisplayName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if err := textLength("displayName", name, 1, MaxDisplayNameLength); err != nil {
		return "", err
	}
	return name, nil
}

// UpdateDisplayName sets the display name of user id (checked with
// CheckDisplayName first) and returns the user.
func UpdateDisplayName(ctx context.Context, db dbpool.DB, id, name string) (User, error) {
	u, err := dbpool.CollectOne(ctx, db,
		"UPDATE users AS u SET display_name = $2 WHERE u.id = $1 RETURNING "+userColumns,
		[]any{id, name}, scanUser)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("update display name: %w", err)
	}
	return u, nil
}
