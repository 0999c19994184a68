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

const userColumns = "u.id::text, u.email, u.display_name, u.created_at"

func scanUser(row pgx.CollectableRow) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Email, &u.DisplayName, &u.CreatedAt)
	return u, err
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

// SignUp creates an account. A taken email (in any case) is ErrConflict.
func SignUp(ctx context.Context, db dbpool.DB, in SignUpInput) (User, error) {
	email, err := normalizeEmail("email", in.Email)
	if err != nil {
		return User{}, err
	}
	name := strings.TrimSpace(in.DisplayName)
	if err := textLength("displayName", name, 1, MaxDisplayNameLength); err != nil {
		return User{}, err
	}
	if err := textLength("password", in.Password, MinPasswordLength, 1<<10); err != nil {
		return User{}, err
	}
	hash, err := auth.HashPassword(in.Password)
	if errors.Is(err, auth.ErrPasswordTooLong) {
		return User{}, badInput("password", "must be at most 72 bytes")
	}
	if err != nil {
		return User{}, err
	}
	u, err := dbpool.CollectOne(ctx, db, `
		INSERT INTO users AS u (email, display_name, password_hash) VALUES ($1, $2, $3)
		RETURNING `+userColumns, []any{email, name, hash}, scanUser)
	if isUniqueViolation(err) {
		return User{}, fmt.Errorf("email %q is already registered: %w", email, ErrConflict)
	}
	if err != nil {
		return User{}, fmt.Errorf("insert user: %w", err)
	}
	return u, nil
}

// SignIn checks an email and password. Both an unknown email and a wrong
// password are ErrBadCredentials, and take the same time.
func SignIn(ctx context.Context, db dbpool.DB, email, password string) (User, error) {
	type row struct {
		User
		hash *string
	}
	r, err := dbpool.CollectOne(ctx, db,
		"SELECT "+userColumns+", u.password_hash FROM users u WHERE lower(u.email) = lower($1)",
		[]any{strings.TrimSpace(email)}, func(cr pgx.CollectableRow) (row, error) {
			var r row
			err := cr.Scan(&r.ID, &r.Email, &r.DisplayName, &r.CreatedAt, &r.hash)
			return r, err
		})
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && r.hash == nil) {
		// No such user, or one provisioned from Supabase without a password.
		auth.DummyCheck(password)
		return User{}, ErrBadCredentials
	}
	if err != nil {
		return User{}, fmt.Errorf("load user: %w", err)
	}
	if !auth.CheckPassword(*r.hash, password) {
		return User{}, ErrBadCredentials
	}
	return r.User, nil
}

// Provision creates the user row for a Supabase identity on its first
// request. Concurrent first requests create one row; an email already used
// by another account is ErrConflict.
func Provision(ctx context.Context, db dbpool.DB, id auth.Identity) (User, error) {
	email := strings.TrimSpace(id.Email)
	if email == "" {
		email = id.UserID + "@users.invalid"
	}
	name := strings.TrimSpace(id.Name)
	if name == "" {
		name, _, _ = strings.Cut(email, "@")
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
		return User{}, fmt.Errorf("provision user %s: email %q belongs to another account: %w", id.UserID, email, ErrConflict)
	}
	return u, nil
}
