package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/jackc/pgx/v5"

	"chatql/auth"
	"chatql/config"
	"chatql/dbpool"
	"chatql/graph"
	"chatql/localpg/pgtest"
	"chatql/metrics"
	"chatql/web"
)

// The API tests run GraphQL through the handler newHandler builds, over
// real HTTP, against a fresh database each.

// statementCounter is a pgx tracer counting the statements a pool runs.
type statementCounter struct{ n atomic.Int64 }

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

type apiOptions struct {
	pool         dbpool.Config
	metricsToken string
	logger       *slog.Logger // nil: discard
	// poolURL, when set, turns the test database's direct URL into the one
	// the pool connects through (a pooler in front of it, say). Fixtures
	// and checks keep using the direct URL.
	poolURL         func(direct string) string
	autoProvision   bool
	introspection   bool
	fieldMiddleware graphql.FieldMiddleware
}

type testAPI struct {
	t       testing.TB
	srv     *httptest.Server
	pool    *dbpool.Pool
	tokens  *auth.Tokens
	counter *statementCounter
	appName string
	dbURL   string
	admin   *pgx.Conn // a connection outside the pool, for fixtures and checks
}

var apiSecret = []byte("api-test-secret-0123456789abcdef-0123456789")

func newAPI(t testing.TB, adjust ...func(*apiOptions)) *testAPI {
	t.Helper()
	o := apiOptions{pool: dbpool.DefaultConfig(), autoProvision: true, introspection: true, logger: slog.New(slog.DiscardHandler)}
	o.pool.Timeout = 10 * time.Second
	for _, f := range adjust {
		f(&o)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	o.pool.ApplicationName = "chatql-api-" + hex.EncodeToString(b[:])

	a := &testAPI{t: t, counter: &statementCounter{}, appName: o.pool.ApplicationName, dbURL: pgtest.NewDatabase(t)}
	url := a.dbURL
	if o.poolURL != nil {
		url = o.poolURL(a.dbURL)
	}
	var err error
	if a.pool, err = dbpool.New(url, o.pool, o.logger, dbpool.WithTracer(a.counter), dbpool.WithBorrowSite(graph.BorrowSite)); err != nil {
		t.Fatal(err)
	}
	if a.tokens, err = auth.NewTokens(apiSecret, time.Hour); err != nil {
		t.Fatal(err)
	}
	if a.admin, err = pgx.Connect(context.Background(), a.dbURL); err != nil {
		t.Fatal(err)
	}
	stats := true
	api := apiConfig{
		pool:    a.pool,
		tokens:  a.tokens,
		logger:  o.logger,
		cfg:     config.Config{AutoProvision: o.autoProvision, Introspection: o.introspection, DBStats: &stats, MetricsToken: o.metricsToken},
		metrics: metrics.New(),
		streams: web.NewStreams(),
	}
	api.fieldMiddleware = o.fieldMiddleware
	a.srv = httptest.NewServer(newHandler(api))
	t.Cleanup(func() {
		a.srv.Close()
		a.admin.Close(context.Background())
		a.pool.Close()
	})
	return a
}

// gqlResponse is a decoded GraphQL response with its HTTP details.
type gqlResponse struct {
	Status int
	Header http.Header
	Raw    []byte
	Data   json.RawMessage `json:"data"`
	Errors []struct {
		Message    string `json:"message"`
		Path       []any  `json:"path"`
		Extensions struct {
			Code  string `json:"code"`
			Field string `json:"field"`
		} `json:"extensions"`
	} `json:"errors"`
	Extensions struct {
		DB *struct {
			Statements    int     `json:"statements"`
			AcquireWaitMs float64 `json:"acquireWaitMs"`
			HoldMs        float64 `json:"holdMs"`
		} `json:"db"`
	} `json:"extensions"`
}

// codes lists the error codes of a response, in order.
func (r *gqlResponse) codes() []string {
	var out []string
	for _, e := range r.Errors {
		out = append(out, e.Extensions.Code)
	}
	return out
}

// code returns the only error code of a response, failing otherwise.
func (r *gqlResponse) code(t testing.TB) string {
	t.Helper()
	if len(r.Errors) != 1 {
		t.Fatalf("want exactly one error, got %s", r.Raw)
	}
	return r.Errors[0].Extensions.Code
}

// into decodes data into v, failing on any error.
func (r *gqlResponse) into(t testing.TB, v any) {
	t.Helper()
	if len(r.Errors) > 0 || r.Status != 200 {
		t.Fatalf("status %d, errors: %s", r.Status, r.Raw)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		t.Fatalf("decode data: %v: %s", err, r.Data)
	}
}

// post sends a GraphQL request; token "" sends no Authorization header.
func (a *testAPI) post(token, query string, vars map[string]any) *gqlResponse {
	a.t.Helper()
	return a.postCtx(context.Background(), token, map[string]any{"query": query, "variables": vars})
}

func (a *testAPI) postCtx(ctx context.Context, token string, body map[string]any) *gqlResponse {
	a.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, a.srv.URL+"/query", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("POST /query: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := &gqlResponse{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	if err := json.Unmarshal(raw, r); err != nil {
		a.t.Fatalf("status %d, body not JSON: %s", resp.StatusCode, raw)
	}
	return r
}

// user creates a user directly in the database and returns its id and a
// token for it. Its password is "password-" + name.
func (a *testAPI) user(name string) (id, token string) {
	a.t.Helper()
	hash, err := auth.HashPassword("password-" + name)
	if err != nil {
		a.t.Fatal(err)
	}
	err = a.admin.QueryRow(context.Background(),
		"INSERT INTO users (email, display_name, password_hash) VALUES ($1, $2, $3) RETURNING id::text",
		strings.ToLower(name)+"@example.com", name, hash).Scan(&id)
	if err != nil {
		a.t.Fatal(err)
	}
	if token, _, err = a.tokens.Issue(id); err != nil {
		a.t.Fatal(err)
	}
	return id, token
}

// conversation creates a conversation between users directly, with messages
// bodies sent in turn by its members, one second apart, oldest first.
func (a *testAPI) conversation(title string, members []string, bodies ...string) string {
	a.t.Helper()
	ctx := context.Background()
	var id string
	start := time.Now().Add(-time.Duration(len(bodies)+1) * time.Second)
	if err := a.admin.QueryRow(ctx, "INSERT INTO conversations (title, created_at) VALUES (NULLIF($1, ''), $2) RETURNING id::text", title, start).Scan(&id); err != nil {
		a.t.Fatal(err)
	}
	for i, m := range members {
		if _, err := a.admin.Exec(ctx, "INSERT INTO conversation_participants (conversation_id, user_id, joined_at) VALUES ($1, $2, $3)",
			id, m, start.Add(time.Duration(i)*time.Microsecond)); err != nil {
			a.t.Fatal(err)
		}
	}
	for i, body := range bodies {
		at := start.Add(time.Duration(i+1) * time.Second)
		if _, err := a.admin.Exec(ctx, "INSERT INTO messages (conversation_id, author_id, body, created_at) VALUES ($1, $2, $3, $4)",
			id, members[i%len(members)], body, at); err != nil {
			a.t.Fatal(err)
		}
		if _, err := a.admin.Exec(ctx, "UPDATE conversations SET last_message_at = $2 WHERE id = $1", id, at); err != nil {
			a.t.Fatal(err)
		}
	}
	return id
}

// lockParticipants locks conv's participant rows from a connection of its
// own (a transaction on a.admin would freeze what it reads of
// pg_stat_activity), so that a mutation touching them, such as
// markConversationRead, blocks until unlock. The test's end unlocks too.
func (a *testAPI) lockParticipants(conv string) (unlock func()) {
	a.t.Helper()
	ctx := context.Background()
	locker, err := pgx.Connect(ctx, a.dbURL)
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { locker.Close(ctx) })
	tx, err := locker.Begin(ctx)
	if err != nil {
		a.t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1 FROM conversation_participants WHERE conversation_id = $1 FOR UPDATE", conv); err != nil {
		a.t.Fatal(err)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			if err := tx.Rollback(ctx); err != nil {
				a.t.Error(err)
			}
		})
	}
	a.t.Cleanup(unlock)
	return unlock
}

// count runs a count query on the admin connection.
func (a *testAPI) count(sql string, args ...any) int {
	a.t.Helper()
	var n int
	if err := a.admin.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		a.t.Fatal(err)
	}
	return n
}

// backends counts this API's server connections in pg_stat_activity.
func (a *testAPI) backends() int {
	return a.count("SELECT count(*)::int FROM pg_stat_activity WHERE application_name = $1", a.appName)
}

// waitReleased waits until no connection is checked out.
func (a *testAPI) waitReleased() {
	a.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for a.pool.Stats().CheckedOut != 0 {
		if time.Now().After(deadline) {
			a.t.Fatalf("connections still checked out: %+v", a.pool.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
