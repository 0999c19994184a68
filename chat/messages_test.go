package chat_test

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"chatql/chat"
	"chatql/dbpool"
)

// testMessagePages: participants page through a conversation's messages,
// including those of a removed author; anyone else gets an empty page, the
// same as for a conversation that does not exist, in the same batch as pages
// they may read.
func testMessagePages(t *testing.T, w *world) {
	t.Parallel()
	for _, actor := range actors {
		t.Run(actor, func(t *testing.T) {
			t.Parallel()
			keys := []chat.PageKey{}
			for _, c := range conversations {
				keys = append(keys, chat.PageKey{ConversationID: w.convs[c], First: chat.MaxPageSize})
			}
			pages, err := chat.MessagePages(t.Context(), w.db, w.ids[actor], keys)
			if err != nil {
				t.Fatalf("MessagePages: %v", err)
			}
			for i, c := range conversations {
				var want []string
				if canRead(actor, c) {
					want = newestFirst(w.scenes[c].msgs)
				}
				page := pages[keys[i]]
				if got := messageIDs(page.Messages); !slices.Equal(got, want) {
					t.Errorf("%s: messages = %v, want %v", c, got, want)
				}
				if page.HasNext {
					t.Errorf("%s: HasNext on a complete page", c)
				}
			}
		})
	}

	t.Run("paging", func(t *testing.T) {
		t.Parallel()
		conv := w.convs[team]
		last := w.scenes[team].msgs[len(w.scenes[team].msgs)-1] // the newest
		for _, actor := range actors {
			// A first page of one, then the rest after its cursor.
			first := chat.PageKey{ConversationID: conv, First: 1}
			rest := chat.PageKey{ConversationID: conv, First: chat.MaxPageSize, After: last.Cursor()}
			pages, err := chat.MessagePages(t.Context(), w.db, w.ids[actor], []chat.PageKey{first, rest})
			if err != nil {
				t.Fatalf("MessagePages: %v", err)
			}
			var wantFirst, wantRest []string
			if canRead(actor, team) {
				all := newestFirst(w.scenes[team].msgs)
				wantFirst, wantRest = all[:1], all[1:]
			}
			got := pages[first]
			if ids := messageIDs(got.Messages); !slices.Equal(ids, wantFirst) ||
				got.HasNext != canRead(actor, team) {
				t.Errorf("%s: first page = %v (HasNext %v), want %v", actor, ids, got.HasNext, wantFirst)
			}
			if ids := messageIDs(pages[rest].Messages); !slices.Equal(ids, wantRest) {
				t.Errorf("%s: page after a cursor = %v, want %v", actor, ids, wantRest)
			}
		}
	})
}

// testLastMessages: only participants get a conversation's last message; a
// conversation without messages is absent even for them.
func testLastMessages(t *testing.T, w *world) {
	t.Parallel()
	// Among users of their own, so that the cast's conversations stay as
	// the other reads expect.
	quinn := w.newUser(t, "Quinn")
	quiet := w.mustCreate(t, quinn, "quiet", w.newUser(t, "Rosa"))
	t.Run("no messages", func(t *testing.T) {
		t.Parallel()
		got, err := chat.LastMessages(t.Context(), w.db, quinn.ID, []string{quiet.ID})
		if err != nil {
			t.Fatalf("LastMessages: %v", err)
		}
		if m, ok := got[quiet.ID]; ok {
			t.Errorf("a conversation without messages has a last message: %+v", m)
		}
	})
	for _, actor := range actors {
		t.Run(actor, func(t *testing.T) {
			t.Parallel()
			got, err := chat.LastMessages(t.Context(), w.db, w.ids[actor], w.allConversationIDs())
			if err != nil {
				t.Fatalf("LastMessages: %v", err)
			}
			if keys, want := sortedKeys(got), w.readableIDs(actor); !slices.Equal(keys, want) {
				t.Fatalf("keys = %v, want %v", keys, want)
			}
			for _, c := range readable[actor] {
				msgs := w.scenes[c].msgs
				if m, want := got[w.convs[c]], msgs[len(msgs)-1]; m.ID != want.ID || m.Author.ID != want.Author.ID {
					t.Errorf("%s: last message %s by %s, want %s by %s", c, m.ID, m.Author.ID, want.ID, want.Author.ID)
				}
			}
		})
	}
}

// TestSendMessage: participants, an added one included, may post; a removed
// participant, a stranger or an unknown user gets ErrNotFound, and the
// conversation keeps its messages and its last activity.
func TestSendMessage(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	tests := []struct {
		name     string // by in conv if empty
		by, conv string
		body     string
		allowed  bool
		input    bool // refused as bad input, whoever sends it
	}{
		{by: creator, conv: team, body: "one", allowed: true},
		{by: participant, conv: team, body: "  two\n", allowed: true},
		{by: added, conv: team, body: "three", allowed: true},
		{by: removed, conv: team, body: "let me back in"},
		{by: stranger, conv: team, body: "hello?"},
		{by: nobody, conv: team, body: "hello?"},
		{by: creator, conv: missing, body: "anyone?"},
		{name: "blank body", by: creator, conv: team, body: " \t\n", input: true},
		{name: "too long a body", by: creator, conv: team, body: strings.Repeat("x", chat.MaxBodyLength+1), input: true},
	}
	// Not parallel: refused cases compare whole-table counts.
	for _, tt := range tests {
		t.Run(cmp.Or(tt.name, tt.by+" in "+tt.conv), func(t *testing.T) {
			s := w.newTeam(t)
			conv := s.conv.ID
			if tt.conv == missing {
				conv = uuid.NewString()
			}
			viewer := w.ids[tt.by]
			before := w.messageIDs(t, w.alice.ID, s.conv.ID)
			lastBefore := w.conversation(t, w.alice.ID, s.conv.ID).LastMessageAt
			rows := w.count(t, "messages")

			msg, err := w.sendMessage(t, viewer, conv, tt.body)
			if !tt.allowed {
				var inputErr *chat.InputError
				switch {
				case tt.input && (!errors.As(err, &inputErr) || inputErr.Field != "body"):
					t.Errorf("err = %v, want an input error on body", err)
				case !tt.input && !errors.Is(err, chat.ErrNotFound):
					t.Errorf("err = %v, want ErrNotFound", err)
				}
				if n := w.count(t, "messages"); n != rows {
					t.Errorf("message rows %d -> %d after a refused send", rows, n)
				}
				if after := w.messageIDs(t, w.alice.ID, s.conv.ID); !slices.Equal(after, before) {
					t.Errorf("messages %v -> %v after a refused send", before, after)
				}
				if last := w.conversation(t, w.alice.ID, s.conv.ID).LastMessageAt; !last.Equal(*lastBefore) {
					t.Errorf("last message at %v -> %v after a refused send", lastBefore, last)
				}
				if !canRead(tt.by, team) && w.sees(t, viewer, s.conv.ID) {
					t.Errorf("%s sees the conversation after a refused send", tt.by)
				}
				return
			}
			if err != nil {
				t.Fatalf("SendMessage: %v", err)
			}
			if msg.Author.ID != viewer || msg.ConversationID != conv || msg.Body != strings.TrimSpace(tt.body) {
				t.Errorf("sent %+v, want %q by %s in %s", msg, strings.TrimSpace(tt.body), viewer, conv)
			}
			// Every participant sees it as the newest message.
			for _, r := range []string{w.alice.ID, w.bob.ID, w.carol.ID} {
				if ids := w.messageIDs(t, r, conv); len(ids) == 0 || ids[0] != msg.ID {
					t.Errorf("%s sees %v, want %s first", r, ids, msg.ID)
				}
			}
			if last := w.conversation(t, w.alice.ID, conv).LastMessageAt; last == nil || !last.Equal(msg.CreatedAt) {
				t.Errorf("last message at %v, want %v", last, msg.CreatedAt)
			}
		})
	}
}

// testAnnouncedMessages: a run of announced messages comes in the
// conversation's order with its conversation and current participants, and
// checking a subscriber against them gives exactly the read matrix: a
// removed author no longer gets even their own message.
func testAnnouncedMessages(t *testing.T, w *world) {
	t.Parallel()
	for _, c := range []string{team, side} {
		t.Run(c, func(t *testing.T) {
			t.Parallel()
			got, err := chat.AnnouncedMessages(t.Context(), w.db, w.convs[c], 0, chat.MaxPageSize)
			if err != nil {
				t.Fatalf("AnnouncedMessages: %v", err)
			}
			want := w.scenes[c].msgs
			if ids := messageIDs(got.Messages); !slices.Equal(ids, messageIDs(want)) {
				t.Fatalf("run = %v, want %v (oldest first)", ids, messageIDs(want))
			}
			for i, m := range got.Messages {
				if m.Seq != int64(i+1) || m.Body != want[i].Body || m.Author.ID != want[i].Author.ID ||
					m.Conversation == nil || m.Conversation.ID != w.convs[c] {
					t.Errorf("message %d: %+v, want seq %d, %q by %s, in %s", i, m, i+1, want[i].Body, want[i].Author.ID, w.convs[c])
				}
			}
			if got.Conversation.LastSeq != int64(len(want)) {
				t.Errorf("conversation's last seq %d, want %d", got.Conversation.LastSeq, len(want))
			}
			for _, actor := range actors {
				if in := slices.Contains(got.Participants, w.ids[actor]); in != canRead(actor, c) {
					t.Errorf("%s among the participants: %v, want %v (participants %v)", actor, in, canRead(actor, c), got.Participants)
				}
			}
		})
	}

	t.Run("after a seq, at most limit", func(t *testing.T) {
		t.Parallel()
		got, err := chat.AnnouncedMessages(t.Context(), w.db, w.convs[team], 1, 2)
		if err != nil {
			t.Fatalf("AnnouncedMessages: %v", err)
		}
		if ids, want := messageIDs(got.Messages), messageIDs(w.scenes[team].msgs[1:3]); !slices.Equal(ids, want) {
			t.Errorf("run = %v, want %v", ids, want)
		}
	})

	t.Run("nothing after", func(t *testing.T) {
		t.Parallel()
		for _, conv := range []string{w.convs[missing], w.convs[team]} {
			got, err := chat.AnnouncedMessages(t.Context(), w.db, conv, int64(len(w.scenes[team].msgs)), chat.MaxPageSize)
			if err != nil || len(got.Messages) != 0 {
				t.Errorf("run %+v, %v; want an empty one", got, err)
			}
		}
	})

	t.Run("participants are read at load time", func(t *testing.T) {
		t.Parallel()
		// Among users of their own, so that the cast's conversations stay as
		// the other reads expect.
		ann, ben, cat := w.newUser(t, "Ann"), w.newUser(t, "Ben"), w.newUser(t, "Cat")
		conv := w.mustCreate(t, ann, "later", ben)
		w.mustSend(t, ben, conv.ID, "sent before the change")
		if _, err := w.addParticipant(t, ann.ID, conv.ID, cat.ID); err != nil {
			t.Fatalf("AddParticipant: %v", err)
		}
		w.remove(t, conv.ID, ben.ID)
		got, err := chat.AnnouncedMessages(t.Context(), w.db, conv.ID, 0, 1)
		if err != nil {
			t.Fatalf("AnnouncedMessages: %v", err)
		}
		if want := userIDs(ann, cat); !slices.Equal(sorted(got.Participants), sorted(want)) {
			t.Errorf("participants = %v, want %v (ann and cat, not the removed author ben)", got.Participants, want)
		}
	})
}

// testConversationPages: pages of conversations the viewer's own inbox
// listed are those MessagePages gives, authors complete (a removed author
// included), in one statement when the authors are known and one more for
// those that are not. Conversations not loaded for the viewer are checked
// as MessagePages checks them, whoever loaded them.
func testConversationPages(t *testing.T, w *world) {
	t.Parallel()
	keysOf := func(convs ...string) []chat.PageKey {
		keys := []chat.PageKey{}
		for _, c := range convs {
			keys = append(keys, chat.PageKey{ConversationID: c, First: chat.MaxPageSize})
		}
		return keys
	}
	all := []string{w.convs[team], w.convs[side], w.convs[missing]}
	inboxOf := func(t *testing.T, actor string) []chat.Conversation {
		t.Helper()
		page, err := chat.Inbox(t.Context(), w.db, w.ids[actor], chat.MaxPageSize, "")
		if err != nil {
			t.Fatal(err)
		}
		return page.Conversations
	}
	for _, actor := range actors {
		t.Run(actor, func(t *testing.T) {
			t.Parallel()
			viewer := w.ids[actor]
			own := inboxOf(t, actor)
			// Conversations loaded for someone else prove nothing.
			var others []chat.Conversation
			for _, other := range []string{creator, participant, stranger} {
				if other != actor {
					others = append(others, inboxOf(t, other)...)
				}
			}
			for _, tc := range []struct {
				name  string
				convs []chat.Conversation
				keys  []chat.PageKey
			}{
				{"its inbox", own, keysOf(conversationIDs(own)...)},
				{"every conversation", append(slices.Clip(own), others...), keysOf(all...)},
				{"others' inboxes", others, keysOf(w.convs[team], w.convs[side])},
			} {
				want, err := chat.MessagePages(t.Context(), w.db, viewer, tc.keys)
				if err != nil {
					t.Fatal(err)
				}
				got, err := chat.ConversationPages(t.Context(), w.db, viewer, tc.convs, tc.keys, nil)
				if err != nil {
					t.Fatalf("%s: ConversationPages: %v", tc.name, err)
				}
				for _, k := range tc.keys {
					g, wp := got[k], want[k]
					if !slices.Equal(messageIDs(g.Messages), messageIDs(wp.Messages)) || g.HasNext != wp.HasNext {
						t.Errorf("%s: %s: messages %v (HasNext %v), MessagePages gives %v (%v)", tc.name,
							k.ConversationID, messageIDs(g.Messages), g.HasNext, messageIDs(wp.Messages), wp.HasNext)
						continue
					}
					for j, m := range g.Messages {
						if !sameUser(m.Author, wp.Messages[j].Author) || m.ConversationID != wp.Messages[j].ConversationID ||
							m.Body != wp.Messages[j].Body || m.Seq != wp.Messages[j].Seq || !m.CreatedAt.Equal(wp.Messages[j].CreatedAt) {
							t.Errorf("%s: %s: message %d is %+v, MessagePages gives %+v", tc.name, k.ConversationID, j, m, wp.Messages[j])
						}
					}
				}
			}
		})
	}

	t.Run("statements", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name       string
			conv       string
			statements int
		}{
			{"authors all participants", side, 1},
			{"an author removed since", team, 2},
		} {
			inbox, err := chat.Inbox(t.Context(), w.db, w.bob.ID, chat.MaxPageSize, "")
			if err != nil {
				t.Fatal(err)
			}
			participants, err := chat.ParticipantsByConversation(t.Context(), w.db, w.bob.ID, []string{w.convs[tc.conv]})
			if err != nil {
				t.Fatal(err)
			}
			known := map[string]chat.User{}
			for _, u := range participants[w.convs[tc.conv]] {
				known[u.ID] = u
			}
			db := &countingDB{DB: w.db}
			key := keysOf(w.convs[tc.conv])[0]
			pages, err := chat.ConversationPages(t.Context(), db, w.bob.ID, inbox.Conversations, []chat.PageKey{key}, known)
			if err != nil {
				t.Fatal(err)
			}
			if got := messageIDs(pages[key].Messages); !slices.Equal(got, newestFirst(w.scenes[tc.conv].msgs)) {
				t.Errorf("%s: messages %v", tc.name, got)
			}
			for _, m := range pages[key].Messages {
				if m.Author.DisplayName == "" {
					t.Errorf("%s: message %q has no author", tc.name, m.Body)
				}
			}
			if db.statements != tc.statements {
				t.Errorf("%s: %d statements, want %d", tc.name, db.statements, tc.statements)
			}
		}
	})
}

// testPagesInAnyRowOrder: pages come out the same whatever order the
// statement returns its rows in (the statements do not sort; loadPages
// does): here the pages' rows arrive last key first, oldest message first.
func testPagesInAnyRowOrder(t *testing.T, w *world) {
	t.Parallel()
	teamID, sideID := w.convs[team], w.convs[side]
	newest := w.scenes[team].msgs[len(w.scenes[team].msgs)-1]
	keys := []chat.PageKey{
		{ConversationID: teamID, First: 1},
		{ConversationID: teamID, First: 2},
		{ConversationID: teamID, First: chat.MaxPageSize},
		{ConversationID: teamID, First: 2, After: newest.Cursor()},
		{ConversationID: sideID, First: 1},
	}
	inbox, err := chat.Inbox(t.Context(), w.db, w.bob.ID, chat.MaxPageSize, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, load := range []struct {
		name string
		run  func(db dbpool.DB) (map[chat.PageKey]chat.MessagePage, error)
	}{
		{"MessagePages", func(db dbpool.DB) (map[chat.PageKey]chat.MessagePage, error) {
			return chat.MessagePages(t.Context(), db, w.bob.ID, keys)
		}},
		{"ConversationPages", func(db dbpool.DB) (map[chat.PageKey]chat.MessagePage, error) {
			return chat.ConversationPages(t.Context(), db, w.bob.ID, inbox.Conversations, keys, nil)
		}},
	} {
		want, err := load.run(w.db)
		if err != nil {
			t.Fatal(err)
		}
		got, err := load.run(reversedRows{w.db})
		if err != nil {
			t.Fatalf("%s in reverse: %v", load.name, err)
		}
		for _, k := range keys {
			g, wp := got[k], want[k]
			if !slices.Equal(messageIDs(g.Messages), messageIDs(wp.Messages)) || g.HasNext != wp.HasNext {
				t.Errorf("%s: %+v: rows in reverse give %v (HasNext %v), in PostgreSQL's order %v (%v)", load.name, k,
					messageIDs(g.Messages), g.HasNext, messageIDs(wp.Messages), wp.HasNext)
			}
		}
	}
	if p := (func() chat.MessagePage {
		pages, _ := chat.MessagePages(t.Context(), reversedRows{w.db}, w.bob.ID, keys[:1])
		return pages[keys[0]]
	})(); !p.HasNext || len(p.Messages) != 1 || p.Messages[0].ID != newest.ID {
		t.Errorf("first page of one in reverse: %v (HasNext %v), want the newest, %s, and a next page", messageIDs(p.Messages), p.HasNext, newest.ID)
	}
}

// reversedRows runs the pages statements with their rows in the worst
// order for a page: by key position descending, then by seq ascending (the
// statements name those columns idx and seq). Other statements (the
// authors') run as they are.
type reversedRows struct{ dbpool.DB }

func (r reversedRows) Rows(ctx context.Context, sql string, args []any, read func(pgx.Rows) error) error {
	if strings.Contains(sql, "AS k(conv, lim, before_seq, idx)") {
		sql = "SELECT * FROM (" + sql + ") AS q ORDER BY q.idx DESC, q.seq"
	}
	return r.DB.Rows(ctx, sql, args, read)
}
