package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"chatql/graph"
)

// The chat flows end to end: conversations, messages, read marks,
// participants, who may see what, and paging.

// lastMessageAt reads a conversation's last_message_at as text ("" for
// NULL), for before-and-after comparisons.
func (a *testAPI) lastMessageAt(conv string) string {
	a.t.Helper()
	var at *string
	if err := a.admin.QueryRow(context.Background(),
		"SELECT last_message_at::text FROM conversations WHERE id = $1", conv).Scan(&at); err != nil {
		a.t.Fatal(err)
	}
	if at == nil {
		return ""
	}
	return *at
}

// inbox returns the viewer's conversation ids, most recent activity first.
func (a *testAPI) inbox(token string) []string {
	a.t.Helper()
	var data struct {
		Conversations struct{ Nodes []conversationJSON }
	}
	a.post(token, "{ conversations(first: 100) { nodes { id } } }", nil).into(a.t, &data)
	return conversationIDs(data.Conversations.Nodes)
}

// conversationAs loads a conversation with its details as the bearer of token.
func (a *testAPI) conversationAs(token, id string) conversationJSON {
	a.t.Helper()
	var data struct{ Conversation conversationJSON }
	a.post(token, `query($id: ID!) { conversation(id: $id) {
		id title createdAt lastMessageAt unreadCount
		participants { id displayName email }
		lastMessage { id body createdAt author { id } }
		messages(first: 100) { nodes { id body author { id } } pageInfo { hasNextPage endCursor } } } }`,
		map[string]any{"id": id}).into(a.t, &data)
	return data.Conversation
}

// TestChatCreateConversation: a new conversation has the viewer and the
// named users (each once) as participants; a bad or unknown participant
// or title stores nothing.
func TestChatCreateConversation(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, annToken := a.user("Ann")
	bob, bobToken := a.user("Bob")

	before := time.Now()
	var data struct{ CreateConversation conversationJSON }
	a.post(annToken, createConversation, map[string]any{"in": map[string]any{
		"title":          "Weekend",
		"participantIds": []string{bob, strings.ToUpper(bob), ann}, // duplicates, and the viewer herself
	}}).into(t, &data)
	c := data.CreateConversation
	if c.Title == nil || *c.Title != "Weekend" {
		t.Errorf("title %v, want Weekend", c.Title)
	}
	if got := userIDs(c.Participants); !slices.Equal(got, []string{ann, bob}) {
		t.Errorf("participants %v, want [ann bob] = [%s %s]", got, ann, bob)
	}
	if at := parseTime(t, c.CreatedAt); at.Before(before.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) {
		t.Errorf("createdAt %s, want about now (%s)", c.CreatedAt, before)
	}
	if c.LastMessageAt != nil || c.LastMessage != nil || c.UnreadCount != 0 || len(c.Messages.Nodes) != 0 {
		t.Errorf("a new conversation has activity: %+v", c)
	}
	if got := a.count("SELECT count(*)::int FROM conversation_participants WHERE conversation_id = $1", c.ID); got != 2 {
		t.Errorf("%d participant rows, want 2", got)
	}
	// Both participants see it, with the same details.
	for _, token := range []string{annToken, bobToken} {
		got := a.conversationAs(token, c.ID)
		if got.ID != c.ID || got.CreatedAt != c.CreatedAt || *got.Title != "Weekend" || !slices.Equal(userIDs(got.Participants), []string{ann, bob}) {
			t.Errorf("read back: %+v, created %+v", got, c)
		}
	}

	// A title of 200 characters (not bytes) is fine; blank or no title is null.
	for _, tc := range []struct {
		name  string
		title any
		want  *string
	}{
		{"200 characters", strings.Repeat("é", 200), new(strings.Repeat("é", 200))},
		{"blank", "   ", nil},
		{"absent", nil, nil},
	} {
		in := map[string]any{"participantIds": []string{bob}}
		if tc.title != nil {
			in["title"] = tc.title
		}
		var data struct{ CreateConversation conversationJSON }
		a.post(annToken, createConversation, map[string]any{"in": in}).into(t, &data)
		if got := data.CreateConversation.Title; (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
			t.Errorf("title %s: got %v, want %v", tc.name, got, tc.want)
		}
	}

	rowsBefore := a.rows()
	tooMany := make([]string, 101)
	for i := range tooMany {
		tooMany[i] = uuid.NewString()
	}
	for _, tc := range []struct {
		name, token string
		in          map[string]any
		code, field string
	}{
		{"unknown participant", annToken, map[string]any{"participantIds": []string{bob, uuid.NewString()}}, graph.CodeNotFound, ""},
		{"malformed participant", annToken, map[string]any{"participantIds": []string{bob, "not-an-id"}}, graph.CodeBadUserInput, "participantIds"},
		{"101 participants", annToken, map[string]any{"participantIds": tooMany}, graph.CodeBadUserInput, "participantIds"},
		{"title of 201 characters", annToken, map[string]any{"title": strings.Repeat("t", 201), "participantIds": []string{bob}}, graph.CodeBadUserInput, "title"},
		{"signed out", "", map[string]any{"participantIds": []string{bob}}, graph.CodeUnauthenticated, ""},
	} {
		r := a.post(tc.token, createConversation, map[string]any{"in": tc.in})
		if code := r.code(t); code != tc.code {
			t.Errorf("%s: code %s, want %s", tc.name, code, tc.code)
		}
		if tc.field != "" && r.Errors[0].Extensions.Field != tc.field {
			t.Errorf("%s: field %q, want %q", tc.name, r.Errors[0].Extensions.Field, tc.field)
		}
		if string(r.Data) != "null" {
			t.Errorf("%s: data %s, want null", tc.name, r.Data)
		}
	}
	a.expectRows("rejected creations", rowsBefore)
}

// TestChatSendMessage: a sent message is the viewer's, trimmed, the
// conversation's latest, unread for the others only, and moves the
// conversation to the top of everyone's inbox.
func TestChatSendMessage(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, annToken := a.user("Ann")
	bob, bobToken := a.user("Bob")
	older := a.conversation("older", []string{ann, bob}, "old news")
	target := a.conversation("target", []string{ann, bob})
	if _, err := a.admin.Exec(context.Background(), "UPDATE conversations SET created_at = now() - interval '1 hour' WHERE id = $1", target); err != nil {
		t.Fatal(err)
	}
	if got := a.inbox(bobToken); !slices.Equal(got, []string{older, target}) {
		t.Fatalf("inbox before: %v, want [older target]", got)
	}
	if u := a.conversationAs(bobToken, target).UnreadCount; u != 0 {
		t.Fatalf("unread before: %d", u)
	}

	var data struct{ SendMessage messageJSON }
	a.post(annToken, sendMessage, map[string]any{"c": target, "b": "  hello, Bob\n"}).into(t, &data)
	m := data.SendMessage
	if m.Body != "hello, Bob" {
		t.Errorf("body %q, want it trimmed", m.Body)
	}
	if m.Author.ID != ann || m.Author.DisplayName != "Ann" {
		t.Errorf("author %+v, want Ann", m.Author)
	}
	if m.Conversation == nil || m.Conversation.ID != target {
		t.Fatalf("conversation %+v, want %s", m.Conversation, target)
	}
	if m.Conversation.LastMessageAt == nil || *m.Conversation.LastMessageAt != m.CreatedAt {
		t.Errorf("lastMessageAt in the mutation %v, want the message's createdAt %s", m.Conversation.LastMessageAt, m.CreatedAt)
	}

	for _, who := range []struct {
		name, token string
		unread      int
	}{{"sender", annToken, 0}, {"other", bobToken, 1}} {
		c := a.conversationAs(who.token, target)
		if c.LastMessageAt == nil || *c.LastMessageAt != m.CreatedAt {
			t.Errorf("%s: lastMessageAt %v, want %s", who.name, c.LastMessageAt, m.CreatedAt)
		}
		if c.LastMessage == nil || c.LastMessage.ID != m.ID || c.LastMessage.Author.ID != ann || c.LastMessage.Body != "hello, Bob" {
			t.Errorf("%s: lastMessage %+v, want %s", who.name, c.LastMessage, m.ID)
		}
		if c.UnreadCount != who.unread {
			t.Errorf("%s: unreadCount %d, want %d", who.name, c.UnreadCount, who.unread)
		}
		if len(c.Messages.Nodes) != 1 || c.Messages.Nodes[0].ID != m.ID {
			t.Errorf("%s: messages %+v", who.name, c.Messages.Nodes)
		}
		if got := a.inbox(who.token); !slices.Equal(got, []string{target, older}) {
			t.Errorf("%s: inbox after %v, want [target older]", who.name, got)
		}
	}
}

// TestChatSendMessageRejected: an empty, blank or over-long body (counted
// in characters, not bytes) or a malformed conversation id is
// BAD_USER_INPUT, and changes nothing.
func TestChatSendMessageRejected(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, annToken := a.user("Ann")
	bob, bobToken := a.user("Bob")
	conv := a.conversation("", []string{ann, bob}, "first")
	before := a.rows()
	lastAt := a.lastMessageAt(conv)

	for _, tc := range []struct {
		name, conv, body, field string
	}{
		{"empty", conv, "", "body"},
		{"spaces", conv, "   ", "body"},
		{"whitespace", conv, " \n\t\r ", "body"},
		{"4001 characters", conv, strings.Repeat("é", 4001), "body"},
		{"malformed conversation id", "not-a-conversation", "hi", "conversationId"},
	} {
		r := a.post(annToken, sendMessage, map[string]any{"c": tc.conv, "b": tc.body})
		if code := r.code(t); code != graph.CodeBadUserInput {
			t.Errorf("%s: code %s, want BAD_USER_INPUT", tc.name, code)
		} else if f := r.Errors[0].Extensions.Field; f != tc.field {
			t.Errorf("%s: field %q, want %q", tc.name, f, tc.field)
		}
		if string(r.Data) != "null" {
			t.Errorf("%s: data %s", tc.name, r.Data)
		}
	}
	a.expectRows("rejected messages", before)
	if got := a.lastMessageAt(conv); got != lastAt {
		t.Errorf("last_message_at moved from %s to %s", lastAt, got)
	}
	if u := a.conversationAs(bobToken, conv).UnreadCount; u != 1 {
		t.Errorf("Bob's unreadCount %d, want 1 (the fixture's message only)", u)
	}

	// 4000 two-byte characters, with whitespace around, are accepted.
	long := strings.Repeat("é", 4000)
	var data struct{ SendMessage messageJSON }
	a.post(annToken, sendMessage, map[string]any{"c": conv, "b": " " + long + "\n"}).into(t, &data)
	if data.SendMessage.Body != long || utf8.RuneCountInString(data.SendMessage.Body) != 4000 {
		t.Errorf("4000 characters came back as %d characters", utf8.RuneCountInString(data.SendMessage.Body))
	}
	if got, want := a.count("SELECT count(*)::int FROM messages"), before["messages"]+1; got != want {
		t.Errorf("%d messages, want %d", got, want)
	}
}

// TestChatMarkConversationRead: marking read zeroes the viewer's unread
// count only, until someone else writes again.
func TestChatMarkConversationRead(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, annToken := a.user("Ann")
	bob, bobToken := a.user("Bob")
	conv := a.conversation("", []string{ann, bob}, "a1", "b1", "a2") // Ann, Bob, Ann

	unread := func(token string) int { return a.conversationAs(token, conv).UnreadCount }
	if got := unread(bobToken); got != 2 {
		t.Fatalf("Bob's unread %d, want 2", got)
	}
	if got := unread(annToken); got != 1 {
		t.Fatalf("Ann's unread %d, want 1", got)
	}

	for range 2 { // marking twice is fine
		var data struct{ MarkConversationRead conversationJSON }
		a.post(bobToken, markRead, map[string]any{"c": conv}).into(t, &data)
		if c := data.MarkConversationRead; c.ID != conv || c.UnreadCount != 0 {
			t.Errorf("markConversationRead returned %+v, want unreadCount 0", c)
		}
	}
	if got := unread(bobToken); got != 0 {
		t.Errorf("Bob's unread after marking %d, want 0", got)
	}
	if got := unread(annToken); got != 1 {
		t.Errorf("Ann's unread changed to %d by Bob's read mark", got)
	}

	var sent struct{ SendMessage messageJSON }
	a.post(annToken, sendMessage, map[string]any{"c": conv, "b": "a3"}).into(t, &sent)
	if got := unread(bobToken); got != 1 {
		t.Errorf("Bob's unread after a new message %d, want 1", got)
	}
}

const addParticipant = `mutation($c: ID!, $u: ID!) { addParticipant(conversationId: $c, userId: $u) { id participants { id } } }`

// TestChatAddParticipant: an added user sees the conversation; adding
// twice changes nothing; an unknown user is NOT_FOUND.
func TestChatAddParticipant(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, annToken := a.user("Ann")
	bob, _ := a.user("Bob")
	cat, catToken := a.user("Cat")
	conv := a.conversation("", []string{ann, bob}, "hello")
	if got := a.inbox(catToken); len(got) != 0 {
		t.Fatalf("Cat's inbox before: %v", got)
	}

	for i := range 2 {
		var data struct{ AddParticipant conversationJSON }
		a.post(annToken, addParticipant, map[string]any{"c": conv, "u": cat}).into(t, &data)
		if got := userIDs(data.AddParticipant.Participants); !slices.Equal(got, []string{ann, bob, cat}) {
			t.Errorf("add %d: participants %v, want [ann bob cat]", i+1, got)
		}
	}
	if got := a.count("SELECT count(*)::int FROM conversation_participants WHERE conversation_id = $1 AND user_id = $2", conv, cat); got != 1 {
		t.Errorf("%d participant rows for Cat, want 1", got)
	}
	if got := a.inbox(catToken); !slices.Equal(got, []string{conv}) {
		t.Errorf("Cat's inbox %v, want [%s]", got, conv)
	}
	if c := a.conversationAs(catToken, conv); len(c.Messages.Nodes) != 1 || c.Messages.Nodes[0].Body != "hello" {
		t.Errorf("Cat does not see the history: %+v", c.Messages.Nodes)
	}

	for _, tc := range []struct {
		name, user, code string
	}{
		{"unknown user", uuid.NewString(), graph.CodeNotFound},
		{"malformed user", "not-a-user", graph.CodeBadUserInput},
	} {
		r := a.post(annToken, addParticipant, map[string]any{"c": conv, "u": tc.user})
		if code := r.code(t); code != tc.code {
			t.Errorf("%s: code %s, want %s", tc.name, code, tc.code)
		}
	}
	if got := a.count("SELECT count(*)::int FROM conversation_participants WHERE conversation_id = $1", conv); got != 3 {
		t.Errorf("%d participants, want 3", got)
	}
}

// TestAuthorizationMatrix: to a non-participant, a conversation does not
// exist: every read and write of it is NOT_FOUND exactly as for an id
// nobody has, and changes nothing.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, annToken := a.user("Ann")
	bob, _ := a.user("Bob")
	cat, catToken := a.user("Cat")
	x := a.conversation("secret", []string{ann, bob}, "m1", "m2")
	own := a.conversation("cat's", []string{cat, ann}, "hi Cat")
	missing := uuid.NewString()
	messages := a.count("SELECT count(*)::int FROM messages WHERE conversation_id = $1", x)
	lastAt := a.lastMessageAt(x)

	for _, op := range []struct {
		name, query string
		vars        func(id string) map[string]any
	}{
		{"conversation", `query($c: ID!) { conversation(id: $c) { id title messages { nodes { body } } } }`,
			func(id string) map[string]any { return map[string]any{"c": id} }},
		{"sendMessage", `mutation($c: ID!) { sendMessage(input: {conversationId: $c, body: "let me in"}) { id } }`,
			func(id string) map[string]any { return map[string]any{"c": id} }},
		{"addParticipant self", addParticipant,
			func(id string) map[string]any { return map[string]any{"c": id, "u": cat} }},
		{"markConversationRead", markRead,
			func(id string) map[string]any { return map[string]any{"c": id} }},
	} {
		hidden := a.post(catToken, op.query, op.vars(x))
		absent := a.post(catToken, op.query, op.vars(missing))
		if code := hidden.code(t); code != graph.CodeNotFound {
			t.Errorf("%s of another's conversation: code %s, want NOT_FOUND", op.name, code)
		}
		// Indistinguishable from a conversation that does not exist.
		if hidden.Status != absent.Status || string(hidden.Data) != string(absent.Data) ||
			!slices.Equal(hidden.codes(), absent.codes()) || absent.Errors[0].Message != hidden.Errors[0].Message {
			t.Errorf("%s: another's conversation answers\n  %s\nbut a missing one\n  %s", op.name, hidden.Raw, absent.Raw)
		}
		if strings.Contains(string(hidden.Raw), "secret") || strings.Contains(string(hidden.Raw), "m1") {
			t.Errorf("%s leaks the conversation: %s", op.name, hidden.Raw)
		}
	}
	if got := a.inbox(catToken); !slices.Equal(got, []string{own}) {
		t.Errorf("Cat's inbox %v, want only her own %s", got, own)
	}
	if got := a.count("SELECT count(*)::int FROM messages WHERE conversation_id = $1", x); got != messages {
		t.Errorf("Cat's message was stored: %d messages, want %d", got, messages)
	}
	if got := a.lastMessageAt(x); got != lastAt {
		t.Errorf("last_message_at moved from %s to %s", lastAt, got)
	}
	if got := a.count("SELECT count(*)::int FROM conversation_participants WHERE conversation_id = $1 AND user_id = $2", x, cat); got != 0 {
		t.Errorf("Cat added herself")
	}
	if got := a.count("SELECT count(*)::int FROM conversations"); got != 2 {
		t.Errorf("%d conversations, want 2", got)
	}

	// A participant reaches the conversation from its messages.
	c := a.conversationAs(annToken, x)
	var data struct{ Conversation conversationJSON }
	a.post(annToken, `query($c: ID!) { conversation(id: $c) { messages { nodes { id conversation { id title } } } } }`,
		map[string]any{"c": x}).into(t, &data)
	if len(data.Conversation.Messages.Nodes) != 2 {
		t.Fatalf("messages: %+v", data.Conversation.Messages.Nodes)
	}
	for _, m := range data.Conversation.Messages.Nodes {
		if m.Conversation == nil || m.Conversation.ID != x || m.Conversation.Title == nil || *m.Conversation.Title != *c.Title {
			t.Errorf("message %s: conversation %+v, want %s", m.ID, m.Conversation, x)
		}
	}
}

// TestUserProfiles: anyone signed in can look up a user, but an email is
// shown only to its owner, wherever the user appears.
func TestUserProfiles(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, annToken := a.user("Ann")
	bob, _ := a.user("Bob")
	conv := a.conversation("", []string{bob, ann}, "from Bob") // Bob writes

	var data struct {
		Me           userJSON
		Other        *userJSON
		Self         *userJSON
		Nobody       *userJSON
		Conversation conversationJSON
	}
	r := a.post(annToken, `query($ann: ID!, $bob: ID!, $nobody: ID!, $c: ID!) {
		me { id displayName email }
		other: user(id: $bob) { id displayName email }
		self: user(id: $ann) { id email }
		nobody: user(id: $nobody) { id }
		conversation(id: $c) { participants { id email } lastMessage { author { id email } } } }`,
		map[string]any{"ann": ann, "bob": bob, "nobody": uuid.NewString(), "c": conv})
	r.into(t, &data)
	if data.Me.ID != ann || data.Me.DisplayName != "Ann" || data.Me.Email == nil || *data.Me.Email != "ann@example.com" {
		t.Errorf("me: %+v", data.Me)
	}
	if data.Other == nil || data.Other.ID != bob || data.Other.DisplayName != "Bob" || data.Other.Email != nil {
		t.Errorf("another user: %+v, want Bob without email", data.Other)
	}
	if data.Self == nil || data.Self.Email == nil || *data.Self.Email != "ann@example.com" {
		t.Errorf("user(id: me): %+v, want the email", data.Self)
	}
	if data.Nobody != nil {
		t.Errorf("unknown user: %+v, want null", data.Nobody)
	}
	for _, p := range data.Conversation.Participants {
		if (p.ID == ann) != (p.Email != nil) {
			t.Errorf("participant %s: email %v", p.ID, p.Email)
		}
	}
	if lm := data.Conversation.LastMessage; lm == nil || lm.Author.ID != bob || lm.Author.Email != nil {
		t.Errorf("message author: %+v, want Bob without email", lm)
	}

	r = a.post("", `query($bob: ID!) { user(id: $bob) { id displayName } }`, map[string]any{"bob": bob})
	if code := r.code(t); code != graph.CodeUnauthenticated {
		t.Errorf("user without a token: code %s, want UNAUTHENTICATED", code)
	}
	if string(r.Data) != `{"user":null}` {
		t.Errorf("user without a token: data %s", r.Data)
	}
}

// TestPaginationMessages: 25 messages page back in time as 10, 10, 5,
// newest first, without overlap; past the end is an empty page.
func TestPaginationMessages(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, token := a.user("Ann")
	bodies := make([]string, 25)
	for i := range bodies {
		bodies[i] = fmt.Sprintf("m%02d", i)
	}
	conv := a.conversation("", []string{ann}, bodies...)

	seen := map[string]bool{}
	var got []string
	var after any
	var last time.Time
	for i, want := range []struct {
		n    int
		next bool
	}{{10, true}, {10, true}, {5, false}, {0, false}} {
		var p messagePageJSON
		a.post(token, messagePage, map[string]any{"c": conv, "after": after}).into(t, &p)
		m := p.Conversation.Messages
		if len(m.Edges) != want.n || m.PageInfo.HasNextPage != want.next {
			t.Fatalf("page %d: %d messages, hasNextPage %v; want %d, %v", i+1, len(m.Edges), m.PageInfo.HasNextPage, want.n, want.next)
		}
		if want.n == 0 {
			if m.PageInfo.EndCursor != nil {
				t.Errorf("empty page: endCursor %q, want null", *m.PageInfo.EndCursor)
			}
			break
		}
		if *m.PageInfo.EndCursor != m.Edges[len(m.Edges)-1].Cursor {
			t.Errorf("page %d: endCursor is not the last edge's cursor", i+1)
		}
		for _, e := range m.Edges {
			if seen[e.Node.ID] {
				t.Errorf("page %d: message %s again", i+1, e.Node.Body)
			}
			seen[e.Node.ID] = true
			at := parseTime(t, e.Node.CreatedAt)
			if !last.IsZero() && !at.Before(last) {
				t.Errorf("page %d: %s at %s is not older than the message before it (%s)", i+1, e.Node.Body, at, last)
			}
			last = at
			got = append(got, e.Node.Body)
		}
		after = *m.PageInfo.EndCursor
	}
	want := slices.Clone(bodies)
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Errorf("paged through %v, want %v", got, want)
	}
}

// TestPaginationConversations: five conversations page two at a time in
// activity order (last message, else creation; ties broken by id),
// without overlap.
func TestPaginationConversations(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, token := a.user("Ann")
	bob, _ := a.user("Bob")
	base := time.Now().Truncate(time.Second)
	// activity in minutes before base; -1 means no message, created 5 min ago.
	type conv struct {
		id       string
		activity time.Time
	}
	var convs []conv
	for i, minutes := range []int{10, -1, 7, 7, 1} {
		id := a.conversation(fmt.Sprintf("c%d", i), []string{ann, bob})
		created, last := base.Add(-time.Hour), any(base.Add(-time.Duration(minutes)*time.Minute))
		activity := last.(time.Time)
		if minutes < 0 {
			created, last, activity = base.Add(-5*time.Minute), nil, base.Add(-5*time.Minute)
		}
		if _, err := a.admin.Exec(context.Background(), "UPDATE conversations SET created_at = $2, last_message_at = $3 WHERE id = $1", id, created, last); err != nil {
			t.Fatal(err)
		}
		convs = append(convs, conv{id, activity})
	}
	slices.SortFunc(convs, func(x, y conv) int {
		if c := y.activity.Compare(x.activity); c != 0 {
			return c
		}
		return strings.Compare(y.id, x.id)
	})
	want := ids(convs, func(c conv) string { return c.id })

	var got []string
	var after any
	for i, wantNext := range []bool{true, true, false} {
		var data struct {
			Conversations struct {
				Nodes    []conversationJSON
				PageInfo pageInfoJSON
			}
		}
		a.post(token, `query($after: String) { conversations(first: 2, after: $after) { nodes { id } pageInfo { hasNextPage endCursor } } }`,
			map[string]any{"after": after}).into(t, &data)
		c := data.Conversations
		if c.PageInfo.HasNextPage != wantNext {
			t.Errorf("page %d: hasNextPage %v, want %v", i+1, c.PageInfo.HasNextPage, wantNext)
		}
		got = append(got, conversationIDs(c.Nodes)...)
		if c.PageInfo.EndCursor == nil {
			t.Fatalf("page %d: no endCursor", i+1)
		}
		after = *c.PageInfo.EndCursor
	}
	if !slices.Equal(got, want) {
		t.Errorf("paged through\n  %v\nwant\n  %v", got, want)
	}
}

// TestPaginationSamePageTwice: asking for the same page twice in one
// operation (two aliases, or both nodes and edges of the inbox) gives
// the same page twice, not a page with every message twice.
func TestPaginationSamePageTwice(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	ann, token := a.user("Ann")
	conv := a.conversation("", []string{ann}, "one", "two", "three")

	var byID struct {
		Conversation struct {
			A, B struct {
				Nodes    []messageJSON
				PageInfo pageInfoJSON
			}
		}
	}
	a.post(token, `query($c: ID!) { conversation(id: $c) {
		a: messages(first: 3) { nodes { body } pageInfo { hasNextPage } }
		b: messages(first: 3) { nodes { body } pageInfo { hasNextPage } } } }`, map[string]any{"c": conv}).into(t, &byID)
	bodies := func(ms []messageJSON) []string { return ids(ms, func(m messageJSON) string { return m.Body }) }
	want := []string{"three", "two", "one"}
	for name, p := range map[string]struct {
		Nodes    []messageJSON
		PageInfo pageInfoJSON
	}{"a": byID.Conversation.A, "b": byID.Conversation.B} {
		if got := bodies(p.Nodes); !slices.Equal(got, want) || p.PageInfo.HasNextPage {
			t.Errorf("alias %s: %v, hasNextPage %v; want %v, false", name, got, p.PageInfo.HasNextPage, want)
		}
	}

	var inbox struct {
		Conversations struct {
			Nodes []conversationJSON
			Edges []struct{ Node conversationJSON }
		}
	}
	a.post(token, `{ conversations { nodes { messages(first: 10) { nodes { body } } }
		edges { node { messages(first: 10) { nodes { body } } } } } }`, nil).into(t, &inbox)
	if n := inbox.Conversations.Nodes; len(n) != 1 || !slices.Equal(bodies(n[0].Messages.Nodes), want) {
		t.Errorf("nodes: %+v, want one conversation with %v", n, want)
	}
	if e := inbox.Conversations.Edges; len(e) != 1 || !slices.Equal(bodies(e[0].Node.Messages.Nodes), want) {
		t.Errorf("edges: %+v, want one conversation with %v", e, want)
	}
}
