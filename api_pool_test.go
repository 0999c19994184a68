package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/jackc/pgx/v5"

	"chatql/graph"
)

// inboxFixture gives a viewer 60 conversations of 3 participants and 12
// messages each, so every page size tried is full.
func inboxFixture(a *testAPI) (viewerToken string) {
	a.t.Helper()
	token, _ := a.seedInbox(60, 12)
	return token
}

func inboxQuery(first int) string {
	return strings.Replace(graph.InboxQuery, "conversations(first: 20)", fmt.Sprintf("conversations(first: %d)", first), 1)
}

// TestInboxStatementCount: the inbox query costs the same few statements
// however many conversations it returns, counted by a pgx tracer and
// reported in extensions.db.
func TestInboxStatementCount(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	token := inboxFixture(a)
	counts := map[int]int{}
	for _, first := range []int{5, 20, 50} {
		before := a.counter.n.Load()
		r := a.post(token, inboxQuery(first), nil)
		var data struct {
			Conversations struct {
				Edges []struct {
					Node struct {
						Participants []any
						Messages     struct{ Nodes []any }
					}
				}
			}
		}
		r.into(t, &data)
		traced := int(a.counter.n.Load() - before)
		if got := len(data.Conversations.Edges); got != first {
			t.Fatalf("first %d: %d conversations", first, got)
		}
		if n := data.Conversations.Edges[0].Node; len(n.Participants) != 3 || len(n.Messages.Nodes) != 10 {
			t.Fatalf("first %d: incomplete conversation: %+v", first, n)
		}
		if r.Extensions.DB == nil || r.Extensions.DB.Statements != traced {
			t.Errorf("first %d: extensions.db %+v, tracer counted %d", first, r.Extensions.DB, traced)
		}
		t.Logf("inbox first=%d: %d statements, held %.2f ms", first, traced, r.Extensions.DB.HoldMs)
		counts[first] = traced
	}
	if counts[5] != counts[20] || counts[20] != counts[50] {
		t.Errorf("statement count depends on page size: %v", counts)
	}
	if counts[20] > 8 {
		t.Errorf("inbox takes %d statements, budget is 8", counts[20])
	}
}

// TestConnectionDiscipline: 200 concurrent inbox queries on a pool of 3+2
// all succeed, the server never sees more than 5 connections, and every
// connection comes back.
func TestConnectionDiscipline(t *testing.T) {
	skipInShort(t, "200 concurrent clients")
	t.Parallel()
	a := newAPI(t, withoutAdmission, func(o *apiOptions) { o.pool.Size, o.pool.MaxOverflow, o.pool.Timeout = 3, 2, loadPoolTimeout })
	token := inboxFixture(a)

	// The sampler has a connection of its own: a.admin is the test
	// goroutine's.
	sampler, err := pgx.Connect(context.Background(), a.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer sampler.Close(context.Background())
	var maxSeen atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				sampled <- nil
				return
			case <-time.After(5 * time.Millisecond):
			}
			n, err := countBackends(sampler, a.appName)
			if err != nil {
				sampled <- err
				return
			}
			if int64(n) > maxSeen.Load() {
				maxSeen.Store(int64(n))
			}
		}
	}()

	const clients = 200
	c := a.loadClient(t, 0)
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range clients {
		wg.Go(func() {
			if r, err := c.query(context.Background(), token, graph.InboxQuery, nil); !r.ok() {
				failed.Add(1)
				if err != nil {
					t.Errorf("inbox: %v", err)
				} else {
					t.Errorf("inbox: %d %s", r.Status, r.Raw)
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	close(stop)
	if err := <-sampled; err != nil {
		t.Fatalf("sample pg_stat_activity: %v", err)
	}
	t.Logf("%d concurrent inbox queries on 3+2: wall %s, max backends %d, stats %+v", clients, wall.Round(time.Millisecond), maxSeen.Load(), a.pool.Stats())
	if failed.Load() > 0 {
		t.Fatalf("%d of %d failed", failed.Load(), clients)
	}
	if maxSeen.Load() > 5 {
		t.Errorf("saw %d backends, cap is 5", maxSeen.Load())
	}
	a.waitReleased()
	if got := a.pool.Stats().AcquireCount; got != clients {
		t.Errorf("%d operations borrowed %d connections, want one each", clients, got)
	}
}

// TestPoolTimeoutResponse: with the only connection held elsewhere, a query
// gets 503 with Retry-After and DB_POOL_TIMEOUT after the pool timeout.
func TestPoolTimeoutResponse(t *testing.T) {
	t.Parallel()
	// A second: opening the holder's connection on a loaded machine must
	// not itself run into the timeout.
	const timeout = time.Second
	a := newAPI(t, func(o *apiOptions) { o.pool.Size, o.pool.MaxOverflow, o.pool.Timeout = 1, 0, timeout })
	_, token := a.user("Ann")
	holder := a.pool.Scope()
	defer holder.Release()
	if _, err := holder.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	r := a.post(token, graph.InboxQuery, nil)
	took := time.Since(start)
	t.Logf("pool timeout answered in %s: %d %s", took.Round(time.Millisecond), r.Status, r.Raw)
	if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Errorf("status %d Retry-After %q, want 503 with Retry-After", r.Status, r.Header.Get("Retry-After"))
	}
	if code := r.code(t); code != graph.CodePoolTimeout {
		t.Errorf("code %s, want DB_POOL_TIMEOUT", code)
	}
	// Not before the pool timeout; the upper bound only tells "after the
	// timeout" from "never", with room for a loaded machine.
	if took < timeout || took > timeout+10*time.Second {
		t.Errorf("answered after %s, want about %s", took, timeout)
	}
	holder.Release()
	if r := a.post(token, "{ me { id } }", nil); r.Status != 200 || len(r.Errors) > 0 {
		t.Errorf("after the holder let go: %d %s", r.Status, r.Raw)
	}
}

// TestPoolStatusMatchesHealth: poolStatus and /health/db-pool are one
// snapshot in two encodings, and neither borrows a connection.
func TestPoolStatusMatchesHealth(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	_, token := a.user("Ann")
	a.post(token, "{ me { id } }", nil) // some history in the counters
	a.waitReleased()

	r := a.post("", `{ poolStatus { status poolSize maxOverflow maxConnections checkedOut checkedIn total overflow
		invalid waiting acquireCount timeouts avgAcquireWaitMs maxAcquireWaitMs recycled opened listener
		oldestWaitMs statements commits rollbacks } }`, nil)
	var gql struct{ PoolStatus map[string]any }
	r.into(t, &gql)
	var health map[string]any
	a.getJSON("/health/db-pool", &health)
	if len(health) != len(gql.PoolStatus) {
		t.Fatalf("field sets differ: %v vs %v", health, gql.PoolStatus)
	}
	for k, v := range gql.PoolStatus {
		snake := toSnake(k)
		if fmt.Sprint(health[snake]) != fmt.Sprint(v) {
			t.Errorf("%s: poolStatus %v, /health/db-pool %s %v", k, v, snake, health[snake])
		}
	}
	if r.Extensions.DB.Statements != 0 || gql.PoolStatus["acquireCount"].(float64) != 1 {
		t.Errorf("poolStatus borrowed a connection: %s", r.Raw)
	}
}

func toSnake(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c >= 'A' && c <= 'Z' {
			b.WriteByte('_')
			c += 'a' - 'A'
		}
		b.WriteRune(c)
	}
	return b.String()
}

// TestIntrospectionBorrowsNothing: operations that need no data never
// touch the pool.
func TestIntrospectionBorrowsNothing(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	for _, q := range []string{"{ __schema { queryType { name } } }", "{ __typename }", "{ poolStatus { status } }"} {
		r := a.post("", q, nil)
		if r.Status != 200 || len(r.Errors) > 0 {
			t.Fatalf("%s: %s", q, r.Raw)
		}
	}
	if st := a.pool.Stats(); st.AcquireCount != 0 || st.Total != 0 {
		t.Errorf("data-free operations borrowed: %+v", st)
	}
}

// TestReleaseOnErrorAndPanic: operations that fail, or whose resolver
// panics after borrowing, give their connection back.
func TestReleaseOnErrorAndPanic(t *testing.T) {
	t.Parallel()
	a := newAPI(t, func(o *apiOptions) {
		o.pool.Size, o.pool.MaxOverflow, o.pool.Timeout = 1, 0, 2*time.Second
		o.fieldMiddleware = func(ctx context.Context, next graphql.Resolver) (any, error) {
			res, err := next(ctx)
			if fc := graphql.GetFieldContext(ctx); fc.Field.Name == "displayName" && fc.Field.Alias == "boom" {
				panic("resolver bug")
			}
			return res, err
		}
	})
	_, token := a.user("Ann")
	other, _ := a.user("Bob")
	conv := a.conversation("", []string{other}, "hidden")

	for _, tc := range []struct{ query, code string }{
		{fmt.Sprintf(`{ conversation(id: %q) { id } }`, conv), graph.CodeNotFound},
		{`{ conversation(id: "nope") { id } }`, graph.CodeBadUserInput},
		{`{ me { boom: displayName } }`, graph.CodeInternal},
		{`{ me { id } conversations(first: 0) { nodes { id } } }`, graph.CodeBadUserInput},
	} {
		r := a.post(token, tc.query, nil)
		if got := r.codes(); len(got) == 0 || got[0] != tc.code {
			t.Errorf("%s: codes %v, want %s: %s", tc.query, got, tc.code, r.Raw)
		}
		if strings.Contains(string(r.Raw), "resolver bug") || strings.Contains(string(r.Raw), "SQL") {
			t.Errorf("internal detail leaked: %s", r.Raw)
		}
		a.waitReleased()
	}
	// With a pool of one, a leak would make this time out.
	if r := a.post(token, "{ me { id } }", nil); r.Status != 200 || len(r.Errors) > 0 {
		t.Fatalf("pool unusable after errors: %s", r.Raw)
	}
}

// TestReleaseOnClientDisconnect: a client that hangs up while its
// operation waits on the database gets its connection released at once,
// not when the database lets go.
func TestReleaseOnClientDisconnect(t *testing.T) {
	t.Parallel()
	a := newAPI(t, func(o *apiOptions) { o.pool.Size, o.pool.MaxOverflow = 1, 0 })
	viewer, token := a.user("Ann")
	conv := a.conversation("", []string{viewer}, "hello")

	// Lock the viewer's participant row, so markConversationRead blocks.
	ctx := context.Background()
	unlock := a.lockParticipants(conv)

	reqCtx, hangUp := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r, err := a.client.query(reqCtx, token, fmt.Sprintf(`mutation { markConversationRead(conversationId: %q) { id } }`, conv), nil)
		if err == nil {
			t.Errorf("request completed although the row was locked: %s", r.Raw)
		} else if !errors.Is(err, context.Canceled) {
			t.Errorf("request: %v", err)
		}
	}()
	waitFor(t, 20*time.Second, "the mutation to block on the lock", func() bool { return a.lockWaiters() > 0 })
	hangUp()
	<-done
	a.waitReleased() // while the lock is still held
	unlock()
	if r := a.post(token, "{ me { id } }", nil); r.Status != 200 || len(r.Errors) > 0 {
		t.Fatalf("pool unusable after a disconnect: %s", r.Raw)
	}
	if got := a.count("SELECT count(*)::int FROM conversation_participants WHERE conversation_id = $1 AND last_read_at IS NOT NULL", conv); got != 0 {
		t.Errorf("the abandoned mutation was committed")
	}
}

// TestDatabaseUnavailable: a database that refuses connections gives a
// prompt 503 with DB_UNAVAILABLE, not a pool timeout or an internal error.
func TestDatabaseUnavailable(t *testing.T) {
	t.Parallel()
	a := newAPIWithoutDatabase(t, "postgres://nobody@127.0.0.1:1/none?sslmode=disable", func(o *apiOptions) { o.pool.Timeout = 30 * time.Second })
	// A token for a user the database would have, had it answered.
	token, _, err := a.tokens.Issue("00000000-0000-4000-8000-000000000001")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := a.post(token, graph.InboxQuery, nil)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %s: an unreachable database must fail fast, not after the pool timeout (30s)", took)
	}
	if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" || r.code(t) != graph.CodeUnavailable {
		t.Errorf("got %d %s", r.Status, r.Raw)
	}
}
