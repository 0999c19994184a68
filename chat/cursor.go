package chat

import (
	"encoding/base64"
	"strings"
	"time"
)

// A cursor is the sort key of an item, (time, id), encoded opaquely so that
// clients pass it back instead of building it.
type cursor struct {
	at time.Time
	id string
}

func (c cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.at.UTC().Format(time.RFC3339Nano) + "|" + c.id))
}

// parseCursor decodes s; "" is no cursor. A malformed one is bad input.
func parseCursor(field, s string) (*cursor, error) {
	if s == "" {
		return nil, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, badInput(field, "not a valid cursor")
	}
	at, id, ok := strings.Cut(string(raw), "|")
	if !ok {
		return nil, badInput(field, "not a valid cursor")
	}
	t, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return nil, badInput(field, "not a valid cursor")
	}
	if id, err = ParseID(field, id); err != nil {
		return nil, badInput(field, "not a valid cursor")
	}
	return &cursor{at: t, id: id}, nil
}

// ValidateCursor checks a cursor argument before it reaches a batch.
func ValidateCursor(field, s string) error {
	_, err := parseCursor(field, s)
	return err
}

// Cursor returns the cursor of a conversation in the inbox order.
func (c Conversation) Cursor() string { return cursor{c.activity(), c.ID}.String() }

// Cursor returns the cursor of a message in the newest-first order.
func (m Message) Cursor() string { return cursor{m.CreatedAt, m.ID}.String() }

// cursorArgs turns an optional cursor into nullable query arguments.
func cursorArgs(c *cursor) (any, any) {
	if c == nil {
		return nil, nil
	}
	return c.at, c.id
}
