package main

// The harness of the package's tests: everything more than one test file
// uses. In order:
//
//   - TestMain, waitFor (the one poll-until-deadline loop) and syncBuffer;
//   - the in-process server (newAPI, testAPI) with its fixtures;
//   - the GraphQL clients: HTTP (gqlClient, a.post), websocket (wsClient)
//     and server-sent events (sseStream), and the shared documents;
//   - tokens (signed, chatqlClaims, withValues);
//   - the built binary as a process (startProcess, startChatql), a
//     PgBouncer in front of the test cluster (startPooler) and /metrics.
//
// Helpers that only one file uses live in that file.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"chatql/auth"
	"chatql/config"
	"chatql/dbpool"
	"chatql/document"
	"chatql/graph"
	"chatql/load"
	"chatql/localpg/pgtest"
	"chatql/metrics"
	"chatql/migrations"
	"chatql/realtime"
	"chatql/web"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m, migrations.Apply)
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	// Every pool, server and operation is gone: so must their goroutines be.
	http.DefaultClient.CloseIdleConnections()
	os.Exit(pgtest.NoLeakedGoroutines(code))
}

// waitFor is pgtest.WaitFor: poll a condition, fail the test at a deadline.
var waitFor = pgtest.WaitFor

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testSecret signs the tokens of every server the tests start, in process
// or not.
const testSecret = "test-secret-0123456789abcdef-0123456789"

var apiSecret = []byte(testSecret)

// skipInShort skips t under -short, saying why it takes long.
func skipInShort(t *testing.T, why string) {
	t.Helper()
	if testing.Short() {
		t.Skip(why + ": not in -short")
	}
}

// randomSuffix returns n random bytes in hex, for names of our own.
func randomSuffix(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ---- The in-process server ----
//
// newAPI serves the handler newHandler builds, over real HTTP, on a fresh
// database of its own.

// statementCounter is a pgx tracer counting the statements a pool runs.
type statementCounter struct{ n atomic.Int64 }

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// apiOptions configure newAPI and replica; the functions they are given
// adjust the defaults.
type apiOptions struct {
	pool   dbpool.Config
	logger *slog.Logger
	// poolURL, when set, turns the test database's direct URL into the one
	// the pool connects through (a pooler in front of it, say). Fixtures
	// and checks keep using the direct URL.
	poolURL         func(direct string) string
	autoProvision   bool
	introspection   bool
	metricsToken    string
	corsOrigins     string // CORS_ORIGINS as in the environment
	fieldMiddleware graphql.FieldMiddleware
	// realtime starts a listener, so that messageAdded works.
	realtime bool
	// server adjusts the HTTP server before it starts.
	server func(*httptest.Server)
	// env holds environment variables for config.Load, as a deployment
	// would set them (SIGNIN_MAX_FAILURES, TRUSTED_PROXIES, ...).
	env map[string]string
	// passwords, when set, is the server's bcrypt gate.
	passwords *auth.Passwords
	// documentLimits and queryCacheBytes replace the configuration's
	// (QUERY_MAX_*, QUERY_CACHE_BYTES) when set.
	documentLimits  document.Limits
	queryCacheBytes int
	// tokenOptions, when set, configure the verifier (an issuer, a key
	// set); the secret stays apiSecret.
	tokenOptions []auth.Option
	// refuseAnonymous is AUTH_ALLOW_ANONYMOUS=false.
	refuseAnonymous bool
}

func defaultAPIOptions() apiOptions {
	o := apiOptions{pool: dbpool.DefaultConfig(), autoProvision: true, introspection: true, logger: slog.New(slog.DiscardHandler)}
	o.pool.Timeout = 10 * time.Second
	return o
}

// withRealtime is an apiOptions adjustment: start the listener.
func withRealtime(o *apiOptions) { o.realtime = true }

// setEnv is an apiOptions adjustment: environment variables as a
// deployment would set them.
func setEnv(kv ...string) func(*apiOptions) {
	return func(o *apiOptions) {
		if o.env == nil {
			o.env = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			o.env[kv[i]] = kv[i+1]
		}
	}
}

// withoutAdmission turns admission off (ADMISSION_PER_USER=0), for the
// tests of the layers below it: they send one user's flood on purpose, to
// put more operations on the pool at once than admission would let
// through, and prove what the pool and the database do then.
var withoutAdmission = setEnv("ADMISSION_PER_USER", "0")

// withPatientAdmission keeps admission on, with its global limit sized
// from the pool as in production, but lets operations wait as long as the
// load tests let the pool make them wait (loadPoolTimeout), so that a
// loaded 2-core machine under -race refuses nothing their many users send.
var withPatientAdmission = setEnv("ADMISSION_MAX_WAIT", loadPoolTimeout.String(), "ADMISSION_QUEUE_PER_USER", "256")

// testAPI is a running server and what the tests reach it with.
type testAPI struct {
	t       testing.TB
	srv     *httptest.Server
	client  gqlClient // to srv, over http.DefaultClient
	pool    *dbpool.Pool
	tokens  *auth.Tokens
	counter *statementCounter
	appName string
	dbURL   string
	admin   *pgx.Conn // a connection outside the pool, for fixtures and checks
	// hub and stopHub are set with the realtime option; stopHub stops
	// the listener (and waits for it), as a shutdown does.
	hub     *realtime.Hub
	stopHub func()
	// queryCache is the server's parsed-document and persisted-query
	// cache, watched by the tests of its bound.
	queryCache *document.Cache
}

// newAPI starts a server on a fresh database.
func newAPI(t testing.TB, adjust ...func(*apiOptions)) *testAPI {
	t.Helper()
	dbURL := pgtest.NewDatabase(t)
	admin, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	return startAPI(t, dbURL, admin, testTokens(t), adjust)
}

// newAPIWithoutDatabase starts a server whose pool connects to url, where
// no database need answer; it has no admin connection, so no fixtures.
func newAPIWithoutDatabase(t testing.TB, url string, adjust ...func(*apiOptions)) *testAPI {
	t.Helper()
	return startAPI(t, url, nil, testTokens(t), adjust)
}

// testTokens issues and checks tokens signed with testSecret.
func testTokens(t testing.TB) *auth.Tokens {
	t.Helper()
	tokens, err := auth.NewTokens(apiSecret, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

// newRealtimeAPI is newAPI with a listener that is listening.
func newRealtimeAPI(t testing.TB, adjust ...func(*apiOptions)) *testAPI {
	t.Helper()
	a := newAPI(t, append([]func(*apiOptions){withRealtime}, adjust...)...)
	a.waitListening(0)
	return a
}

// replica starts another server on a's database, as a second replica of a
// deployment would be: its own pool (and listener, if asked for), the same
// token secret. Fixtures and checks go through a's admin connection.
func (a *testAPI) replica(t testing.TB, adjust ...func(*apiOptions)) *testAPI {
	t.Helper()
	r := startAPI(t, a.dbURL, a.admin, a.tokens, adjust)
	if r.hub != nil {
		r.waitListening(0)
	}
	return r
}

func startAPI(t testing.TB, dbURL string, admin *pgx.Conn, tokens *auth.Tokens, adjust []func(*apiOptions)) *testAPI {
	t.Helper()
	o := defaultAPIOptions()
	for _, f := range adjust {
		f(&o)
	}
	o.pool.ApplicationName = "chatql-api-" + randomSuffix(6)
	if o.tokenOptions != nil {
		var err error
		if tokens, err = auth.NewTokens(apiSecret, time.Hour, o.tokenOptions...); err != nil {
			t.Fatal(err)
		}
	}
	a := &testAPI{t: t, counter: &statementCounter{}, appName: o.pool.ApplicationName, dbURL: dbURL, admin: admin, tokens: tokens}
	poolURL := dbURL
	if o.poolURL != nil {
		poolURL = o.poolURL(dbURL)
	}
	var err error
	// The pool reports to the metrics /metrics serves, as in openPool.
	m := metrics.New()
	poolOpts := []dbpool.Option{dbpool.WithTracer(a.counter), dbpool.WithBorrowSite(graph.BorrowSite), dbpool.WithObserver(m)}
	// The listener goes where the pool goes when it shares the budget
	// (Pool.Reserved, as config sets it without DATABASE_DIRECT_URL), else
	// straight to the database.
	listenURL := dbURL
	if o.realtime && o.pool.Reserved > 0 {
		listenURL = poolURL
		poolOpts = append(poolOpts, dbpool.WithListener(func() bool { return a.hub.Stats().Listening }))
	}
	if a.pool, err = dbpool.New(poolURL, o.pool, o.logger, poolOpts...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.pool.Close) // last: after the server and the listener
	cfg, err := config.Load(func(name string) string {
		if name == "CORS_ORIGINS" {
			return o.corsOrigins
		}
		return o.env[name]
	})
	if err != nil {
		t.Fatal(err)
	}
	stats := true
	cfg.AutoProvision, cfg.Introspection, cfg.DBStats, cfg.MetricsToken = o.autoProvision, o.introspection, &stats, o.metricsToken
	cfg.Pool = o.pool
	if o.documentLimits != (document.Limits{}) {
		cfg.DocumentLimits = o.documentLimits
	}
	if o.queryCacheBytes != 0 {
		cfg.QueryCacheBytes = o.queryCacheBytes
	}
	a.queryCache = document.NewCache(cfg.QueryCacheBytes)
	cfg.AllowAnonymous = !o.refuseAnonymous
	if o.realtime {
		// The server's own wiring: one connection outside the pool.
		if a.hub, err = newListener(listenURL, cfg, o.logger); err != nil {
			t.Fatal(err)
		}
		a.stopHub = startListener(context.Background(), a.hub)
		t.Cleanup(a.stopListener)
	}
	a.srv = httptest.NewUnstartedServer(newHandler(apiConfig{
		pool:            a.pool,
		tokens:          a.tokens,
		logger:          o.logger,
		cfg:             cfg,
		metrics:         m,
		hub:             a.hub,
		streams:         web.NewStreams(),
		fieldMiddleware: o.fieldMiddleware,
		passwords:       o.passwords,
		queryCache:      a.queryCache,
	}))
	if o.server != nil {
		o.server(a.srv)
	}
	a.srv.Start()
	t.Cleanup(a.srv.Close) // first
	a.client = gqlClient{url: a.srv.URL, http: http.DefaultClient}
	return a
}

// loadPoolTimeout is the pool timeout of the load tests that want every
// request served: on a quiet machine none waits more than seconds, but on
// a loaded 2-core machine under -race hundreds of queued requests may
// wait far longer than production's 30 s without anything being wrong.
// They fail when requests really starve.
const loadPoolTimeout = 2 * time.Minute

// loadClient is a client of a's server for load goroutines: it keeps
// enough idle connections for them, so that the load measures the API
// rather than TCP handshakes. A request may take at most timeout (0: no
// limit).
func (a *testAPI) loadClient(t testing.TB, timeout time.Duration) gqlClient {
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}
	// Registered after newAPI's cleanups, so it runs first: no keep-alive
	// goroutine outlives the test (TestMain checks for leaks).
	t.Cleanup(tr.CloseIdleConnections)
	return gqlClient{url: a.srv.URL, http: &http.Client{Transport: tr, Timeout: timeout}}
}

// stopListener stops the listener at the test's end in the order a
// shutdown does: once the subscriptions are gone (the test's clients close
// their sockets and streams in cleanups that run before this one), so that
// none ends because the listener stopped while its socket was closing.
func (a *testAPI) stopListener() {
	a.t.Helper()
	defer a.stopHub() // also when waitFor fails
	waitFor(a.t, 20*time.Second, "every subscription to end with its client", func() bool { return a.hub.Subscribers() == 0 },
		func() string { return fmt.Sprintf("%d left", a.hub.Subscribers()) })
}

// waitListening waits until the listener listens on a backend other than
// oldPID, returning the new one.
func (a *testAPI) waitListening(oldPID uint32) uint32 {
	a.t.Helper()
	var pid uint32
	waitFor(a.t, 10*time.Second, "the listener to (re)connect", func() bool {
		_, pid = a.hub.Connected()
		return pid != 0 && pid != oldPID
	})
	return pid
}

// waitSubscribers waits until the listener has n subscriptions: a
// subscription is registered asynchronously after the subscribe message.
func (a *testAPI) waitSubscribers(n int) {
	a.t.Helper()
	waitFor(a.t, 5*time.Second, fmt.Sprintf("%d subscribers", n), func() bool { return a.hub.Subscribers() == n },
		func() string { return fmt.Sprintf("the hub has %d", a.hub.Subscribers()) })
}

// waitReleased waits until no connection is checked out and every one is idle.
func (a *testAPI) waitReleased() {
	a.t.Helper()
	// Idle too: the pool counts a connection given back before pgxpool
	// has it idle again.
	waitFor(a.t, 5*time.Second, "every connection to come back", func() bool {
		s := a.pool.Stats()
		return s.CheckedOut == 0 && s.CheckedIn == s.Total
	},
		func() string { return fmt.Sprintf("stats %+v", a.pool.Stats()) })
}

// ---- Fixtures, written directly to the database ----

// user creates a user without a password (a bcrypt hash costs over half a
// second under -race, and only the sign-in tests need one) and returns its
// id and a token. Its email is lower(name) + "@example.com".
func (a *testAPI) user(name string) (id, token string) {
	a.t.Helper()
	return a.createUser(name, nil)
}

// userWithPassword is user with the password "password-" + name.
func (a *testAPI) userWithPassword(name string) (id, token string) {
	a.t.Helper()
	hash, err := auth.HashPassword("password-" + name)
	if err != nil {
		a.t.Fatal(err)
	}
	return a.createUser(name, &hash)
}

func (a *testAPI) createUser(name string, hash *string) (id, token string) {
	a.t.Helper()
	err := a.admin.QueryRow(context.Background(),
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

// seedInbox gives a new viewer n conversations of three participants (the
// viewer and two of four other users, in turn), with msgs messages
// ("message 0" first) written in turn by them, one second apart, in a few
// set-based statements: a.conversation's statement per row would take
// tens of seconds for the larger fixtures under -race. It returns the
// viewer's token and the conversations.
func (a *testAPI) seedInbox(n, msgs int) (token string, convs []string) {
	a.t.Helper()
	ctx := context.Background()
	viewer, token := a.user("Viewer")
	others := make([]string, 4)
	for i := range others {
		others[i], _ = a.user(fmt.Sprintf("Other%d", i))
	}
	rows, err := a.admin.Query(ctx, `INSERT INTO conversations (title, created_at)
		SELECT 'conversation ' || i, now() - interval '1 day' FROM generate_series(0, $1 - 1) i RETURNING id::text`, n)
	if err != nil {
		a.t.Fatal(err)
	}
	if convs, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		a.t.Fatal(err)
	}
	// The members of each conversation, in the order they write.
	var m1, m2, m3 []string
	for i := range convs {
		m1, m2, m3 = append(m1, viewer), append(m2, others[i%4]), append(m3, others[(i+1)%4])
	}
	for _, st := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO conversation_participants (conversation_id, user_id, joined_at)
		  SELECT c, u, now() - interval '1 day' + k * interval '1 microsecond'
		  FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[]) AS c(c, m1, m2, m3),
		       LATERAL (VALUES (0, m1), (1, m2), (2, m3)) AS p(k, u)`, []any{convs, m1, m2, m3}},
		{`INSERT INTO messages (conversation_id, author_id, body, created_at)
		  SELECT c, (ARRAY[m1, m2, m3])[1 + j % 3], 'message ' || j, now() - interval '1 day' + (j + 1) * interval '1 second'
		  FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[]) AS c(c, m1, m2, m3), generate_series(0, $5 - 1) j`,
			[]any{convs, m1, m2, m3, msgs}},
		{`UPDATE conversations c SET last_message_at = (SELECT max(created_at) FROM messages m WHERE m.conversation_id = c.id)
		  WHERE id = ANY($1::uuid[])`, []any{convs}},
	} {
		if _, err := a.admin.Exec(ctx, st.sql, st.args...); err != nil {
			a.t.Fatal(err)
		}
	}
	return token, convs
}

// seedCrowd creates users signed-in users and convs conversations of four
// of them each (every user in about 4*convs/users), msgs messages in each:
// traffic from many different people, as real traffic is. It returns the
// users' tokens and the conversations.
func (a *testAPI) seedCrowd(users, convs, msgs int) (tokens, convIDs []string) {
	a.t.Helper()
	ctx := context.Background()
	ids := make([]string, users)
	tokens = make([]string, users)
	for i := range ids {
		ids[i], tokens[i] = a.user(fmt.Sprintf("Member%03d", i))
	}
	rows, err := a.admin.Query(ctx, `INSERT INTO conversations (title, created_at)
		SELECT 'crowd ' || i, now() - interval '1 day' FROM generate_series(0, $1 - 1) i RETURNING id::text`, convs)
	if err != nil {
		a.t.Fatal(err)
	}
	if convIDs, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		a.t.Fatal(err)
	}
	var members [4][]string
	for i := range convIDs {
		for k := range members {
			members[k] = append(members[k], ids[(4*i+k)%users])
		}
	}
	for _, st := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO conversation_participants (conversation_id, user_id, joined_at)
		  SELECT c, u, now() - interval '1 day' + k * interval '1 microsecond'
		  FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[]) AS c(c, m0, m1, m2, m3),
		       LATERAL (VALUES (0, m0), (1, m1), (2, m2), (3, m3)) AS p(k, u)
		  ON CONFLICT DO NOTHING`, []any{convIDs, members[0], members[1], members[2], members[3]}},
		{`INSERT INTO messages (conversation_id, author_id, body, created_at)
		  SELECT c, (ARRAY[m0, m1, m2, m3])[1 + j % 4], 'message ' || j, now() - interval '1 day' + (j + 1) * interval '1 second'
		  FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[]) AS c(c, m0, m1, m2, m3), generate_series(0, $6 - 1) j`,
			[]any{convIDs, members[0], members[1], members[2], members[3], msgs}},
		{`UPDATE conversations c SET last_message_at = (SELECT max(created_at) FROM messages m WHERE m.conversation_id = c.id)
		  WHERE id = ANY($1::uuid[])`, []any{convIDs}},
	} {
		if _, err := a.admin.Exec(ctx, st.sql, st.args...); err != nil {
			a.t.Fatal(err)
		}
	}
	return tokens, convIDs
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

// rowCounts are the row counts of the tables a write may touch.
type rowCounts map[string]int

// rows counts the rows of every table a write may touch.
func (a *testAPI) rows() rowCounts {
	a.t.Helper()
	n := rowCounts{}
	for _, table := range []string{"users", "conversations", "conversation_participants", "messages"} {
		n[table] = a.count("SELECT count(*)::int FROM " + table)
	}
	return n
}

// expectRows fails, saying after what, for every table whose row count is
// not what before says.
func (a *testAPI) expectRows(after string, before rowCounts) {
	a.t.Helper()
	for table, n := range a.rows() {
		if n != before[table] {
			a.t.Errorf("%d rows in %s after %s, want %d", n, table, after, before[table])
		}
	}
}

// backends counts this API's server connections in pg_stat_activity.
func (a *testAPI) backends() int {
	a.t.Helper()
	n, err := countBackends(a.admin, a.appName)
	if err != nil {
		a.t.Fatal(err)
	}
	return n
}

// lockWaiters counts this API's server connections waiting for a lock.
func (a *testAPI) lockWaiters() int {
	a.t.Helper()
	return a.count("SELECT count(*)::int FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'", a.appName)
}

// countBackends counts appName's server connections, over conn. It
// reports errors rather than failing, so that any goroutine may use it.
func countBackends(conn *pgx.Conn, appName string) (int, error) {
	var n int
	err := conn.QueryRow(context.Background(),
		"SELECT count(*)::int FROM pg_stat_activity WHERE application_name = $1", appName).Scan(&n)
	return n, err
}

// ---- GraphQL over HTTP ----

// gqlResponse is a decoded GraphQL response with its HTTP details.
type gqlResponse struct {
	Status int
	Header http.Header
	// Accept is the Accept header the request sent.
	Accept string
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

// ok reports a response that succeeded outright.
func (r *gqlResponse) ok() bool {
	return r != nil && r.Status == http.StatusOK && len(r.Errors) == 0
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

// notJSONError is an answer whose body is not JSON.
type notJSONError struct {
	status int
	raw    []byte
}

func (e *notJSONError) Error() string {
	return fmt.Sprintf("status %d, body not JSON: %.300s", e.status, e.raw)
}

// decodeGQL decodes a GraphQL response body.
func decodeGQL(resp *http.Response, raw []byte) (*gqlResponse, error) {
	r := &gqlResponse{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	if resp.Request != nil {
		r.Accept = resp.Request.Header.Get("Accept")
	}
	if err := json.Unmarshal(raw, r); err != nil {
		return nil, &notJSONError{resp.StatusCode, raw}
	}
	return r, nil
}

// gqlClient posts GraphQL requests to the server at url. It reports errors
// rather than failing the test, so that any goroutine may use it.
type gqlClient struct {
	url  string // http://host:port
	http *http.Client
}

// bearer is the Authorization header for token; "" for no token.
func bearer(token string) string {
	if token == "" {
		return ""
	}
	return "Bearer " + token
}

// query posts query with vars as the bearer of token ("" sends none).
func (c gqlClient) query(ctx context.Context, token, query string, vars map[string]any) (*gqlResponse, error) {
	return c.do(ctx, bearer(token), map[string]any{"query": query, "variables": vars})
}

// do posts body with the Authorization header as given ("" sends none).
// The error is a transport error (a client that hung up gets its
// context's error) or a *notJSONError.
func (c gqlClient) do(ctx context.Context, authorization string, body map[string]any) (*gqlResponse, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url+"/query", bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return decodeGQL(resp, raw)
}

// post sends a GraphQL request; token "" sends no Authorization header.
func (a *testAPI) post(token, query string, vars map[string]any) *gqlResponse {
	a.t.Helper()
	return a.postBody(bearer(token), map[string]any{"query": query, "variables": vars})
}

// postAuth is post with the Authorization header as given ("" sends none).
func (a *testAPI) postAuth(authorization, query string, vars map[string]any) *gqlResponse {
	a.t.Helper()
	return a.postBody(authorization, map[string]any{"query": query, "variables": vars})
}

// postBody posts body as it is.
func (a *testAPI) postBody(authorization string, body map[string]any) *gqlResponse {
	a.t.Helper()
	r, err := a.client.do(context.Background(), authorization, body)
	if err != nil {
		a.t.Fatalf("POST /query: %v", err)
	}
	return r
}

// do makes a raw request and returns the response with its body read.
func (a *testAPI) do(req *http.Request) (*http.Response, []byte) {
	a.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return resp, raw
}

// get sends GET path (with its query string) as the bearer of token.
func (a *testAPI) get(token, path string) (*http.Response, []byte) {
	a.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, a.srv.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return a.do(req)
}

// getJSON decodes GET path into v and returns the status.
func (a *testAPI) getJSON(path string, v any) int {
	a.t.Helper()
	resp, raw := a.get("", path)
	if err := json.Unmarshal(raw, v); err != nil {
		a.t.Fatalf("GET %s: %d %v: %.300s", path, resp.StatusCode, err, raw)
	}
	return resp.StatusCode
}

// decode is decodeGQL that fails the test on a body that is not JSON.
func (a *testAPI) decode(resp *http.Response, raw []byte) *gqlResponse {
	a.t.Helper()
	r, err := decodeGQL(resp, raw)
	if err != nil {
		a.t.Fatal(err)
	}
	return r
}

// sendMessage sends a message with the sendMessage mutation and returns
// its id.
func (a *testAPI) sendMessage(token, conv, body string) string {
	a.t.Helper()
	var out struct{ SendMessage struct{ ID string } }
	a.post(token, sendMessageMutation, map[string]any{"c": conv, "b": body}).into(a.t, &out)
	return out.SendMessage.ID
}

// GraphQL documents of more than one test file.
const (
	meQuery             = "{ me { id displayName email } }"
	sendMessageMutation = `mutation Send($c: ID!, $b: String!) {
  sendMessage(input: {conversationId: $c, body: $b}) { id body }
}`
	// sendMessage asks for everything a sent message shows.
	sendMessage = `mutation($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) {
	id body createdAt author { id displayName } conversation { id lastMessageAt } } }`
	markRead           = `mutation($c: ID!) { markConversationRead(conversationId: $c) { id unreadCount } }`
	signUp             = `mutation($in: SignUpInput!) { signUp(input: $in) { token expiresAt user { id displayName } } }`
	signIn             = `mutation($email: String!, $password: String!) { signIn(input: {email: $email, password: $password}) { token user { id } } }`
	createConversation = `mutation($in: CreateConversationInput!) { createConversation(input: $in) {
	id title createdAt lastMessageAt unreadCount participants { id } lastMessage { id } messages { nodes { id } } } }`
	messagePage = `query($c: ID!, $after: String) { conversation(id: $c) {
	messages(first: 10, after: $after) { edges { cursor node { id body createdAt } } pageInfo { hasNextPage endCursor } } } }`
	messageAddedSubscription = `subscription Added($c: ID!) {
  messageAdded(conversationId: $c) { id body author { id } conversation { id } }
}`
	poolStatusSubscription = `subscription PoolStatus($ms: Int) {
  poolStatus(intervalMs: $ms) { status checkedOut total acquireCount }
}`
)

// The JSON shapes of the schema's types, as the tests decode them.

type userJSON struct {
	ID          string
	DisplayName string
	Email       *string
}

type messageJSON struct {
	ID           string
	Body         string
	CreatedAt    string
	Author       userJSON
	Conversation *conversationJSON
}

type pageInfoJSON struct {
	HasNextPage bool
	EndCursor   *string
}

type conversationJSON struct {
	ID            string
	Title         *string
	CreatedAt     string
	LastMessageAt *string
	UnreadCount   int
	Participants  []userJSON
	LastMessage   *messageJSON
	Messages      struct {
		Nodes    []messageJSON
		PageInfo pageInfoJSON
	}
}

// messagePageJSON is the data of messagePage.
type messagePageJSON struct {
	Conversation struct {
		Messages struct {
			Edges []struct {
				Cursor string
				Node   messageJSON
			}
			PageInfo pageInfoJSON
		}
	}
}

// addedEvent is a messageAdded event as messageAddedSubscription asks.
type addedEvent struct {
	ID, Body     string
	Author       struct{ ID string }
	Conversation struct{ ID string }
}

func ids[T any](items []T, id func(T) string) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = id(it)
	}
	return out
}

func userIDs(us []userJSON) []string { return ids(us, func(u userJSON) string { return u.ID }) }

func conversationIDs(cs []conversationJSON) []string {
	return ids(cs, func(c conversationJSON) string { return c.ID })
}

func parseTime(t *testing.T, s string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("Time %q: %v", s, err)
	}
	return at
}

// ---- GraphQL over websockets ----

// wsMessage is one graphql-transport-ws (or graphql-ws) message; at is
// when it arrived.
type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
	at      time.Time
}

// wsClient is a graphql-transport-ws (or graphql-ws) client. One goroutine
// reads the socket into msgs (answering the server's pings and dropping
// keep-alives), so that waiting for a message can have a deadline without
// closing the socket, as a cancelled Read would. Its methods fail the
// test: only the test's goroutine may call them.
type wsClient struct {
	t    testing.TB
	conn *websocket.Conn
	msgs chan wsMessage // closed when the socket is
	done chan struct{}  // closed by close, to stop the reader
	err  error          // why the reader stopped; read it after msgs is closed
}

// wsDial is how dialWS opens a socket; the zero value speaks
// graphql-transport-ws and sends no Origin.
type wsDial struct {
	origin        string
	authorization string       // the upgrade request's Authorization header
	subprotocol   string       // "" is graphql-transport-ws
	http          *http.Client // nil is the default client
}

// openWS opens a websocket to base's GraphQL endpoint, returning the
// handshake response when the server refuses.
func openWS(ctx context.Context, base string, d wsDial) (*websocket.Conn, *http.Response, error) {
	header := http.Header{}
	if d.origin != "" {
		header.Set("Origin", d.origin)
	}
	if d.authorization != "" {
		header.Set("Authorization", d.authorization)
	}
	if d.subprotocol == "" {
		d.subprotocol = "graphql-transport-ws"
	}
	conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/query", &websocket.DialOptions{
		Subprotocols: []string{d.subprotocol},
		HTTPHeader:   header,
		HTTPClient:   d.http,
	})
	if err != nil {
		return nil, resp, err
	}
	if p := conn.Subprotocol(); p != d.subprotocol {
		conn.CloseNow()
		return nil, resp, fmt.Errorf("negotiated subprotocol %q, want %q", p, d.subprotocol)
	}
	return conn, resp, nil
}

// dialWS opens a websocket client to base (http://host:port).
func dialWS(t testing.TB, base string, d wsDial) (*wsClient, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, resp, err := openWS(ctx, base, d)
	if err != nil {
		return nil, resp, err
	}
	c := &wsClient{t: t, conn: conn, msgs: make(chan wsMessage, 64), done: make(chan struct{})}
	go c.read()
	t.Cleanup(c.close)
	return c, resp, nil
}

// connectWS dials base and completes connection_init / connection_ack,
// signed in as the bearer of token ("" for nobody).
func connectWS(t testing.TB, base, token string) *wsClient {
	t.Helper()
	c, resp, err := dialWS(t, base, wsDial{})
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, resp)
	}
	c.init(token)
	return c
}

func (c *wsClient) read() {
	defer close(c.msgs)
	for {
		var m wsMessage
		if err := wsjson.Read(context.Background(), c.conn, &m); err != nil {
			c.err = err
			return
		}
		m.at = time.Now()
		switch m.Type {
		case "ping":
			_ = wsjson.Write(context.Background(), c.conn, wsMessage{Type: "pong"})
			continue
		case "ka": // graphql-ws keep-alive
			continue
		}
		select {
		case c.msgs <- m:
		case <-c.done:
			return
		}
	}
}

func (c *wsClient) close() {
	select {
	case <-c.done:
		return
	default:
	}
	close(c.done)
	c.conn.CloseNow()
	for range c.msgs { // wait for the reader
	}
}

func (c *wsClient) send(m wsMessage) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := wsjson.Write(ctx, c.conn, m); err != nil {
		c.t.Fatalf("send %s: %v", m.Type, err)
	}
}

// sendJSON sends a message of type typ with payload encoded as JSON.
func (c *wsClient) sendJSON(id, typ string, payload any) {
	c.t.Helper()
	p, err := json.Marshal(payload)
	if err != nil {
		c.t.Fatal(err)
	}
	c.send(wsMessage{ID: id, Type: typ, Payload: p})
}

// next returns the next message, failing the test at the deadline.
func (c *wsClient) next(deadline time.Time) wsMessage {
	c.t.Helper()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			c.t.Fatalf("websocket closed by the server: %v", c.err)
		}
		return m
	case <-timer.C:
		c.t.Fatal("no message before the deadline")
	}
	panic("unreachable")
}

// expect returns the next message, which must be of type typ.
func (c *wsClient) expect(typ string, deadline time.Time) wsMessage {
	c.t.Helper()
	m := c.next(deadline)
	if m.Type != typ {
		c.t.Fatalf("got %s %s, want %s", m.Type, m.Payload, typ)
	}
	return m
}

// init sends connection_init, signed in as the bearer of token ("" for
// nobody), and waits for connection_ack.
func (c *wsClient) init(token string) {
	c.t.Helper()
	payload := map[string]string{}
	if token != "" {
		payload["Authorization"] = "Bearer " + token
	}
	c.sendJSON("", "connection_init", payload)
	c.expect("connection_ack", time.Now().Add(5*time.Second))
}

// closed waits until the server closes the socket and returns why, with
// the messages that arrived first.
func (c *wsClient) closed(timeout time.Duration) (before []wsMessage, err error) {
	c.t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				return before, c.err
			}
			before = append(before, m)
		case <-timer.C:
			c.t.Fatalf("socket still open after %s; read %d messages", timeout, len(before))
		}
	}
}

// roundTrip sends a ping and waits for the pong: once it arrives the
// server's connection loop is running, with all of its goroutines.
func (c *wsClient) roundTrip() {
	c.t.Helper()
	c.send(wsMessage{Type: "ping"})
	c.expect("pong", time.Now().Add(5*time.Second))
}

// waitComplete reads until the server completes id, returning how many
// events for id arrived meanwhile; any other message fails the test.
func (c *wsClient) waitComplete(id string, deadline time.Time) (events int) {
	c.t.Helper()
	for {
		m := c.next(deadline)
		switch {
		case m.ID == id && m.Type == "complete":
			return events
		case m.ID == id && m.Type == "next":
			events++
		default:
			c.t.Fatalf("unexpected %s %s %s", m.ID, m.Type, m.Payload)
		}
	}
}

// quiet fails if any message arrives within d: after a subscription ended
// there must be nothing more to read.
func (c *wsClient) quiet(d time.Duration) {
	c.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case m, ok := <-c.msgs:
		if ok {
			c.t.Fatalf("message after the subscription ended: %s %s %s", m.ID, m.Type, m.Payload)
		}
	case <-timer.C:
	}
}

// subscribe starts poolStatus with the given interval (0: the default).
func (c *wsClient) subscribe(id string, intervalMs int) {
	c.t.Helper()
	vars := map[string]any{}
	if intervalMs != 0 {
		vars["ms"] = intervalMs
	}
	c.sendJSON(id, "subscribe", map[string]any{"query": poolStatusSubscription, "variables": vars})
}

// subscribeMessages starts messageAdded on conv.
func (c *wsClient) subscribeMessages(id, conv string) {
	c.t.Helper()
	c.sendJSON(id, "subscribe", messagesRequest(conv))
}

func messagesRequest(conv string) map[string]any {
	return map[string]any{"query": messageAddedSubscription, "variables": map[string]any{"c": conv}}
}

// nextMessage returns the next messageAdded event of subscription id.
func (c *wsClient) nextMessage(id string) addedEvent {
	c.t.Helper()
	m := c.next(time.Now().Add(10 * time.Second))
	if m.ID != id || m.Type != "next" {
		c.t.Fatalf("got %s %s %s, want next for %s", m.ID, m.Type, m.Payload, id)
	}
	return decodeAdded(c.t, m.Payload)
}

// decodeAdded decodes a messageAdded payload that must carry no error.
func decodeAdded(t testing.TB, payload []byte) addedEvent {
	t.Helper()
	var ev struct {
		Data   struct{ MessageAdded addedEvent }
		Errors []json.RawMessage
	}
	if err := json.Unmarshal(payload, &ev); err != nil || len(ev.Errors) > 0 {
		t.Fatalf("event %s: %v", payload, err)
	}
	return ev.Data.MessageAdded
}

// subscriptionError returns the error code a subscription ended with: an
// error message, or a next with errors (then complete).
func (c *wsClient) subscriptionError(id string) string {
	c.t.Helper()
	m := c.next(time.Now().Add(10 * time.Second))
	if m.ID != id {
		c.t.Fatalf("got %s %s %s for another id", m.ID, m.Type, m.Payload)
	}
	type gqlErr struct {
		Extensions struct{ Code string }
	}
	var errs []gqlErr
	switch m.Type {
	case "error":
		if err := json.Unmarshal(m.Payload, &errs); err != nil {
			c.t.Fatalf("error payload %s: %v", m.Payload, err)
		}
	case "next":
		var p struct{ Errors []gqlErr }
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			c.t.Fatalf("next payload %s: %v", m.Payload, err)
		}
		errs = p.Errors
		c.expect("complete", time.Now().Add(5*time.Second))
	default:
		c.t.Fatalf("got %s %s, want an error", m.Type, m.Payload)
	}
	if len(errs) != 1 {
		c.t.Fatalf("want one error, got %s", m.Payload)
	}
	return errs[0].Extensions.Code
}

// ---- GraphQL over server-sent events ----

// sseStream is a subscription over server-sent events.
type sseStream struct {
	t  testing.TB
	sc *bufio.Scanner
}

// openSSE posts a subscription to base as the bearer of token and returns
// its event stream, which the test's end closes.
func openSSE(t testing.TB, base, token string, body map[string]any) *sseStream {
	t.Helper()
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/query", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("content type %q", ct)
	}
	return &sseStream{t: t, sc: bufio.NewScanner(resp.Body)}
}

// nextMessage returns the next messageAdded event. Only the test's
// goroutine may call it.
func (s *sseStream) nextMessage() addedEvent {
	s.t.Helper()
	for s.sc.Scan() {
		if data, ok := strings.CutPrefix(s.sc.Text(), "data: "); ok {
			return decodeAdded(s.t, []byte(data))
		}
	}
	s.t.Fatalf("stream ended without an event: %v", s.sc.Err())
	return addedEvent{}
}

// completes reads until the server completes the stream, and reports a
// stream that ends otherwise. Any goroutine may call it.
func (s *sseStream) completes() error {
	for s.sc.Scan() {
		if s.sc.Text() == "event: complete" {
			return nil
		}
	}
	return fmt.Errorf("SSE stream ended without completing: %v", s.sc.Err())
}

// ---- Tokens ----

// signed returns claims signed with method and key.
func signed(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// chatqlClaims are the claims of a chatql token for sub, valid for an hour.
func chatqlClaims(sub string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"iss": "chatql", "sub": sub, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
}

// withValues returns a copy of c with the given keys set (nil deletes).
func withValues(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// ---- The built binary, as a process ----

// binDir holds the binary chatqlBinary builds; TestMain removes it.
var binDir string

// chatqlBinary builds chatql once for all the tests that run it.
var chatqlBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "chatql-bin-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "chatql")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// buildBinary returns the built chatql, failing the test if it does not
// build.
func buildBinary(t testing.TB) string {
	t.Helper()
	bin, err := chatqlBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// runBinary runs chatql with args and env (and PATH) in a directory of its
// own to the end, returning its exit code and stderr.
func runBinary(t testing.TB, env []string, args ...string) (code int, stderr string) {
	t.Helper()
	cmd := exec.Command(buildBinary(t), args...)
	cmd.Dir = t.TempDir() // no .env, no .data
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var out bytes.Buffer
	cmd.Stderr = &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String()
	}
	t.Fatalf("run chatql: %v", err)
	return -1, ""
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// process is a running chatql.
type process struct {
	addr   string
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan error
}

// url is the process's base URL.
func (p *process) url() string { return "http://" + p.addr }

// startProcess runs the built binary with env in dir and waits for it to
// be ready.
func startProcess(t testing.TB, dir string, env ...string) *process {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(buildBinary(t))
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LISTEN_ADDR=" + addr}, env...)
	p := &process{addr: addr, cmd: cmd, logs: &syncBuffer{}, exited: make(chan error, 1)}
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	var exitErr error
	exited := false
	waitFor(t, 60*time.Second, "the process to be ready", func() bool {
		select {
		case exitErr = <-p.exited:
			exited = true
			return true
		default:
		}
		resp, err := http.Get(p.url() + "/health/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, func() string { return "logs:\n" + p.logs.String() })
	if exited {
		t.Fatalf("process exited before ready: %v; logs:\n%s", exitErr, p.logs.String())
	}
	return p
}

// signal sends sig to the process.
func (p *process) signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the process to exit and fails unless it exits 0.
func (p *process) wait(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("exit: %v; logs:\n%s", err, p.logs.String())
		}
	case <-time.After(timeout):
		t.Fatalf("no exit within %s; logs:\n%s", timeout, p.logs.String())
	}
}

// stop sends sig and waits for the process to exit: cleanly, unless sig is
// os.Kill.
func (p *process) stop(t testing.TB, sig os.Signal) {
	t.Helper()
	p.signal(t, sig)
	if sig != os.Kill {
		p.wait(t, 60*time.Second)
		return
	}
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("no exit after %v; logs:\n%s", sig, p.logs.String())
	}
}

// startChatql runs the built server on dbURL with the Supabase block,
// and waits until it is ready and its listener listens; env is added (a
// variable there wins). It returns the process and its application name.
func startChatql(t testing.TB, dbURL string, env ...string) (*process, string) {
	t.Helper()
	app := "chatql-rt-" + randomSuffix(6)
	env = append([]string{
		"DATABASE_URL=" + dbURL,
		"DB_APPLICATION_NAME=" + app,
		"JWT_SECRET=" + testSecret,
		"DB_POOL_SIZE=3", "DB_MAX_OVERFLOW=2",
		"LOG_LEVEL=warn",
	}, env...)
	p := startProcess(t, t.TempDir(), env...)
	// Ready, and listening: a message sent before the listener's LISTEN
	// would never be announced to this process's subscribers.
	waitMetric(t, p.url(), "chatql_realtime_listening", 1)
	return p, app
}

// seedClients seeds dbURL with ds and returns n clients (seeded users with
// a token and a conversation).
func seedClients(t testing.TB, dbURL string, ds load.DataSet, n int) []load.Client {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := load.Seed(ctx, conn, ds); err != nil {
		t.Fatal(err)
	}
	tokens := testTokens(t)
	cs, err := load.Clients(ctx, conn, n, func(id string) (string, error) {
		tok, _, err := tokens.Issue(id)
		return tok, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// superuserConn is a connection to the test server as its superuser,
// closed when the test ends, to look at every database's backends.
func superuserConn(t testing.TB) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), pgtest.SuperuserURL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// ---- /metrics ----

// scrapeMetrics reads base's /metrics with the Prometheus text parser;
// token "" sends no Authorization header.
func scrapeMetrics(base, token string) (map[string]*dto.MetricFamily, error) {
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// metricValue is the value of an unlabelled gauge or counter.
func metricValue(fams map[string]*dto.MetricFamily, name string) (float64, bool) {
	f, ok := fams[name]
	if !ok || len(f.Metric) != 1 {
		return 0, false
	}
	m := f.Metric[0]
	if m.Gauge != nil {
		return m.Gauge.GetValue(), true
	}
	return m.Counter.GetValue(), true
}

// waitMetric polls base's /metrics until name (unlabelled) is want.
func waitMetric(t testing.TB, base, name string, want float64) {
	t.Helper()
	var got float64
	var err error
	waitFor(t, 20*time.Second, fmt.Sprintf("%s = %v", name, want), func() bool {
		var fams map[string]*dto.MetricFamily
		if fams, err = scrapeMetrics(base, ""); err != nil {
			return false
		}
		var ok bool
		if got, ok = metricValue(fams, name); !ok {
			err = fmt.Errorf("%s not in /metrics", name)
		}
		return ok && got == want
	}, func() string { return fmt.Sprintf("%s = %v (%v)", name, got, err) })
}

// ---- PgBouncer ----

// startPooler starts a PgBouncer in front of the test cluster (skipping
// the test under TEST_DATABASE_URL) and stops it when the test ends.
func startPooler(t *testing.T, mode string, maxClientConn, defaultPoolSize int) *pgtest.Bouncer {
	t.Helper()
	return pgtest.NewBouncer(t, pgtest.BouncerOptions{PoolMode: mode, MaxClientConn: maxClientConn, DefaultPoolSize: defaultPoolSize})
}

// throughBouncer returns an apiOptions.poolURL that sends the pool through
// b: the same database and credentials, PgBouncer's host and port.
func throughBouncer(b *pgtest.Bouncer) func(string) string {
	return func(direct string) string {
		u, err := url.Parse(direct)
		if err != nil {
			panic(fmt.Sprintf("test database URL %q: %v", direct, err))
		}
		u.Host = fmt.Sprintf("127.0.0.1:%d", b.Port())
		return u.String()
	}
}
