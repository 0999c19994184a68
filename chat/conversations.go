package chat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"chatql/dbpool"
)

const conversationColumns = "c.id, c.title, c.created_at, c.last_message_at, c.last_seq"

// conversationDest is where conversationColumns scan to, in their order.
func conversationDest(c *Conversation) []any {
	return []any{&c.ID, &c.Title, &c.CreatedAt, &c.LastMessageAt, &c.LastSeq}
}

func scanConversation(row pgx.CollectableRow) (Conversation, error) {
	var c Conversation
	err := row.Scan(conversationDest(&c)...)
	return c, err
}

// ConversationPage is one page of the inbox.
type ConversationPage struct {
	Conversations []Conversation
	HasNext       bool
	// Unread is each conversation's unread count (as UnreadCounts), when
	// asked for (InboxWithUnread); nil otherwise.
	Unread map[string]int
}

// Inbox lists the viewer's conversations, most recent activity first.
func Inbox(ctx context.Context, db dbpool.DB, viewer string, first int, after string) (ConversationPage, error) {
	return inbox(ctx, db, viewer, first, after, false)
}

// InboxWithUnread is Inbox with each conversation's unread count, counted
// by the same statement: the inbox screen shows both, and one statement
// is one round trip fewer than Inbox and UnreadCounts.
func InboxWithUnread(ctx context.Context, db dbpool.DB, viewer string, first int, after string) (ConversationPage, error) {
	return inbox(ctx, db, viewer, first, after, true)
}

func inbox(ctx context.Context, db dbpool.DB, viewer string, first int, after string, unread bool) (ConversationPage, error) {
	first, err := PageSize("first", first)
	if err != nil {
		return ConversationPage{}, err
	}
	cur, err := parseCursor("after", after)
	if err != nil {
		return ConversationPage{}, err
	}
	afterAt, afterID := cursorArgs(cur)
	type row struct {
		conv   Conversation
		unread int
	}
	// The count is the one UnreadCounts takes, run only when $5 is true.
	rows, err := dbpool.Collect(ctx, db, `
		SELECT `+conversationColumns+`,
		       CASE WHEN $5 THEN (SELECT count(*) FROM messages m
		                          WHERE m.conversation_id = p.conversation_id
		                            AND m.author_id <> p.user_id
		                            AND m.seq > p.last_read_seq)::int
		       ELSE 0 END
		FROM conversation_participants p
		JOIN conversations c ON c.id = p.conversation_id
		WHERE p.user_id = $1
		  AND ($2::timestamptz IS NULL OR (coalesce(c.last_message_at, c.created_at), c.id) < ($2, $3::uuid))
		ORDER BY coalesce(c.last_message_at, c.created_at) DESC, c.id DESC
		LIMIT $4`, []any{viewer, afterAt, afterID, first + 1, unread},
		func(cr pgx.CollectableRow) (row, error) {
			var r row
			err := cr.Scan(append(conversationDest(&r.conv), &r.unread)...)
			return r, err
		})
	if err != nil {
		return ConversationPage{}, fmt.Errorf("list conversations: %w", err)
	}
	page := ConversationPage{HasNext: len(rows) > first}
	if page.HasNext {
		rows = rows[:first]
	}
	page.Conversations = make([]Conversation, len(rows))
	if unread {
		page.Unread = make(map[string]int, len(rows))
	}
	for i, r := range rows {
		r.conv.loadedFor = viewer
		page.Conversations[i] = r.conv
		if unread {
			page.Unread[r.conv.ID] = r.unread
		}
	}
	return page, nil
}

// ConversationsByID loads the conversations among ids that the viewer takes
// part in; the others are absent, exactly as if they did not exist.
func ConversationsByID(ctx context.Context, db dbpool.DB, viewer string, ids []string) (map[string]Conversation, error) {
	convs, err := dbpool.Collect(ctx, db, `
		SELECT `+conversationColumns+`
		FROM conversations c
		JOIN conversation_participants p ON p.conversation_id = c.id AND p.user_id = $2
		WHERE c.id = ANY($1::uuid[])`, []any{ids, viewer}, scanConversation)
	if err != nil {
		return nil, fmt.Errorf("load conversations: %w", err)
	}
	out := make(map[string]Conversation, len(convs))
	for _, c := range convs {
		c.loadedFor = viewer
		out[c.ID] = c
	}
	return out, nil
}

// ParticipantsByConversation lists the participants of the conversations
// among ids that the viewer takes part in, in the order they joined.
func ParticipantsByConversation(ctx context.Context, db dbpool.DB, viewer string, ids []string) (map[string][]User, error) {
	type row struct {
		conv string
		user User
	}
	rows, err := dbpool.Collect(ctx, db, `
		SELECT p.conversation_id, `+userColumns+`
		FROM conversation_participants v
		JOIN conversation_participants p ON p.conversation_id = v.conversation_id
		JOIN users u ON u.id = p.user_id
		WHERE v.conversation_id = ANY($1::uuid[]) AND v.user_id = $2
		ORDER BY p.conversation_id, p.joined_at, u.id`, []any{ids, viewer},
		func(cr pgx.CollectableRow) (row, error) {
			var r row
			err := cr.Scan(&r.conv, &r.user.ID, &r.user.Email, &r.user.DisplayName, &r.user.CreatedAt)
			return r, err
		})
	if err != nil {
		return nil, fmt.Errorf("load participants: %w", err)
	}
	out := make(map[string][]User)
	for _, r := range rows {
		out[r.conv] = append(out[r.conv], r.user)
	}
	return out, nil
}

// UnreadCounts counts, per conversation among ids that the viewer takes
// part in, the messages from others committed after the viewer's read mark
// (MarkRead).
func UnreadCounts(ctx context.Context, db dbpool.DB, viewer string, ids []string) (map[string]int, error) {
	type row struct {
		conv  string
		count int
	}
	rows, err := dbpool.Collect(ctx, db, `
		SELECT p.conversation_id,
		       (SELECT count(*) FROM messages m
		        WHERE m.conversation_id = p.conversation_id
		          AND m.author_id <> p.user_id
		          AND m.seq > p.last_read_seq)::int
		FROM conversation_participants p
		WHERE p.conversation_id = ANY($1::uuid[]) AND p.user_id = $2`, []any{ids, viewer},
		func(cr pgx.CollectableRow) (row, error) {
			var r row
			err := cr.Scan(&r.conv, &r.count)
			return r, err
		})
	if err != nil {
		return nil, fmt.Errorf("count unread messages: %w", err)
	}
	out := make(map[string]int, len(rows))
	for _, r := range rows {
		out[r.conv] = r.count
	}
	return out, nil
}

// CreateConversationInput is what a new conversation needs.
type CreateConversationInput struct {
	Title          *string
	ParticipantIDs []string
}

// CreateConversation starts a conversation between the viewer and the given
// users. Run it in a transaction: it writes several rows.
func CreateConversation(ctx context.Context, db dbpool.DB, viewer string, in CreateConversationInput) (Conversation, error) {
	var title *string
	if in.Title != nil {
		t := strings.TrimSpace(*in.Title)
		if err := textLength("title", t, 0, MaxTitleLength); err != nil {
			return Conversation{}, err
		}
		if t != "" {
			title = &t
		}
	}
	if len(in.ParticipantIDs) > MaxParticipants {
		return Conversation{}, badInput("participantIds", "at most %d participants", MaxParticipants)
	}
	ids := []string{viewer}
	for _, raw := range in.ParticipantIDs {
		id, err := ParseID("participantIds", raw)
		if err != nil {
			return Conversation{}, err
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	users, err := UsersByID(ctx, db, ids)
	if err != nil {
		return Conversation{}, err
	}
	for _, id := range ids {
		if _, ok := users[id]; !ok {
			return Conversation{}, fmt.Errorf("participant %s: %w", id, ErrNotFound)
		}
	}

	conv, err := dbpool.CollectOne(ctx, db, `
		INSERT INTO conversations AS c (title) VALUES ($1)
		RETURNING `+conversationColumns, []any{title}, scanConversation)
	if err != nil {
		return Conversation{}, fmt.Errorf("insert conversation: %w", err)
	}
	if _, err := db.Exec(ctx, `
		INSERT INTO conversation_participants (conversation_id, user_id, joined_at)
		SELECT $1, u, now() + (ord - 1) * interval '1 microsecond'
		FROM unnest($2::uuid[]) WITH ORDINALITY AS t(u, ord)`, conv.ID, ids); err != nil {
		return Conversation{}, fmt.Errorf("insert participants: %w", err)
	}
	return conv, nil
}

// AddParticipant adds a user to a conversation the viewer takes part in.
// Adding someone already there changes nothing. A conversation holds the
// same number of people as CreateConversation allows (its creator and
// MaxParticipants others). Run it in a transaction: the count is taken
// under the conversation's lock, so concurrent adds cannot overshoot it.
func AddParticipant(ctx context.Context, db dbpool.DB, viewer, conversationID, userID string) (Conversation, error) {
	conv, err := conversationForViewer(ctx, db, viewer, conversationID)
	if err != nil {
		return Conversation{}, err
	}
	users, err := UsersByID(ctx, db, []string{userID})
	if err != nil {
		return Conversation{}, err
	}
	if _, ok := users[userID]; !ok {
		return Conversation{}, fmt.Errorf("user %s: %w", userID, ErrNotFound)
	}
	// Lock first, count after: a statement's snapshot is taken when it
	// starts, so a count in the locking statement itself would not see an
	// add committed while it waited for the lock.
	if _, err := db.Exec(ctx, `SELECT 1 FROM conversations WHERE id = $1 FOR NO KEY UPDATE`, conversationID); err != nil {
		return Conversation{}, fmt.Errorf("lock conversation: %w", err)
	}
	type members struct {
		count   int
		present bool
	}
	m, err := dbpool.CollectOne(ctx, db, `
		SELECT count(*)::int, coalesce(bool_or(user_id = $2), false)
		FROM conversation_participants WHERE conversation_id = $1`,
		[]any{conversationID, userID}, func(row pgx.CollectableRow) (members, error) {
			var m members
			err := row.Scan(&m.count, &m.present)
			return m, err
		})
	if err != nil {
		return Conversation{}, fmt.Errorf("count participants: %w", err)
	}
	if m.present {
		return conv, nil
	}
	if m.count >= MaxParticipants+1 {
		return Conversation{}, badInput("userId", "a conversation has at most %d participants", MaxParticipants+1)
	}
	if _, err := db.Exec(ctx, `
		INSERT INTO conversation_participants (conversation_id, user_id) VALUES ($1, $2)
		ON CONFLICT DO NOTHING`, conversationID, userID); err != nil {
		return Conversation{}, fmt.Errorf("add participant: %w", err)
	}
	return conv, nil
}

// MarkRead records that the viewer has read everything in the conversation:
// the mark is the seq of its latest message. Run it in a transaction. The
// mark waits for the sends in progress (they hold the conversation's lock
// until they commit) and holds a share of that lock until it commits
// itself, so that the messages it covers are exactly those committed
// before it, all of which its transaction sees, and every later one counts
// as unread.
func MarkRead(ctx context.Context, db dbpool.DB, viewer, conversationID string) (Conversation, error) {
	// The conversation's lock is taken before the participant row's, as in
	// SendMessage. A locking read that waited returns the row as the
	// transaction it waited for left it, so last_seq includes that send.
	tag, err := db.Exec(ctx, `
		WITH c AS (
			SELECT c.last_seq FROM conversations c
			WHERE c.id = $1
			  AND EXISTS (SELECT 1 FROM conversation_participants p WHERE p.conversation_id = c.id AND p.user_id = $2)
			FOR SHARE
		)
		UPDATE conversation_participants p
		SET last_read_seq = greatest(p.last_read_seq, c.last_seq), last_read_at = greatest(p.last_read_at, now())
		FROM c WHERE p.conversation_id = $1 AND p.user_id = $2`, conversationID, viewer)
	if err != nil {
		return Conversation{}, fmt.Errorf("mark read: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return Conversation{}, fmt.Errorf("conversation %s: %w", conversationID, ErrNotFound)
	}
	return conversationForViewer(ctx, db, viewer, conversationID)
}

// conversationForViewer loads one conversation, ErrNotFound unless the
// viewer takes part in it.
func conversationForViewer(ctx context.Context, db dbpool.DB, viewer, id string) (Conversation, error) {
	conv, err := dbpool.CollectOne(ctx, db, `
		SELECT `+conversationColumns+`
		FROM conversations c
		JOIN conversation_participants p ON p.conversation_id = c.id AND p.user_id = $2
		WHERE c.id = $1`, []any{id, viewer}, scanConversation)
	if errors.Is(err, pgx.ErrNoRows) {
		return Conversation{}, fmt.Errorf("conversation %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Conversation{}, fmt.Errorf("load conversation: %w", err)
	}
	conv.loadedFor = viewer
	return conv, nil
}
