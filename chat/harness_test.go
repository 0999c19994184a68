package chat_test

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/crypto/bcrypt"

	"chatql/chat"
	"chatql/dbpool"
	"chatql/localpg/pgtest"
	"chatql/migrations"
)

// The harness of the package's tests: TestMain and the fixtures.

func TestMain(m *testing.M) {
	// Every pool is closed by its test: no goroutine may outlive them.
	os.Exit(pgtest.NoLeakedGoroutines(pgtest.Main(m, migrations.Apply)))
}

// Fixtures. Every top-level test gets a database of its own (newWorld), so
// that tests run in parallel without seeing each other's rows. Subtests
// share their test's world: reads freely, writes each on a conversation of
// their own (newTeam).
//
// A world is a cast of users around two conversations:
//
//	team: started by alice with bob and dave; alice, bob and dave each
//	      posted; then alice added carol, dave was removed, and bob posted
//	      again.
//	side: started by bob with eve; eve posted.
//
// Towards team, then, alice is the creator, bob a participant from the
// start, carol an added participant, dave a removed one, eve a stranger,
// and "unknown user" a well-formed id that no user has.

// The actors, named by their part in the team conversation.
const (
	creator     = "creator"             // alice
	participant = "participant"         // bob, also in side
	added       = "added participant"   // carol
	removed     = "removed participant" // dave
	stranger    = "stranger"            // eve, in side only
	nobody      = "unknown user"        // an id no user has
)

// The conversations.
const (
	team    = "team"
	side    = "side"
	missing = "missing" // an id no conversation has
)

// actors lists every actor, in a fixed order.
var actors = []string{creator, participant, added, removed, stranger, nobody}

// conversations lists every conversation, in a fixed order.
var conversations = []string{team, side, missing}

// readable is the read matrix: the conversations each actor takes part in,
// and so may read. Every other one, existing or not, must look the same to
// them: ErrNotFound, an absent key, an empty page.
var readable = map[string][]string{
	creator:     {team},
	participant: {team, side},
	added:       {team},
	removed:     nil,
	stranger:    {side},
	nobody:      nil,
}

func canRead(actor, conv string) bool { return slices.Contains(readable[actor], conv) }

// world is the cast and its conversations in a database of the test's own.
type world struct {
	url  string // the database, for connections outside the pool
	pool *dbpool.Pool
	db   dbpool.DB // for reads: each statement on a connection of its own

	alice, bob, carol, dave, eve chat.User

	ids    map[string]string // actor -> user id
	scenes map[string]scene  // team and side
	convs  map[string]string // conversation -> id, including missing
}

// scene is a conversation and its messages, oldest first.
type scene struct {
	conv chat.Conversation
	msgs []chat.Message
}

func newWorld(t *testing.T) *world {
	t.Helper()
	url := pgtest.NewDatabase(t)
	p := newPool(t, url)
	w := &world{url: url, pool: p, db: perStatement{p}}
	w.alice = w.newUser(t, "Alice")
	w.bob = w.newUser(t, "Bob")
	w.carol = w.newUser(t, "Carol")
	w.dave = w.newUser(t, "Dave")
	w.eve = w.newUser(t, "Eve")
	w.ids = map[string]string{
		creator:     w.alice.ID,
		participant: w.bob.ID,
		added:       w.carol.ID,
		removed:     w.dave.ID,
		stranger:    w.eve.ID,
		nobody:      uuid.NewString(),
	}

	sideConv := w.mustCreate(t, w.bob, "side", w.eve)
	w.scenes = map[string]scene{
		team: w.newTeam(t),
		side: {conv: sideConv, msgs: []chat.Message{w.mustSend(t, w.eve, sideConv.ID, "just us")}},
	}
	w.convs = map[string]string{
		team:    w.scenes[team].conv.ID,
		side:    w.scenes[side].conv.ID,
		missing: uuid.NewString(),
	}
	return w
}

// newTeam starts a team conversation with the history described above. Tests
// of writes start one per case, so that cases cannot disturb each other.
func (w *world) newTeam(t *testing.T) scene {
	t.Helper()
	conv := w.mustCreate(t, w.alice, "team", w.bob, w.dave)
	msgs := []chat.Message{
		w.mustSend(t, w.alice, conv.ID, "hello"),
		w.mustSend(t, w.bob, conv.ID, "hi"),
		w.mustSend(t, w.dave, conv.ID, "bye"),
	}
	if _, err := w.addParticipant(t, w.alice.ID, conv.ID, w.carol.ID); err != nil {
		t.Fatalf("fixture: add carol: %v", err)
	}
	w.remove(t, conv.ID, w.dave.ID)
	msgs = append(msgs, w.mustSend(t, w.bob, conv.ID, "welcome, carol"))
	return scene{conv: conv, msgs: msgs}
}

// newPool returns a pool on url, a fresh, migrated database of the test's own.
func newPool(t *testing.T, url string) *dbpool.Pool {
	t.Helper()
	p, err := dbpool.New(url, dbpool.DefaultConfig(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("fixture: new pool: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// perStatement is a dbpool.DB that borrows a connection for each statement
// and gives it back at once, so that parallel subtests never hold one while
// waiting for another.
type perStatement struct{ pool *dbpool.Pool }

func (p perStatement) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	err := p.pool.WithConn(ctx, func(db dbpool.DB) error {
		var err error
		tag, err = db.Exec(ctx, sql, args...)
		return err
	})
	return tag, err
}

func (p perStatement) Rows(ctx context.Context, sql string, args []any, read func(pgx.Rows) error) error {
	return p.pool.WithConn(ctx, func(db dbpool.DB) error { return db.Rows(ctx, sql, args, read) })
}

// inTx runs a write the way the API does: in a transaction of its own,
// rolled back when it fails.
func inTx[T any](t *testing.T, p *dbpool.Pool, fn func(ctx context.Context, db dbpool.DB) (T, error)) (T, error) {
	t.Helper()
	var out T
	err := p.WithTx(t.Context(), func(db dbpool.DB) error {
		var err error
		out, err = fn(t.Context(), db)
		return err
	})
	return out, err
}

// The commands, each in a transaction as the API runs them.

func (w *world) createConversation(t *testing.T, viewer string, in chat.CreateConversationInput) (chat.Conversation, error) {
	t.Helper()
	return inTx(t, w.pool, func(ctx context.Context, db dbpool.DB) (chat.Conversation, error) {
		return chat.CreateConversation(ctx, db, viewer, in)
	})
}

func (w *world) addParticipant(t *testing.T, viewer, conv, user string) (chat.Conversation, error) {
	t.Helper()
	return inTx(t, w.pool, func(ctx context.Context, db dbpool.DB) (chat.Conversation, error) {
		return chat.AddParticipant(ctx, db, viewer, conv, user)
	})
}

func (w *world) markRead(t *testing.T, viewer, conv string) (chat.Conversation, error) {
	t.Helper()
	return inTx(t, w.pool, func(ctx context.Context, db dbpool.DB) (chat.Conversation, error) {
		return chat.MarkRead(ctx, db, viewer, conv)
	})
}

func (w *world) sendMessage(t *testing.T, viewer, conv, body string) (chat.Message, error) {
	t.Helper()
	return inTx(t, w.pool, func(ctx context.Context, db dbpool.DB) (chat.Message, error) {
		return chat.SendMessage(ctx, db, viewer, conv, body)
	})
}

// Fixture steps, which fail the test when they fail.

// newUser stores a user without a password, straight into the table: users
// are the one thing every test needs, and chat has no command that makes
// one without the deliberately slow hashing of a password.
func (w *world) newUser(t *testing.T, name string) chat.User {
	t.Helper()
	return w.insertUser(t, name, nil)
}

// newUserWithPassword stores a user with a bcrypt hash of password at the
// lowest cost, which checks in microseconds where the real cost takes a
// second under the race detector.
func (w *world) newUserWithPassword(t *testing.T, name, password string) chat.User {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatalf("fixture: hash password: %v", err)
	}
	h := string(hash)
	return w.insertUser(t, name, &h)
}

func (w *world) insertUser(t *testing.T, name string, hash *string) chat.User {
	t.Helper()
	u, err := dbpool.CollectOne(t.Context(), w.db, `
		INSERT INTO users (email, display_name, password_hash) VALUES ($1, $2, $3)
		RETURNING id::text, email, display_name, created_at`,
		[]any{strings.ToLower(name) + "@example.com", name, hash},
		func(row pgx.CollectableRow) (chat.User, error) {
			var u chat.User
			err := row.Scan(&u.ID, &u.Email, &u.DisplayName, &u.CreatedAt)
			return u, err
		})
	if err != nil {
		t.Fatalf("fixture: new user %s: %v", name, err)
	}
	return u
}

func (w *world) mustCreate(t *testing.T, by chat.User, title string, with ...chat.User) chat.Conversation {
	t.Helper()
	conv, err := w.createConversation(t, by.ID, chat.CreateConversationInput{Title: &title, ParticipantIDs: userIDs(with...)})
	if err != nil {
		t.Fatalf("fixture: create conversation %s: %v", title, err)
	}
	return conv
}

func (w *world) mustSend(t *testing.T, by chat.User, conv, body string) chat.Message {
	t.Helper()
	msg, err := w.sendMessage(t, by.ID, conv, body)
	if err != nil {
		t.Fatalf("fixture: %s sends %q: %v", by.DisplayName, body, err)
	}
	return msg
}

// remove takes user out of conv. chat has no command for it (a participant
// row goes when its user or conversation is deleted), so the fixture deletes
// the row, as any future removal would.
func (w *world) remove(t *testing.T, conv, user string) {
	t.Helper()
	tag, err := w.db.Exec(t.Context(),
		"DELETE FROM conversation_participants WHERE conversation_id = $1 AND user_id = $2", conv, user)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("fixture: remove %s from %s: %v (%d rows)", user, conv, err, tag.RowsAffected())
	}
}

// Views, through the package's own reads, of what a write did or did not do.

// count returns the number of rows in table; a refused write leaves it be.
func (w *world) count(t *testing.T, table string) int {
	t.Helper()
	n, err := dbpool.CollectOne(t.Context(), w.db,
		"SELECT count(*)::int FROM "+pgx.Identifier{table}.Sanitize(), nil, pgx.RowTo[int])
	if err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// participants returns the ids of conv's participants as viewer sees them,
// in joining order; nil when viewer may not see conv.
func (w *world) participants(t *testing.T, viewer, conv string) []string {
	t.Helper()
	got, err := chat.ParticipantsByConversation(t.Context(), w.db, viewer, []string{conv})
	if err != nil {
		t.Fatalf("participants of %s: %v", conv, err)
	}
	return userIDs(got[conv]...)
}

// sees reports whether viewer can load conv.
func (w *world) sees(t *testing.T, viewer, conv string) bool {
	t.Helper()
	got, err := chat.ConversationsByID(t.Context(), w.db, viewer, []string{conv})
	if err != nil {
		t.Fatalf("load conversation %s: %v", conv, err)
	}
	_, ok := got[conv]
	return ok
}

// conversation loads conv as viewer, failing the test if viewer cannot.
func (w *world) conversation(t *testing.T, viewer, conv string) chat.Conversation {
	t.Helper()
	got, err := chat.ConversationsByID(t.Context(), w.db, viewer, []string{conv})
	if err != nil {
		t.Fatalf("load conversation %s: %v", conv, err)
	}
	c, ok := got[conv]
	if !ok {
		t.Fatalf("viewer %s cannot load conversation %s", viewer, conv)
	}
	return c
}

// messageIDs returns the ids of conv's newest messages as viewer sees
// them, newest first.
func (w *world) messageIDs(t *testing.T, viewer, conv string) []string {
	t.Helper()
	key := chat.PageKey{ConversationID: conv, First: chat.MaxPageSize}
	pages, err := chat.MessagePages(t.Context(), w.db, viewer, []chat.PageKey{key})
	if err != nil {
		t.Fatalf("messages of %s: %v", conv, err)
	}
	return messageIDs(pages[key].Messages)
}

// unread returns viewer's unread counts of the given conversations.
func (w *world) unread(t *testing.T, viewer string, convs ...string) map[string]int {
	t.Helper()
	got, err := chat.UnreadCounts(t.Context(), w.db, viewer, convs)
	if err != nil {
		t.Fatalf("unread counts: %v", err)
	}
	return got
}

// Small helpers.

func userIDs(us ...chat.User) []string {
	ids := []string{}
	for _, u := range us {
		ids = append(ids, u.ID)
	}
	return ids
}

func sameUser(a, b chat.User) bool {
	return a.ID == b.ID && a.Email == b.Email && a.DisplayName == b.DisplayName && a.CreatedAt.Equal(b.CreatedAt)
}

func messageIDs(ms []chat.Message) []string {
	ids := []string{}
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	return ids
}

func conversationIDs(cs []chat.Conversation) []string {
	ids := []string{}
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids
}

// newestFirst returns the ids of msgs (oldest first) in reverse.
func newestFirst(msgs []chat.Message) []string {
	ids := messageIDs(msgs)
	slices.Reverse(ids)
	return ids
}

func sortedKeys[V any](m map[string]V) []string {
	keys := []string{}
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sorted(ids []string) []string {
	out := append([]string{}, ids...)
	slices.Sort(out)
	return out
}

// readableIDs returns the ids of the conversations actor may read, sorted.
func (w *world) readableIDs(actor string) []string {
	ids := []string{}
	for _, c := range readable[actor] {
		ids = append(ids, w.convs[c])
	}
	return sorted(ids)
}

// allConversationIDs returns the ids of team, side and missing.
func (w *world) allConversationIDs() []string {
	ids := []string{}
	for _, c := range conversations {
		ids = append(ids, w.convs[c])
	}
	return ids
}

// countingDB counts the statements run through it.
type countingDB struct {
	dbpool.DB
	statements int
}

func (c *countingDB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	c.statements++
	return c.DB.Exec(ctx, sql, args...)
}

func (c *countingDB) Rows(ctx context.Context, sql string, args []any, read func(pgx.Rows) error) error {
	c.statements++
	return c.DB.Rows(ctx, sql, args, read)
}
