// Package demo owns the demo data set that `make run` seeds into a fresh
// local database, so that a newcomer has conversations to query at once.
package demo

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"chatql/dbpool"
)

// Password is every demo user's password. It is documented in the README;
// the demo data only ever goes into the private local database.
const Password = "chatql-demo"

// User is a demo account.
type User struct {
	Email, DisplayName string
}

// Users are the demo accounts, in the order the README lists them.
var Users = []User{
	{"alice@example.com", "Alice"},
	{"bob@example.com", "Bob"},
	{"carol@example.com", "Carol"},
	{"dave@example.com", "Dave"},
}

type conversation struct {
	title   string
	members []int // indexes into Users
	lines   []line
}

type line struct {
	author int
	body   string
}

var conversations = []conversation{
	{"Launch plan", []int{0, 1, 2}, []line{
		{0, "Morning! Is the pool config ready for the launch?"},
		{1, "Size 3, overflow 2: five connections, matching the session-mode limit."},
		{2, "And /health/db-pool is wired into the dashboard."},
		{0, "Great. Let's ship it."},
	}},
	{"", []int{0, 1}, []line{
		{1, "Lunch today?"},
		{0, "Sure, 12:30 at the usual place."},
	}},
	{"Book club", []int{0, 2, 3}, []line{
		{3, "Next pick: The Design of Everyday Things?"},
		{2, "Read it twice already, happy to go again."},
		{0, "Works for me."},
	}},
	{"", []int{1, 3}, []line{
		{3, "Did the load test finish?"},
		{1, "Yes: zero errors at 256 clients."},
	}},
}

// Seed inserts the demo data unless the database already has users; it is
// safe to call on every start. It reports whether it inserted anything.
func Seed(ctx context.Context, pool *dbpool.Pool) (bool, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte(Password), bcrypt.DefaultCost)
	if err != nil {
		return false, fmt.Errorf("hash demo password: %w", err)
	}
	seeded := false
	err = pool.WithTx(ctx, func(db dbpool.DB) error {
		// Serialise concurrent first starts of several replicas.
		if _, err := db.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('chatql.demo.seed'))"); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		exists, err := dbpool.CollectOne(ctx, db, "SELECT EXISTS (SELECT 1 FROM users)", nil, pgx.RowTo[bool])
		if err != nil {
			return fmt.Errorf("check for users: %w", err)
		}
		if exists {
			return nil
		}
		ids := make([]string, len(Users))
		for i, u := range Users {
			ids[i], err = dbpool.CollectOne(ctx, db,
				"INSERT INTO users (email, display_name, password_hash) VALUES ($1, $2, $3) RETURNING id::text",
				[]any{u.Email, u.DisplayName, string(hash)}, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("insert user %s: %w", u.Email, err)
			}
		}
		start := time.Now().Add(-time.Duration(len(conversations)) * time.Hour)
		for ci, c := range conversations {
			var title any
			if c.title != "" {
				title = c.title
			}
			convStart := start.Add(time.Duration(ci) * time.Hour)
			convID, err := dbpool.CollectOne(ctx, db,
				"INSERT INTO conversations (title, created_at) VALUES ($1, $2) RETURNING id::text",
				[]any{title, convStart}, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("insert conversation: %w", err)
			}
			for _, m := range c.members {
				if _, err := db.Exec(ctx,
					"INSERT INTO conversation_participants (conversation_id, user_id, joined_at) VALUES ($1, $2, $3)",
					convID, ids[m], convStart); err != nil {
					return fmt.Errorf("insert participant: %w", err)
				}
			}
			var last time.Time
			for li, l := range c.lines {
				last = convStart.Add(time.Duration(li+1) * time.Minute)
				if _, err := db.Exec(ctx,
					"INSERT INTO messages (conversation_id, author_id, body, created_at) VALUES ($1, $2, $3, $4)",
					convID, ids[l.author], l.body, last); err != nil {
					return fmt.Errorf("insert message: %w", err)
				}
			}
			if _, err := db.Exec(ctx, `
				UPDATE conversations SET last_message_at = $2 WHERE id = $1`, convID, last); err != nil {
				return fmt.Errorf("update conversation: %w", err)
			}
			// Each author has read up to their own last message.
			if _, err := db.Exec(ctx, `
				UPDATE conversation_participants p SET last_read_at = m.last, last_read_seq = m.seq
				FROM (SELECT author_id, max(created_at) AS last, max(seq) AS seq
				      FROM messages WHERE conversation_id = $1 GROUP BY author_id) m
				WHERE p.conversation_id = $1 AND p.user_id = m.author_id`, convID); err != nil {
				return fmt.Errorf("mark read: %w", err)
			}
		}
		seeded = true
		return nil
	})
	return seeded, err
}

// UserID returns the id of the demo user with the given email.
func UserID(ctx context.Context, pool *dbpool.Pool, email string) (string, error) {
	var id string
	err := pool.WithConn(ctx, func(db dbpool.DB) error {
		var err error
		id, err = dbpool.CollectOne(ctx, db, "SELECT id::text FROM users WHERE lower(email) = lower($1)", []any{email}, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return "", fmt.Errorf("find demo user %s: %w", email, err)
	}
	return id, nil
}
