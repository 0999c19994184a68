package chat_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"chatql/chat"
	"chatql/dbpool"
)

// testInbox: an inbox lists exactly the conversations the viewer takes part
// in; a removed participant's no longer, an unknown user's none.
func testInbox(t *testing.T, w *world) {
	t.Parallel()
	for _, actor := range actors {
		t.Run(actor, func(t *testing.T) {
			t.Parallel()
			page, err := chat.Inbox(t.Context(), w.db, w.ids[actor], chat.MaxPageSize, "")
			if err != nil {
				t.Fatalf("Inbox: %v", err)
			}
			if got, want := sorted(conversationIDs(page.Conversations)), w.readableIDs(actor); !slices.Equal(got, want) {
				t.Errorf("inbox = %v, want %v", got, want)
			}
			if page.HasNext {
				t.Error("HasNext on a complete inbox")
			}
		})
	}

	t.Run("pages hold only the viewer's conversations", func(t *testing.T) {
		t.Parallel()
		var got []string
		after := ""
		for range 5 {
			page, err := chat.Inbox(t.Context(), w.db, w.bob.ID, 1, after)
			if err != nil {
				t.Fatalf("Inbox: %v", err)
			}
			got = append(got, conversationIDs(page.Conversations)...)
			if !page.HasNext {
				break
			}
			after = page.Conversations[len(page.Conversations)-1].Cursor()
		}
		if want := w.readableIDs(participant); !slices.Equal(sorted(got), want) {
			t.Errorf("paged inbox = %v, want %v", got, want)
		}
	})

	t.Run("a cursor opens no one else's conversations", func(t *testing.T) {
		t.Parallel()
		// A cursor from after all activity: everything the viewer has
		// comes after it.
		future := time.Now().AddDate(1, 0, 0)
		after := chat.Conversation{ID: w.convs[team], CreatedAt: future, LastMessageAt: &future}.Cursor()
		for _, actor := range actors {
			page, err := chat.Inbox(t.Context(), w.db, w.ids[actor], chat.MaxPageSize, after)
			if err != nil {
				t.Fatalf("Inbox: %v", err)
			}
			if got, want := sorted(conversationIDs(page.Conversations)), w.readableIDs(actor); !slices.Equal(got, want) {
				t.Errorf("%s: inbox after a cursor = %v, want %v", actor, got, want)
			}
		}
	})
}

// testConversationsByID: a batch holds exactly the conversations the viewer
// takes part in; the others are absent, whether they exist or not.
func testConversationsByID(t *testing.T, w *world) {
	t.Parallel()
	for _, actor := range actors {
		t.Run(actor, func(t *testing.T) {
			t.Parallel()
			got, err := chat.ConversationsByID(t.Context(), w.db, w.ids[actor], w.allConversationIDs())
			if err != nil {
				t.Fatalf("ConversationsByID: %v", err)
			}
			if keys, want := sortedKeys(got), w.readableIDs(actor); !slices.Equal(keys, want) {
				t.Fatalf("keys = %v, want %v", keys, want)
			}
			for _, name := range readable[actor] {
				c := got[w.convs[name]]
				if c.ID != w.convs[name] || c.Title == nil || *c.Title != name {
					t.Errorf("%s loaded as %+v", name, c)
				}
			}
		})
	}
}

// testParticipantsByConversation: only participants see who takes part, and
// they see the current participants in joining order: an added one last, a
// removed one not at all.
func testParticipantsByConversation(t *testing.T, w *world) {
	t.Parallel()
	want := map[string][]string{
		w.convs[team]: userIDs(w.alice, w.bob, w.carol),
		w.convs[side]: userIDs(w.bob, w.eve),
	}
	for _, actor := range actors {
		t.Run(actor, func(t *testing.T) {
			t.Parallel()
			got, err := chat.ParticipantsByConversation(t.Context(), w.db, w.ids[actor], w.allConversationIDs())
			if err != nil {
				t.Fatalf("ParticipantsByConversation: %v", err)
			}
			if keys, wantKeys := sortedKeys(got), w.readableIDs(actor); !slices.Equal(keys, wantKeys) {
				t.Fatalf("keys = %v, want %v", keys, wantKeys)
			}
			for conv, users := range got {
				if ids := userIDs(users...); !slices.Equal(ids, want[conv]) {
					t.Errorf("participants of %s = %v, want %v", conv, ids, want[conv])
				}
			}
		})
	}
}

// testUnreadCounts: only participants get a count. Counts are of others'
// messages since the viewer's read mark, which sending sets.
func testUnreadCounts(t *testing.T, w *world) {
	t.Parallel()
	// Where the count follows plainly from the fixture. carol joined late
	// without reading anything; only her key is checked.
	wantCount := map[string]map[string]int{
		creator:     {team: 3}, // bob's two and dave's after her "hello"
		participant: {team: 0, side: 1},
		stranger:    {side: 0},
	}
	for _, actor := range actors {
		t.Run(actor, func(t *testing.T) {
			t.Parallel()
			got := w.unread(t, w.ids[actor], w.allConversationIDs()...)
			if keys, want := sortedKeys(got), w.readableIDs(actor); !slices.Equal(keys, want) {
				t.Fatalf("keys = %v, want %v", keys, want)
			}
			for conv, n := range wantCount[actor] {
				if got[w.convs[conv]] != n {
					t.Errorf("unread in %s = %d, want %d", conv, got[w.convs[conv]], n)
				}
			}
		})
	}
}

// TestCreateConversation: any user may start a conversation with any other
// users and always takes part in it; a participant who does not exist, or a
// viewer who does not, is ErrNotFound and stores nothing.
func TestCreateConversation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	tests := []struct {
		name    string
		viewer  string
		title   string // "new" if empty
		with    []string
		want    []string // participants in joining order; nil: refused
		wantErr error    // why it is refused, unless as bad input
		input   string   // the field of the *InputError it is refused with
	}{
		{name: "with a participant", viewer: w.alice.ID, with: userIDs(w.bob), want: userIDs(w.alice, w.bob)},
		{name: "with someone never met", viewer: w.alice.ID, with: userIDs(w.eve), want: userIDs(w.alice, w.eve)},
		{name: "by a removed participant", viewer: w.dave.ID, with: userIDs(w.alice), want: userIDs(w.dave, w.alice)},
		{name: "the viewer and duplicates once", viewer: w.alice.ID,
			with: []string{w.bob.ID, w.alice.ID, strings.ToUpper(w.bob.ID), w.carol.ID},
			want: userIDs(w.alice, w.bob, w.carol)},
		{name: "with an unknown user", viewer: w.alice.ID, with: []string{uuid.NewString()}, wantErr: chat.ErrNotFound},
		{name: "with known and unknown users", viewer: w.alice.ID, with: []string{w.bob.ID, uuid.NewString()}, wantErr: chat.ErrNotFound},
		{name: "by an unknown user", viewer: w.ids[nobody], with: userIDs(w.bob), wantErr: chat.ErrNotFound},
		{name: "with a malformed id", viewer: w.alice.ID, with: []string{w.bob.ID, "bob"}, input: "participantIds"},
		{name: "with too many", viewer: w.alice.ID, with: slices.Repeat(userIDs(w.bob), chat.MaxParticipants+1), input: "participantIds"},
		{name: "with too long a title", viewer: w.alice.ID, title: strings.Repeat("t", chat.MaxTitleLength+1), with: userIDs(w.bob), input: "title"},
	}
	// Not parallel: refused cases compare whole-table counts.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			convs, parts := w.count(t, "conversations"), w.count(t, "conversation_participants")
			title := cmp.Or(tt.title, "new")
			conv, err := w.createConversation(t, tt.viewer, chat.CreateConversationInput{Title: &title, ParticipantIDs: tt.with})
			if tt.want == nil {
				var inputErr *chat.InputError
				switch {
				case tt.input != "" && (!errors.As(err, &inputErr) || inputErr.Field != tt.input):
					t.Errorf("err = %v, want an input error on %s", err, tt.input)
				case tt.input == "" && !errors.Is(err, tt.wantErr):
					t.Errorf("err = %v, want %v", err, tt.wantErr)
				}
				if c, p := w.count(t, "conversations"), w.count(t, "conversation_participants"); c != convs || p != parts {
					t.Errorf("refused create stored rows: conversations %d -> %d, participants %d -> %d", convs, c, parts, p)
				}
				return
			}
			if err != nil {
				t.Fatalf("CreateConversation: %v", err)
			}
			for _, id := range tt.want {
				if got := w.participants(t, id, conv.ID); !slices.Equal(got, tt.want) {
					t.Errorf("participants as %s sees them = %v, want %v", id, got, tt.want)
				}
			}
			for _, u := range []chat.User{w.alice, w.bob, w.carol, w.dave, w.eve} {
				if !slices.Contains(tt.want, u.ID) && w.sees(t, u.ID, conv.ID) {
					t.Errorf("%s, not a participant, sees the new conversation", u.DisplayName)
				}
			}
		})
	}
}

// TestAddParticipant: a participant may add any user, including one who was
// removed; anyone else (a removed participant, a stranger, an unknown user)
// gets ErrNotFound and adds nobody, not even themself. Adding someone who is
// there already changes nothing.
func TestAddParticipant(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	tests := []struct {
		by, user string // actors
		conv     string // team or missing
		allowed  bool
	}{
		{by: creator, user: stranger, conv: team, allowed: true},
		{by: participant, user: stranger, conv: team, allowed: true},
		{by: added, user: stranger, conv: team, allowed: true},
		{by: participant, user: removed, conv: team, allowed: true},
		{by: creator, user: participant, conv: team, allowed: true}, // already there
		{by: removed, user: stranger, conv: team},
		{by: removed, user: removed, conv: team},
		{by: stranger, user: stranger, conv: team},
		{by: stranger, user: removed, conv: team},
		{by: nobody, user: stranger, conv: team},
		{by: nobody, user: nobody, conv: team},
		{by: creator, user: nobody, conv: team},
		{by: creator, user: stranger, conv: missing},
	}
	// Not parallel: refused cases compare whole-table counts.
	for _, tt := range tests {
		t.Run(tt.by+" adds "+tt.user+" to "+tt.conv, func(t *testing.T) {
			s := w.newTeam(t)
			conv := s.conv.ID
			if tt.conv == missing {
				conv = uuid.NewString()
			}
			viewer, user := w.ids[tt.by], w.ids[tt.user]
			before := w.participants(t, w.alice.ID, s.conv.ID)
			rows := w.count(t, "conversation_participants")

			got, err := w.addParticipant(t, viewer, conv, user)
			after := w.participants(t, w.alice.ID, s.conv.ID)
			if !tt.allowed {
				if !errors.Is(err, chat.ErrNotFound) {
					t.Errorf("err = %v, want ErrNotFound", err)
				}
				if !slices.Equal(after, before) {
					t.Errorf("participants %v -> %v after a refused add", before, after)
				}
				if n := w.count(t, "conversation_participants"); n != rows {
					t.Errorf("participant rows %d -> %d after a refused add", rows, n)
				}
				if !slices.Contains(before, user) && w.sees(t, user, s.conv.ID) {
					t.Errorf("%s sees the conversation after a refused add", tt.user)
				}
				return
			}
			if err != nil {
				t.Fatalf("AddParticipant: %v", err)
			}
			if got.ID != conv {
				t.Errorf("returned conversation %s, want %s", got.ID, conv)
			}
			want := before
			if !slices.Contains(before, user) {
				want = append(slices.Clone(before), user)
			}
			if !slices.Equal(after, want) {
				t.Errorf("participants %v -> %v, want %v", before, after, want)
			}
			if !w.sees(t, user, conv) {
				t.Errorf("%s cannot see the conversation they were added to", tt.user)
			}
		})
	}
}

// TestMarkRead: a participant's read mark clears their own unread count and
// no one else's; anyone else gets ErrNotFound and changes no count.
func TestMarkRead(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	tests := []struct {
		by, conv string
		allowed  bool
	}{
		{by: creator, conv: team, allowed: true},
		{by: participant, conv: team, allowed: true},
		{by: added, conv: team, allowed: true},
		{by: removed, conv: team},
		{by: stranger, conv: team},
		{by: nobody, conv: team},
		{by: creator, conv: missing},
	}
	for _, tt := range tests {
		t.Run(tt.by+" in "+tt.conv, func(t *testing.T) {
			t.Parallel()
			s := w.newTeam(t)
			conv := s.conv.ID
			if tt.conv == missing {
				conv = uuid.NewString()
			}
			readers := []string{w.alice.ID, w.bob.ID, w.carol.ID}
			before := map[string]int{}
			for _, r := range readers {
				before[r] = w.unread(t, r, s.conv.ID)[s.conv.ID]
			}

			got, err := w.markRead(t, w.ids[tt.by], conv)
			switch {
			case tt.allowed && err != nil:
				t.Fatalf("MarkRead: %v", err)
			case tt.allowed && got.ID != conv:
				t.Errorf("returned conversation %s, want %s", got.ID, conv)
			case !tt.allowed && !errors.Is(err, chat.ErrNotFound):
				t.Errorf("err = %v, want ErrNotFound", err)
			}
			for _, r := range readers {
				want := before[r]
				if tt.allowed && r == w.ids[tt.by] {
					want = 0
				}
				if n := w.unread(t, r, s.conv.ID)[s.conv.ID]; n != want {
					t.Errorf("unread of %s: %d -> %d, want %d", r, before[r], n, want)
				}
			}
			if !canRead(tt.by, team) && w.sees(t, w.ids[tt.by], s.conv.ID) {
				t.Errorf("%s sees the conversation after a refused read mark", tt.by)
			}
		})
	}

	t.Run("later messages are unread again", func(t *testing.T) {
		t.Parallel()
		s := w.newTeam(t)
		if _, err := w.markRead(t, w.carol.ID, s.conv.ID); err != nil {
			t.Fatalf("MarkRead: %v", err)
		}
		w.mustSend(t, w.bob, s.conv.ID, "news")
		if n := w.unread(t, w.carol.ID, s.conv.ID)[s.conv.ID]; n != 1 {
			t.Errorf("unread after a read mark and one message = %d, want 1", n)
		}
	})
}

// TestAddParticipantCap: a conversation holds at most the people
// CreateConversation allows (its creator and MaxParticipants others), also
// when they are added one by one, and also when the adds race: the last
// free place goes to exactly one of them.
func TestAddParticipantCap(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	others := make([]chat.User, chat.MaxParticipants)
	for i := range others {
		others[i] = w.newUser(t, fmt.Sprintf("Member%03d", i))
	}
	// Full from the start: every further add is refused.
	full := w.mustCreate(t, w.alice, "full", others...)
	_, err := w.addParticipant(t, w.alice.ID, full.ID, w.bob.ID)
	wantInputError(t, err, "userId")
	if got := len(w.participants(t, w.alice.ID, full.ID)); got != chat.MaxParticipants+1 {
		t.Errorf("full conversation has %d participants, want %d", got, chat.MaxParticipants+1)
	}
	// Adding someone already there is still not an error.
	if _, err := w.addParticipant(t, w.alice.ID, full.ID, others[0].ID); err != nil {
		t.Errorf("re-adding a participant of a full conversation: %v", err)
	}

	// One place left, two adds at once: one wins, the other is refused.
	almost := w.mustCreate(t, w.alice, "almost", others[:chat.MaxParticipants-1]...)
	errs := make(chan error, 2)
	for _, u := range []chat.User{w.bob, w.carol} {
		go func() {
			_, err := inTx(t, w.pool, func(ctx context.Context, db dbpool.DB) (chat.Conversation, error) {
				return chat.AddParticipant(ctx, db, w.alice.ID, almost.ID, u.ID)
			})
			errs <- err
		}()
	}
	var ok, refused int
	for range 2 {
		var input *chat.InputError
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.As(err, &input):
			refused++
		default:
			t.Errorf("racing add: %v", err)
		}
	}
	if ok != 1 || refused != 1 {
		t.Errorf("two adds for the last place: %d succeeded, %d refused; want 1 and 1", ok, refused)
	}
	if got := len(w.participants(t, w.alice.ID, almost.ID)); got != chat.MaxParticipants+1 {
		t.Errorf("conversation has %d participants after the race, want %d", got, chat.MaxParticipants+1)
	}
}
