package load

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The raw ceiling: what a plain pgx program needs to fetch the Inbox's
// data, on a plain pgxpool of the server's size with pgx's prepared
// statements, and nothing else: no scope, no pre-ping, no statement
// timeout, no GraphQL. Four statements: the viewer's page of
// conversations with their unread counts, their participants, their
// latest messages, and the users named. Ids travel as uuids, in binary,
// as chatql's own statements read them: a cast to text costs PostgreSQL
// its uuid_out for every id, and sorts participants as text.

const (
	rawConversations = `
		SELECT c.id, c.title,
		       (SELECT count(*) FROM messages m
		        WHERE m.conversation_id = p.conversation_id AND m.author_id <> p.user_id
		          AND m.seq > p.last_read_seq)::int
		FROM conversation_participants p JOIN conversations c ON c.id = p.conversation_id
		WHERE p.user_id = $1
		ORDER BY coalesce(c.last_message_at, c.created_at) DESC, c.id DESC
		LIMIT $2`
	rawParticipants = `
		SELECT conversation_id, user_id FROM conversation_participants
		WHERE conversation_id = ANY($1::uuid[]) ORDER BY conversation_id, joined_at`
	rawMessages = `
		SELECT k.conv, m.id, m.body, m.created_at, m.author_id
		FROM unnest($1::uuid[]) AS k(conv)
		CROSS JOIN LATERAL (
			SELECT * FROM messages m WHERE m.conversation_id = k.conv ORDER BY m.seq DESC LIMIT $2
		) m`
	rawUsers = `SELECT id, display_name FROM users WHERE id = ANY($1::uuid[])`
)

// RawUser, RawMessage and RawConversation are the Inbox query's data in
// the shape of its JSON.
type RawUser struct {
	ID          string `json:"id"`
	DisplayName string `json:"displayName"`
}

type RawMessage struct {
	ID        string    `json:"id"`
	Body      string    `json:"body"`
	CreatedAt time.Time `json:"createdAt"`
	Author    *RawUser  `json:"author"`
}

type RawConversation struct {
	ID           string        `json:"id"`
	Title        *string       `json:"title"`
	UnreadCount  int           `json:"unreadCount"`
	Participants []*RawUser    `json:"participants"`
	LastMessage  *RawMessage   `json:"lastMessage"`
	Messages     RawMessageSet `json:"messages"`
}

type RawMessageSet struct {
	Nodes []*RawMessage `json:"nodes"`
}

// FetchInbox loads the Inbox query's data for viewer: conversations
// conversations with their latest messages each.
func FetchInbox(ctx context.Context, pool *pgxpool.Pool, viewer string, conversations, messages int) ([]*RawConversation, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	var convs []*RawConversation
	var ids []string
	byID := map[string]*RawConversation{}
	rows, _ := conn.Query(ctx, rawConversations, viewer, conversations)
	for rows.Next() {
		c := &RawConversation{}
		if err := rows.Scan(&c.ID, &c.Title, &c.UnreadCount); err != nil {
			rows.Close()
			return nil, err
		}
		convs, ids = append(convs, c), append(ids, c.ID)
		byID[c.ID] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("conversations: %w", err)
	}
	users := map[string]*RawUser{}
	user := func(id string) *RawUser {
		u, ok := users[id]
		if !ok {
			u = &RawUser{ID: id}
			users[id] = u
		}
		return u
	}
	var conv, uid string
	rows, _ = conn.Query(ctx, rawParticipants, ids)
	if _, err := pgx.ForEachRow(rows, []any{&conv, &uid}, func() error {
		c := byID[conv]
		c.Participants = append(c.Participants, user(uid))
		return nil
	}); err != nil {
		return nil, fmt.Errorf("participants: %w", err)
	}
	var m RawMessage
	rows, _ = conn.Query(ctx, rawMessages, ids, messages)
	if _, err := pgx.ForEachRow(rows, []any{&conv, &m.ID, &m.Body, &m.CreatedAt, &uid}, func() error {
		c := byID[conv]
		msg := m
		msg.Author = user(uid)
		c.Messages.Nodes = append(c.Messages.Nodes, &msg)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("messages: %w", err)
	}
	for _, c := range convs {
		if len(c.Messages.Nodes) > 0 {
			c.LastMessage = c.Messages.Nodes[0]
		}
		if c.Messages.Nodes == nil {
			c.Messages.Nodes = []*RawMessage{}
		}
	}
	names := make([]string, 0, len(users))
	for id := range users {
		names = append(names, id)
	}
	var name string
	rows, _ = conn.Query(ctx, rawUsers, names)
	if _, err := pgx.ForEachRow(rows, []any{&uid, &name}, func() error {
		users[uid].DisplayName = name
		return nil
	}); err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	return convs, nil
}

// RawCeilingRun runs FetchInbox for Concurrency clients, back to back,
// for Duration.
type RawCeilingRun struct {
	Pool        *pgxpool.Pool
	Clients     []Client
	Concurrency int
	Duration    time.Duration
	// Conversations and Messages are the Inbox query's page sizes.
	Conversations, Messages int
	Sample                  func(ctx context.Context) (int, error)
}

// Run executes the load and returns what it measured.
func (c RawCeilingRun) Run(ctx context.Context) (Result, error) {
	return closedLoop(ctx, ModeRaw, c.Clients, c.Concurrency, c.Duration, c.Sample, func(ctx context.Context, viewer string) error {
		_, err := FetchInbox(ctx, c.Pool, viewer, c.Conversations, c.Messages)
		return err
	})
}
