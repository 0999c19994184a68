// Package chat owns the chat domain: its SQL and its rules. Who may read or
// write what is decided here, in the queries themselves (every read and
// write joins on the viewer's participation), never by filtering rows after
// fetching them.
//
// Functions take a dbpool.DB, so they run on whatever connection the caller
// holds: the scope of a GraphQL operation or a WithTx of background work.
// Batch functions take many keys and issue one statement; their results are
// keyed maps, which dataloaders turn back into key order.
package chat

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
)

// Errors, classified at the data boundary so the API can present them.
var (
	// ErrNotFound: the thing does not exist, or the viewer may not see it.
	// The two are deliberately indistinguishable.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the write collides with existing data (a taken email).
	ErrConflict = errors.New("conflict")
	// ErrBadCredentials: sign-in with an unknown email or a wrong password.
	ErrBadCredentials = errors.New("invalid email or password")
)

// InputError is bad input from a client: Field names the argument, Message
// says what is wrong with it.
type InputError struct {
	Field, Message string
}

func (e *InputError) Error() string { return e.Field + ": " + e.Message }

func badInput(field, format string, args ...any) error {
	return &InputError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Limits on input.
const (
	MaxBodyLength        = 4000
	MaxTitleLength       = 200
	MaxDisplayNameLength = 80
	MinPasswordLength    = 8
	MaxPageSize          = 100
	// MaxParticipants bounds the others a conversation's creator names: a
	// conversation never holds more than MaxParticipants + 1 people.
	MaxParticipants = 100
)

// User is a chat user. Email is private to the user themself; the API
// layer decides when to show it.
type User struct {
	ID string
	// Email is "" for a user without one (a Supabase anonymous or phone
	// sign-in): the column is NULL.
	Email       string
	DisplayName string
	CreatedAt   time.Time
}

// Conversation is a conversation's own row.
type Conversation struct {
	ID            string
	Title         *string
	CreatedAt     time.Time
	LastMessageAt *time.Time
	// LastSeq is the Seq of its latest message (0: none yet).
	LastSeq int64
	// loadedFor is the user whose participation the statement that loaded
	// the conversation checked; "" when it checked none. ConversationPages
	// relies on it to skip checking again.
	loadedFor string
}

// activity orders the inbox: the latest message, or the creation time of a
// conversation without messages.
func (c Conversation) activity() time.Time {
	if c.LastMessageAt != nil {
		return *c.LastMessageAt
	}
	return c.CreatedAt
}

// Message is a message with its author, who is always fetched with it.
//
// A conversation's messages have one order, the order they were committed
// in: Seq numbers them 1, 2, 3... within the conversation, and CreatedAt
// never goes back along it. Pages, cursors, the last message, unread
// counts and realtime delivery all follow Seq.
type Message struct {
	ID             string
	ConversationID string
	Seq            int64
	Body           string
	CreatedAt      time.Time
	Author         User
	// Conversation is the message's conversation when it was loaded with
	// it (AnnouncedMessages), as the same statement saw it; nil otherwise.
	Conversation *Conversation
}

// ParseID checks that s is an id (a uuid) and returns it in canonical form.
func ParseID(field, s string) (string, error) {
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return "", badInput(field, "not a valid id")
	}
	return id.String(), nil
}

// PageSize checks a `first` argument.
func PageSize(field string, first int) (int, error) {
	if first < 1 || first > MaxPageSize {
		return 0, badInput(field, "must be between 1 and %d", MaxPageSize)
	}
	return first, nil
}

// textLength checks the length of s in characters, not bytes.
func textLength(field, s string, min, max int) error {
	n := utf8.RuneCountInString(s)
	switch {
	case !utf8.ValidString(s):
		return badInput(field, "is not valid UTF-8")
	case strings.ContainsRune(s, 0):
		return badInput(field, "must not contain NUL characters")
	case n < min && min == 1:
		return badInput(field, "must not be empty")
	case n < min:
		return badInput(field, "must be at least %d characters", min)
	case n > max:
		return badInput(field, "must be at most %d characters", max)
	}
	return nil
}

// isUniqueViolation reports a unique-constraint violation (SQLSTATE 23505).
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// normalizeEmail trims an email and checks its shape; uniqueness and
// lookups are case-insensitive in the database.
func normalizeEmail(field, email string) (string, error) {
	email = strings.TrimSpace(email)
	at := strings.LastIndex(email, "@")
	if at < 1 || at == len(email)-1 || len(email) > 254 || strings.ContainsAny(email, " \t\r\n\x00") || !utf8.ValidString(email) {
		return "", badInput(field, "is not an email address")
	}
	return email, nil
}
