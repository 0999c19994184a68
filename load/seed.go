package load

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"
)

// DataSet sizes the seeded data. The defaults give every client a full
// inbox, one user a larger one, and every conversation enough messages
// for full pages.
type DataSet struct {
	Users         int
	Conversations int
	Messages      int
	// HeavyUserConversations is how many conversations the first user is in.
	HeavyUserConversations int
	// Seed makes the data set deterministic.
	Seed uint64
}

// DefaultDataSet is what `chatload --seed` creates. Every user is in
// about 32 conversations of 2 to 6 participants (at least FullInbox for
// nearly all of them), and every conversation has about 50 messages: the
// Inbox of each client is a full page, 20 conversations of 10 messages.
var DefaultDataSet = DataSet{Users: 1000, Conversations: 8000, Messages: 400_000, HeavyUserConversations: 60, Seed: 1}

// FullInbox is how many conversations a load client's user is in at
// least (Clients): a full Inbox page.
const FullInbox = 20

// UserPassword is every seeded user's password.
const UserPassword = "chatload-password"

// UserEmail is the email of seeded user i (0-based).
func UserEmail(i int) string { return fmt.Sprintf("load%04d@chatload.test", i) }

// ErrNotEmpty is returned when seeding a database that already has users.
var ErrNotEmpty = errors.New("database already has users")

// Seed fills an empty, migrated database with ds using COPY, and returns
// the user ids in order. The same DataSet always gives the same rows.
func Seed(ctx context.Context, conn *pgx.Conn, ds DataSet) ([]string, error) {
	var existing int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&existing); err != nil {
		return nil, fmt.Errorf("count users: %w", err)
	}
	if existing > 0 {
		return nil, ErrNotEmpty
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(UserPassword), bcrypt.MinCost)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(ds.Seed, ds.Seed^0x9e3779b97f4a7c15))
	idSource := rand.NewChaCha8([32]byte{byte(ds.Seed)})
	newID := func() string { return uuid.Must(uuid.NewRandomFromReader(idSource)).String() }
	epoch := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	users := make([]string, ds.Users)
	userRows := make([][]any, ds.Users)
	for i := range users {
		users[i] = newID()
		userRows[i] = []any{users[i], UserEmail(i), fmt.Sprintf("Load User %d", i), string(hash), epoch}
	}

	type conversation struct {
		id      string
		members []int
	}
	convs := make([]conversation, ds.Conversations)
	partRows := make([][]any, 0, ds.Conversations*4)
	convRows := make([][]any, ds.Conversations)
	for i := range convs {
		c := conversation{id: newID()}
		n := 2 + rng.IntN(5) // 2 to 6 participants
		if i < ds.HeavyUserConversations {
			c.members = append(c.members, 0)
		}
		for len(c.members) < n {
			u := 1 + rng.IntN(ds.Users-1)
			if !slices.Contains(c.members, u) {
				c.members = append(c.members, u)
			}
		}
		convs[i] = c
		created := epoch.Add(time.Duration(i) * time.Second)
		convRows[i] = []any{c.id, fmt.Sprintf("Conversation %d", i), created}
		for j, m := range c.members {
			partRows = append(partRows, []any{c.id, users[m], created.Add(time.Duration(j) * time.Microsecond)})
		}
	}

	msgRows := make([][]any, ds.Messages)
	for i := range msgRows {
		c := convs[rng.IntN(len(convs))]
		author := c.members[rng.IntN(len(c.members))]
		at := epoch.Add(time.Hour + time.Duration(i)*time.Second)
		msgRows[i] = []any{newID(), c.id, users[author], fmt.Sprintf("Message %d: the quick brown fox jumps over the lazy dog.", i), at}
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx)
	for _, cp := range []struct {
		table string
		cols  []string
		rows  [][]any
	}{
		{"users", []string{"id", "email", "display_name", "password_hash", "created_at"}, userRows},
		{"conversations", []string{"id", "title", "created_at"}, convRows},
		{"conversation_participants", []string{"conversation_id", "user_id", "joined_at"}, partRows},
		{"messages", []string{"id", "conversation_id", "author_id", "body", "created_at"}, msgRows},
	} {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{cp.table}, cp.cols, pgx.CopyFromRows(cp.rows)); err != nil {
			return nil, fmt.Errorf("copy %s: %w", cp.table, err)
		}
	}
	// Conversations' last activity, and read marks half way through, so
	// that unread counts are not all zero.
	for _, sql := range []string{
		`UPDATE conversations c SET last_message_at = m.last
		 FROM (SELECT conversation_id, max(created_at) AS last FROM messages GROUP BY conversation_id) m
		 WHERE m.conversation_id = c.id`,
		`UPDATE conversation_participants p SET last_read_at = c.created_at + (c.last_message_at - c.created_at) / 2
		 FROM conversations c WHERE c.id = p.conversation_id AND c.last_message_at IS NOT NULL`,
		`UPDATE conversation_participants p SET last_read_seq = coalesce(
		     (SELECT max(m.seq) FROM messages m WHERE m.conversation_id = p.conversation_id AND m.created_at <= p.last_read_at), 0)
		 WHERE p.last_read_at IS NOT NULL`,
	} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return nil, fmt.Errorf("derive activity: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		return nil, fmt.Errorf("vacuum analyze: %w", err)
	}
	return users, nil
}
