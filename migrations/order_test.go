package migrations_test

import (
	"context"
	"database/sql"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"chatql/migrations"
)

// TestMessageOrderMigration: migration 2 numbers existing messages in the
// order pages listed them ((created_at, id) per conversation), keeps every
// unread count, and from then on every insert takes the next number of its
// conversation with a time that never goes back; Down undoes it.
func TestMessageOrderMigration(t *testing.T) {
	t.Parallel()
	url := emptyDatabase(t)
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	provider, err := goose.NewProvider(goose.DialectPostgres, db, os.DirFS("sql"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provider.UpTo(ctx, 1); err != nil {
		t.Fatal(err)
	}

	// Two conversations at version 1: "a" with messages whose times tie
	// and whose ids are not in time order, and a stale last_message_at;
	// "b" with none. Read marks before, between and after the messages.
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	exec(t, db, `INSERT INTO users (id, email, display_name) VALUES
		('00000000-0000-0000-0000-00000000000a', 'ann@example.com', 'Ann'),
		('00000000-0000-0000-0000-00000000000b', 'bob@example.com', 'Bob'),
		('00000000-0000-0000-0000-00000000000c', 'cat@example.com', 'Cat')`)
	exec(t, db, `INSERT INTO conversations (id, created_at, last_message_at) VALUES
		('00000000-0000-0000-0000-0000000000a0', $1, $1),
		('00000000-0000-0000-0000-0000000000b0', $1, NULL)`, base)
	exec(t, db, `INSERT INTO conversation_participants (conversation_id, user_id, last_read_at) VALUES
		('00000000-0000-0000-0000-0000000000a0', '00000000-0000-0000-0000-00000000000a', NULL),
		('00000000-0000-0000-0000-0000000000a0', '00000000-0000-0000-0000-00000000000b', $1::timestamptz + interval '2 minutes'),
		('00000000-0000-0000-0000-0000000000a0', '00000000-0000-0000-0000-00000000000c', $1::timestamptz + interval '1 hour'),
		('00000000-0000-0000-0000-0000000000b0', '00000000-0000-0000-0000-00000000000a', $1)`, base)
	// Listed oldest first: 03, then 01 and 02 (a tie, by id), then 04.
	exec(t, db, `INSERT INTO messages (id, conversation_id, author_id, body, created_at) VALUES
		('00000000-0000-0000-0000-000000000004', '00000000-0000-0000-0000-0000000000a0', '00000000-0000-0000-0000-00000000000a', 'd', $1::timestamptz + interval '3 minutes'),
		('00000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-0000000000a0', '00000000-0000-0000-0000-00000000000a', 'b', $1::timestamptz + interval '2 minutes'),
		('00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-0000000000a0', '00000000-0000-0000-0000-00000000000b', 'a', $1::timestamptz + interval '2 minutes'),
		('00000000-0000-0000-0000-000000000003', '00000000-0000-0000-0000-0000000000a0', '00000000-0000-0000-0000-00000000000b', 'c', $1::timestamptz + interval '1 minute')`, base)
	// Unread counts, as "conversation user=count" in a string.
	unread := func(unreadMessage string) string {
		var s string
		row(t, db, `SELECT string_agg(p.conversation_id || ' ' || p.user_id || '=' || (SELECT count(*) FROM messages m
			WHERE m.conversation_id = p.conversation_id AND m.author_id <> p.user_id AND `+unreadMessage+`), ','
			ORDER BY p.conversation_id, p.user_id) FROM conversation_participants p`, nil, &s)
		return s
	}
	before := unread("m.created_at > coalesce(p.last_read_at, '-infinity')")

	if _, err := migrations.Up(ctx, url, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if got := inSeqOrder(t, db); got != "3124" {
		t.Errorf("messages in seq order: %s, want 3124", got)
	}
	if after := unread("m.seq > p.last_read_seq"); after != before {
		t.Errorf("unread counts\n  %s\nbefore, and\n  %s\nafter", before, after)
	}
	var lastSeq int64
	var lastAt *time.Time
	row(t, db, `SELECT last_seq, last_message_at FROM conversations WHERE id = '00000000-0000-0000-0000-0000000000a0'`, nil, &lastSeq, &lastAt)
	if lastSeq != 4 || lastAt == nil || !lastAt.Equal(base.Add(3*time.Minute)) {
		t.Errorf("conversation a at seq %d, last message at %v; want 4, %v", lastSeq, lastAt, base.Add(3*time.Minute))
	}
	row(t, db, `SELECT last_seq, last_message_at FROM conversations WHERE id = '00000000-0000-0000-0000-0000000000b0'`, nil, &lastSeq, &lastAt)
	if lastSeq != 0 || lastAt != nil {
		t.Errorf("conversation b at seq %d, last message at %v; want 0, none", lastSeq, lastAt)
	}

	// New messages take the next seq (one given is replaced), an earlier
	// time is raised, and the database's time is taken at the insert.
	var seq int64
	var at time.Time
	row(t, db, `INSERT INTO messages (conversation_id, author_id, body, created_at, seq)
		VALUES ('00000000-0000-0000-0000-0000000000a0', '00000000-0000-0000-0000-00000000000a', 'e', $1, 99)
		RETURNING seq, created_at`, []any{base}, &seq, &at)
	if seq != 5 || !at.Equal(base.Add(3*time.Minute)) {
		t.Errorf("an insert with seq 99 and an early time got seq %d at %v; want 5 at %v", seq, at, base.Add(3*time.Minute))
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO messages (conversation_id, author_id, body)
		VALUES ('00000000-0000-0000-0000-0000000000b0', '00000000-0000-0000-0000-00000000000a', 'rolled back')`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	row(t, db, `INSERT INTO messages (conversation_id, author_id, body)
		VALUES ('00000000-0000-0000-0000-0000000000b0', '00000000-0000-0000-0000-00000000000a', 'f')
		RETURNING seq, created_at`, nil, &seq, &at)
	if seq != 1 || at.Before(now.Add(-time.Minute)) {
		t.Errorf("first message of b after a rolled-back one: seq %d at %v, want 1 at about %v", seq, at, now)
	}
	// One statement, many rows: numbered in turn, the conversation moved
	// to the last of them.
	exec(t, db, `INSERT INTO messages (conversation_id, author_id, body, created_at)
		SELECT '00000000-0000-0000-0000-0000000000b0', '00000000-0000-0000-0000-00000000000a', b, $1::timestamptz + i * interval '1 hour'
		FROM unnest(array['g', 'h', 'i']) WITH ORDINALITY AS t(b, i)`, now)
	row(t, db, `SELECT c.last_seq, c.last_message_at FROM conversations c WHERE id = '00000000-0000-0000-0000-0000000000b0'`, nil, &lastSeq, &lastAt)
	if lastSeq != 4 || lastAt == nil || !lastAt.Equal(now.Add(3*time.Hour).Truncate(time.Microsecond)) {
		t.Errorf("conversation b at seq %d, last message at %v; want 4, %v", lastSeq, lastAt, now.Add(3*time.Hour))
	}
	if _, err := db.Exec(`INSERT INTO messages (conversation_id, author_id, body)
		VALUES ('00000000-0000-0000-0000-0000000000ff', '00000000-0000-0000-0000-00000000000a', 'nowhere')`); err == nil {
		t.Error("a message to no conversation was stored")
	}

	if _, err := provider.DownTo(ctx, 1); err != nil {
		t.Fatalf("down: %v", err)
	}
	if _, err := provider.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if got := inSeqOrder(t, db); got != "3124efghi" {
		t.Errorf("after down and up, messages in seq order: %s, want 3124efghi", got)
	}
}

func exec(t *testing.T, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatal(err)
	}
}

// row scans the one row query returns with args into dest.
func row(t *testing.T, db *sql.DB, query string, args []any, dest ...any) {
	t.Helper()
	if err := db.QueryRow(query, args...).Scan(dest...); err != nil {
		t.Fatal(err)
	}
}

// inSeqOrder lists the messages, by the last character of their ids or
// their bodies, by conversation and seq.
func inSeqOrder(t *testing.T, db *sql.DB) string {
	t.Helper()
	var s string
	row(t, db, `SELECT string_agg(CASE WHEN body < 'e' THEN right(id::text, 1) ELSE body END, '' ORDER BY conversation_id, seq)
		FROM messages`, nil, &s)
	return s
}
