package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
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

// DummyCheck does the work of one CheckPassword and discards the result. A
// sign-in for an email with no account (or no password) calls it so that it
// takes as long as a wrong password, and response times do not reveal which
// emails are registered.
func DummyCheck(password string) {
	_ = CheckPassword(dummyHash(), password)
}
