package chat_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"chatql/chat"
)

// wantInputError fails unless err is an *InputError on field.
func wantInputError(t *testing.T, err error, field string) {
	t.Helper()
	var inputErr *chat.InputError
	if !errors.As(err, &inputErr) {
		t.Errorf("err = %v, want an *InputError on %s", err, field)
	} else if inputErr.Field != field {
		t.Errorf("input error on %q, want %q (%v)", inputErr.Field, field, err)
	}
}

// TestParseID: ids are uuids in their 36-character form, returned in
// canonical lowercase; anything else is bad input on the named field.
func TestParseID(t *testing.T) {
	t.Parallel()
	id := uuid.NewString()
	tests := []struct {
		in, want string // want "": refused
	}{
		{in: id, want: id},
		{in: strings.ToUpper(id), want: id},
		{in: ""},
		{in: "not an id"},
		{in: strings.ReplaceAll(id, "-", "")},
		{in: "{" + id + "}"},
		{in: "urn:uuid:" + id},
		{in: " " + id},
		{in: id[:35] + "g"},
	}
	for _, tt := range tests {
		got, err := chat.ParseID("userId", tt.in)
		if tt.want == "" {
			wantInputError(t, err, "userId")
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseID(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// TestValidateMessageCursor: "" is no cursor and the cursors the package
// hands out for messages pass; anything else is bad input, a message cursor
// from before messages had a seq (a time and an id) and a conversation's
// cursor included.
func TestValidateMessageCursor(t *testing.T) {
	t.Parallel()
	now := time.Now()
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name, cursor string
		ok           bool
	}{
		{name: "none", cursor: "", ok: true},
		{name: "a message's", cursor: chat.Message{ID: uuid.NewString(), Seq: 1, CreatedAt: now}.Cursor(), ok: true},
		{name: "a conversation's", cursor: chat.Conversation{ID: uuid.NewString(), CreatedAt: now}.Cursor()},
		{name: "a message's before seq", cursor: enc(now.UTC().Format(time.RFC3339Nano) + "|" + uuid.NewString())},
		{name: "not base64", cursor: "not a cursor!"},
		{name: "no seq", cursor: enc("seq:")},
		{name: "seq zero", cursor: enc("seq:0")},
		{name: "negative seq", cursor: enc("seq:-3")},
		{name: "not a number", cursor: enc("seq:12a")},
	}
	for _, tt := range tests {
		err := chat.ValidateMessageCursor("after", tt.cursor)
		if tt.ok {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		wantInputError(t, err, "after")
	}
}

// TestPageSize: first is between 1 and MaxPageSize.
func TestPageSize(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, chat.MaxPageSize} {
		if got, err := chat.PageSize("first", n); err != nil || got != n {
			t.Errorf("PageSize(%d) = %d, %v", n, got, err)
		}
	}
	for _, n := range []int{-1, 0, chat.MaxPageSize + 1} {
		_, err := chat.PageSize("first", n)
		wantInputError(t, err, "first")
	}
}

// testReadsRefuseBadInput: the paged reads check their arguments whoever
// calls them, and report bad input rather than a database error.
func testReadsRefuseBadInput(t *testing.T, w *world) {
	t.Parallel()
	ctx := t.Context()
	bad := "bogus"

	now := time.Now()
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, after := range []string{
		bad,
		enc(now.Format(time.RFC3339Nano)),    // no separator
		enc("yesterday|" + uuid.NewString()), // bad time
		enc(now.Format(time.RFC3339Nano) + "|42"),           // bad id
		chat.Message{ID: uuid.NewString(), Seq: 1}.Cursor(), // a message's
	} {
		_, err := chat.Inbox(ctx, w.db, w.alice.ID, 10, after)
		wantInputError(t, err, "after")
	}
	_, err := chat.Inbox(ctx, w.db, w.alice.ID, 10, chat.Conversation{ID: uuid.NewString(), CreatedAt: now}.Cursor())
	if err != nil {
		t.Errorf("Inbox after a conversation's cursor: %v", err)
	}
	_, err = chat.Inbox(ctx, w.db, w.alice.ID, 0, "")
	wantInputError(t, err, "first")
	_, err = chat.Inbox(ctx, w.db, w.alice.ID, chat.MaxPageSize+1, "")
	wantInputError(t, err, "first")

	conv := w.convs[team]
	for _, after := range []string{bad, enc(now.UTC().Format(time.RFC3339Nano) + "|" + uuid.NewString())} {
		_, err = chat.MessagePages(ctx, w.db, w.alice.ID, []chat.PageKey{{ConversationID: conv, First: 10, After: after}})
		wantInputError(t, err, "after")
	}
	_, err = chat.MessagePages(ctx, w.db, w.alice.ID, []chat.PageKey{
		{ConversationID: conv, First: 10},
		{ConversationID: conv, First: chat.MaxPageSize + 1},
	})
	wantInputError(t, err, "first")
}
