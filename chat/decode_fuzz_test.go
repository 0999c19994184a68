package chat

import (
	"errors"
	"testing"
	"time"
)

// Fuzz tests for what clients hand back: cursors and ids. The seed
// corpus runs with every `go test`; `make fuzz` explores further. Whatever
// the input, a decoder either returns a value that round-trips or a
// BAD_USER_INPUT error naming the argument; it never panics.

func checkBadInput(t *testing.T, err error, field string) {
	t.Helper()
	var input *InputError
	if !errors.As(err, &input) || input.Field != field {
		t.Fatalf("error %v is not an InputError on %q", err, field)
	}
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{"", "00000000-0000-0000-0000-000000000000", "6F9619FF-8B86-D011-B42D-00CF4FC964FF",
		"{6f9619ff-8b86-d011-b42d-00cf4fc964ff}", "urn:uuid:6f9619ff-8b86-d011-b42d-00cf4fc964ff", "6f9619ff8b86d011b42d00cf4fc964ff", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID("id", s)
		if err != nil {
			checkBadInput(t, err, "id")
			return
		}
		if len(id) != 36 {
			t.Fatalf("ParseID(%q) = %q, not a canonical uuid", s, id)
		}
		if again, err := ParseID("id", id); err != nil || again != id {
			t.Fatalf("ParseID(%q) = %q, which parses to %q, %v", s, id, again, err)
		}
	})
}

func FuzzParseCursor(f *testing.F) {
	valid := cursor{at: time.Date(2026, 12, 4, 18, 0, 0, 123456000, time.UTC), id: "6f9619ff-8b86-d011-b42d-00cf4fc964ff"}
	for _, s := range []string{"", valid.String(), "not base64!", "MjAyNg", "fHw", valid.String() + "A"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseCursor("after", s)
		if err != nil {
			checkBadInput(t, err, "after")
			return
		}
		if c == nil {
			if s != "" {
				t.Fatalf("parseCursor(%q) = nil without an error", s)
			}
			return
		}
		again, err := parseCursor("after", c.String())
		if err != nil || !again.at.Equal(c.at) || again.id != c.id {
			t.Fatalf("cursor %q = %+v re-encodes to %q = %+v, %v", s, c, c.String(), again, err)
		}
	})
}

func FuzzParseMessageCursor(f *testing.F) {
	for _, s := range []string{"", Message{Seq: 1}.Cursor(), Message{Seq: 1 << 62}.Cursor(), "c2VxOjA", "c2VxOi0x", "c2VxOis1", "@@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		seq, err := parseMessageCursor("after", s)
		if err != nil {
			checkBadInput(t, err, "after")
			return
		}
		if s == "" {
			if seq != 0 {
				t.Fatalf("no cursor gave seq %d", seq)
			}
			return
		}
		if seq < 1 {
			t.Fatalf("cursor %q accepted with seq %d", s, seq)
		}
		if again, err := parseMessageCursor("after", Message{Seq: seq}.Cursor()); err != nil || again != seq {
			t.Fatalf("cursor %q = %d re-encodes to %d, %v", s, seq, again, err)
		}
	})
}
