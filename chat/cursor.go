package chat

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// Cursors are the sort keys of items, encoded opaquely so that clients pass
// them back instead of building them. A conversation's is its place in the
// inbox, (activity time, id); a message's is its Seq, its place in its
// conversation. Message cursors issued before messages had a Seq (a time
// and an id) are refused as bad input.

// cursor is a conversation's place in the inbox.
type cursor struct {
	at time.Time
	id string
}

func (c cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.at.UTC().Format(time.RFC3339Nano) + "|" + c.id))
}

// parseCursor decodes a conversation cursor s; "" is no cursor. A
// malformed one is bad input.
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

// seqCursorPrefix starts every message cursor.
const seqCursorPrefix = "seq:"

// parseMessageCursor decodes a message cursor s into the Seq it stands
// for; "" is no cursor (0). A malformed one is bad input.
func parseMessageCursor(field, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, badInput(field, "not a valid cursor")
	}
	digits, ok := strings.CutPrefix(string(raw), seqCursorPrefix)
	if !ok {
		return 0, badInput(field, "not a valid cursor")
	}
	seq, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || seq < 1 {
		return 0, badInput(field, "not a valid cursor")
	}
	return seq, nil
}

// ValidateMessageCursor checks a messages `after` argument before it
// reaches a batch.
func ValidateMessageCursor(field, s string) error {
	_, err := parseMessageCursor(field, s)
	return err
}

// Cursor returns the cursor of a conversation in the inbox order.
func (c Conversation) Cursor() string { return cursor{c.activity(), c.ID}.String() }

// Cursor returns the cursor of a message in its conversation's order.
func (m Message) Cursor() string {
	return base64.RawURLEncoding.EncodeToString([]byte(seqCursorPrefix + strconv.FormatInt(m.Seq, 10)))
}

// cursorArgs turns an optional cursor into nullable query arguments.
func cursorArgs(c *cursor) (any, any) {
	if c == nil {
		return nil, nil
	}
	return c.at, c.id
}
