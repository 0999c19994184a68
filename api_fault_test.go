package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/dbpool"
	"chatql/graph"
	"chatql/localpg/pgtest"
)

// The fault tests put the API under a modest load (tens of client
// goroutines) and then break something underneath it: the database
// restarts, its backends are killed, a lock stalls every connection, clients
// hang up mid-query. They check what clients are told (codes, HTTP status,
// how fast), that the pool heals and gives every connection back, and that
// no write a client was told succeeded is lost or duplicated.

// poolStats reads GET /health/db-pool and how long it took to answer.
func poolStats(c gqlClient) (dbpool.Stats, time.Duration, error) {
	start := time.Now()
	resp, err := c.http.Get(c.url + "/health/db-pool")
	if err != nil {
		return dbpool.Stats{}, 0, err
	}
	defer resp.Body.Close()
	var st dbpool.Stats
	err = json.NewDecoder(resp.Body).Decode(&st)
	took := time.Since(start)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return st, took, err
}

// failFast bounds how long a request caught by a broken database may take
// to be refused: generous for a loaded machine, and far below the pool
// timeout the tests that use it set, which a request waiting for a
// connection would take.
const failFast = 10 * time.Second

// faultRefusedWith reports a response that failed the way a client can act
// on: HTTP 503, a Retry-After, and code on every error.
func faultRefusedWith(r *gqlResponse, code string) bool {
	if r == nil || r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" || len(r.Errors) == 0 {
		return false
	}
	for _, c := range r.codes() {
		if c != code {
			return false
		}
	}
	return true
}

// faultLedger records what every sendMessage a fault test attempted was
// told, by body, so that faultCheckNothingLost can hold the database to it.
type faultLedger struct {
	mu       sync.Mutex
	outcomes map[string]string // body → "ok", an error code, or "transport"
}

func newFaultLedger() *faultLedger { return &faultLedger{outcomes: map[string]string{}} }

// send posts body to conv and records the outcome.
func (l *faultLedger) send(ctx context.Context, c gqlClient, token, conv, body string) (*gqlResponse, error) {
	r, err := c.query(ctx, token, sendMessageMutation, map[string]any{"c": conv, "b": body})
	outcome := "transport"
	switch {
	case r.ok():
		outcome = "ok"
	case r != nil && len(r.Errors) > 0:
		outcome = r.Errors[0].Extensions.Code
	case r != nil:
		outcome = fmt.Sprintf("status %d", r.Status)
	}
	l.mu.Lock()
	l.outcomes[body] = outcome
	l.mu.Unlock()
	return r, err
}

// faultCheckNothingLost compares the ledger with the messages table, read
// over conn (outside the pool):
//
//   - a body the client was told succeeded is there exactly once;
//   - a body refused with DB_POOL_TIMEOUT is not there: it never reached
//     the database;
//   - a body that failed otherwise is there at most once. It may have
//     committed when the failure came after COMMIT (the connection dropped
//     before the reply arrived): the client was told "unavailable", not
//     "not written", and a retry would duplicate it; we log how many;
//   - nothing is half-written: every message's conversation has a
//     last_message_at at or after it, and every ledger message's author has
//     read up to it, because sendMessage changes all three in one
//     transaction.
func faultCheckNothingLost(t testing.TB, conn *pgx.Conn, l *faultLedger) {
	t.Helper()
	ctx := context.Background()
	l.mu.Lock()
	defer l.mu.Unlock()
	bodies := make([]string, 0, len(l.outcomes))
	for b := range l.outcomes {
		bodies = append(bodies, b)
	}
	found := map[string]int{}
	rows, err := conn.Query(ctx, "SELECT body, count(*)::int FROM messages WHERE body = ANY($1) GROUP BY body", bodies)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var body string
		var n int
		if err := rows.Scan(&body, &n); err != nil {
			t.Fatal(err)
		}
		found[body] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var ok, failed, failedButWritten int
	for body, outcome := range l.outcomes {
		n := found[body]
		switch {
		case outcome == "ok":
			ok++
			if n != 1 {
				t.Errorf("message %q: client told it succeeded, found %d times", body, n)
			}
		case outcome == graph.CodePoolTimeout:
			failed++
			if n != 0 {
				t.Errorf("message %q: refused with DB_POOL_TIMEOUT, yet found %d times", body, n)
			}
		default:
			failed++
			if n > 1 {
				t.Errorf("message %q: failed with %s, found %d times", body, outcome, n)
			}
			failedButWritten += n
		}
	}
	var behind, unread int
	if err := conn.QueryRow(ctx, `SELECT count(*)::int FROM messages m JOIN conversations c ON c.id = m.conversation_id
		WHERE c.last_message_at IS NULL OR c.last_message_at < m.created_at`).Scan(&behind); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*)::int FROM messages m
		JOIN conversation_participants p ON p.conversation_id = m.conversation_id AND p.user_id = m.author_id
		WHERE m.body = ANY($1) AND (p.last_read_at IS NULL OR p.last_read_at < m.created_at)`, bodies).Scan(&unread); err != nil {
		t.Fatal(err)
	}
	if behind != 0 || unread != 0 {
		t.Errorf("half-written messages: %d after their conversation's last_message_at, %d after their author's read mark", behind, unread)
	}
	t.Logf("writes: %d succeeded (all stored once), %d failed (%d of them committed before the failure)", ok, failed, failedButWritten)
}

// faultResult is one request of a load.
type faultResult struct {
	start time.Time
	took  time.Duration
	resp  *gqlResponse // nil on a transport error or a body not JSON
	err   error
}

// faultLoad runs inbox readers and sendMessage writers until stopped. A
// worker whose request failed backs off 20 ms before the next, as a client
// honouring Retry-After would, rather than spin against a database that is
// down.
//
// Each writer posts to a conversation of its own: concurrent sends by one
// user to one conversation deadlock (see TestFaultConcurrentSends), and
// that bug would drown what these tests are about.
type faultLoad struct {
	c      gqlClient
	token  string
	ledger *faultLedger

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	mu      sync.Mutex
	results []faultResult
}

// startFaultLoad starts the workers; they stop at finish, or when the test
// ends, whichever comes first.
func startFaultLoad(t testing.TB, c gqlClient, token string, convs []string, ledger *faultLedger, readers, writers int) *faultLoad {
	t.Helper()
	if writers > len(convs) {
		t.Fatalf("%d writers for %d conversations: each writer needs one of its own", writers, len(convs))
	}
	l := &faultLoad{c: c, token: token, ledger: ledger, stop: make(chan struct{})}
	for w := range readers + writers {
		conv := ""
		if w >= readers {
			conv = convs[w-readers]
		}
		l.wg.Add(1)
		go l.work(w, conv)
	}
	t.Cleanup(func() { l.finish() })
	return l
}

// work runs one worker: a reader when conv is "", else a writer to conv.
func (l *faultLoad) work(worker int, conv string) {
	defer l.wg.Done()
	for seq := 0; ; seq++ {
		select {
		case <-l.stop:
			return
		default:
		}
		start := time.Now()
		var r *gqlResponse
		var err error
		if conv != "" {
			body := fmt.Sprintf("w%d-%d", worker, seq)
			r, err = l.ledger.send(context.Background(), l.c, l.token, conv, body)
		} else {
			r, err = l.c.query(context.Background(), l.token, graph.InboxQuery, nil)
		}
		res := faultResult{start: start, took: time.Since(start), resp: r, err: err}
		l.mu.Lock()
		l.results = append(l.results, res)
		l.mu.Unlock()
		if !r.ok() {
			select {
			case <-l.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// finish stops the workers, waits for them, and returns every result.
func (l *faultLoad) finish() []faultResult {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.results)
}

// successesSince counts the successful requests that started at or after t0.
func (l *faultLoad) successesSince(t0 time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.results {
		if !r.start.Before(t0) && r.resp.ok() {
			n++
		}
	}
	return n
}

// faultSummary describes the failures among results.
type faultSummary struct {
	total, failed int
	maxFailTook   time.Duration
}

func summarize(results []faultResult) faultSummary {
	s := faultSummary{total: len(results)}
	for _, r := range results {
		if !r.resp.ok() {
			s.failed++
			s.maxFailTook = max(s.maxFailTook, r.took)
		}
	}
	return s
}

// faultCheckFailures requires every failed request to have been refused
// with code (503, Retry-After), none INTERNAL or a transport error, each
// answered within within.
func faultCheckFailures(t testing.TB, results []faultResult, code string, within time.Duration) {
	t.Helper()
	bad := 0
	for _, r := range results {
		if r.resp.ok() {
			continue
		}
		switch {
		case r.resp == nil:
			t.Errorf("transport error: %v", r.err)
		case !faultRefusedWith(r.resp, code):
			t.Errorf("failed with status %d Retry-After %q codes %v, want 503 with Retry-After and %s: %s",
				r.resp.Status, r.resp.Header.Get("Retry-After"), r.resp.codes(), code, r.resp.Raw)
		case r.took > within:
			t.Errorf("failure answered after %s, want under %s", r.took.Round(time.Millisecond), within)
		default:
			continue
		}
		if bad++; bad >= 5 {
			t.Fatal("too many bad failures; stopping here")
		}
	}
}

// TestFaultPostgresRestart: the database restarts (pg_ctl restart -m fast)
// under load. Operations caught by it fail fast with DB_UNAVAILABLE, the
// first request after the database is back succeeds (pre-ping discards
// the dead connections), every connection comes back, and no
// acknowledged write is lost.
//
// Not parallel: it restarts the cluster every test of the package shares,
// and Go runs the sequential top-level tests before releasing the
// parallel ones.
func TestFaultPostgresRestart(t *testing.T) {
	skipInShort(t, "a database restart under load")
	cluster := pgtest.Cluster()
	if cluster == nil {
		t.Skip("TEST_DATABASE_URL is set: the server is not ours to restart")
	}
	const size, overflow = 4, 4
	// A pool timeout far above failFast: a failure answered within
	// failFast did not wait for a connection.
	a := newAPI(t, withoutAdmission, func(o *apiOptions) { o.pool.Size, o.pool.MaxOverflow, o.pool.Timeout = size, overflow, 30*time.Second })
	token, convs := a.seedInbox(8, 3)
	c := a.loadClient(t, 0)
	ledger := newFaultLedger()
	load := startFaultLoad(t, c, token, convs, ledger, 16, 8)

	began := time.Now()
	waitFor(t, 20*time.Second, "load warming up", func() bool { return load.successesSince(began) >= 50 })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	restartStart := time.Now()
	if err := cluster.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	restarted := time.Now()

	// The database accepts connections again: the service must too.
	var last *gqlResponse
	var lastErr error
	recovered := waitFor(t, 20*time.Second, "a success after the restart", func() bool {
		last, lastErr = c.query(ctx, token, "{ me { id } }", nil)
		return last.ok()
	}, func() string { return fmt.Sprintf("last: %v %+v", lastErr, last) })
	healed := time.Now()
	waitFor(t, 20*time.Second, "load after the restart", func() bool { return load.successesSince(healed) >= 50 })
	results := load.finish()

	sum := summarize(results)
	t.Logf("restart took %s; %d requests, %d failed (answered in at most %s), first success %s after Restart returned; stats %+v",
		restarted.Sub(restartStart).Round(time.Millisecond), sum.total, sum.failed, sum.maxFailTook.Round(time.Millisecond),
		recovered.Round(time.Millisecond), a.pool.Stats())
	faultCheckFailures(t, results, graph.CodeUnavailable, failFast)
	if sum.failed == 0 {
		t.Error("no request noticed the restart: the test did not test anything")
	}
	// Once healed, healed for good: nothing that started after the first
	// success failed (dead idle connections are discarded by pre-ping, not
	// handed to requests).
	for _, r := range results {
		if r.start.After(healed) && !r.resp.ok() {
			t.Errorf("request started %s after recovery failed: %v %v", r.start.Sub(healed), r.err, r.resp)
		}
	}

	a.waitReleased()
	// a.admin died with the restart; check over a new connection.
	admin, err := pgx.Connect(ctx, a.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	waitFor(t, 20*time.Second, "idle connections within the pool size", func() bool {
		n, err := countBackends(admin, a.appName)
		if err != nil {
			t.Fatal(err)
		}
		return n <= size
	})
	faultCheckNothingLost(t, admin, ledger)
}

// TestFaultBackendsKilled: every server connection of the API is
// terminated, three times, under load. Only operations in flight on a
// killed connection fail (so at most one per killed backend), with
// DB_UNAVAILABLE; the pool heals after each round and counts the
// connections it discarded as invalid.
func TestFaultBackendsKilled(t *testing.T) {
	skipInShort(t, "backends killed under load")
	t.Parallel()
	const size, overflow = 4, 4
	// A pool timeout far above failFast: a failure answered within
	// failFast did not wait for a connection.
	a := newAPI(t, withoutAdmission, func(o *apiOptions) { o.pool.Size, o.pool.MaxOverflow, o.pool.Timeout = size, overflow, 30*time.Second })
	token, convs := a.seedInbox(8, 3)
	c := a.loadClient(t, 0)
	ledger := newFaultLedger()
	load := startFaultLoad(t, c, token, convs, ledger, 16, 8)

	killed := 0
	since := time.Now()
	for round := 1; round <= 3; round++ {
		waitFor(t, 20*time.Second, "load running", func() bool {
			return load.successesSince(since) >= 30 && a.backends() > 0
		})
		// pg_terminate_backend in the select list, not in WHERE: Postgres
		// may evaluate WHERE conditions in any order, and would then kill
		// every backend of the cluster.
		rows, err := a.admin.Query(context.Background(),
			"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", a.appName)
		if err != nil {
			t.Fatal(err)
		}
		done, err := pgx.CollectRows(rows, pgx.RowTo[bool])
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ok := range done {
			if ok {
				n++
			}
		}
		killed += n
		since = time.Now()
		healedIn := waitFor(t, 20*time.Second, "success after the kill", func() bool { return load.successesSince(since) > 0 })
		t.Logf("round %d: terminated %d backends; a request started after it succeeded within %s", round, n, healedIn.Round(time.Millisecond))
	}
	waitFor(t, 20*time.Second, "load after the last round", func() bool { return load.successesSince(since) >= 30 })
	results := load.finish()

	sum := summarize(results)
	st := a.pool.Stats()
	t.Logf("%d requests, %d failed (answered in at most %s), %d backends killed; invalid %d, opened %d",
		sum.total, sum.failed, sum.maxFailTook.Round(time.Millisecond), killed, st.Invalid, st.Opened)
	faultCheckFailures(t, results, graph.CodeUnavailable, failFast)
	if sum.failed > killed {
		t.Errorf("%d operations failed for %d killed backends: more than the ones in flight", sum.failed, killed)
	}
	if st.Invalid == 0 {
		t.Errorf("invalid is 0 after %d backends were killed", killed)
	}
	a.waitReleased()
	waitFor(t, 20*time.Second, "idle connections within the pool size", func() bool { return a.backends() <= size })
	faultCheckNothingLost(t, a.admin, ledger)
}

// TestFaultDatabaseStall: every connection of a 2+1 pool is stuck behind a
// row lock. New operations are refused after the pool timeout with 503,
// Retry-After and DB_POOL_TIMEOUT; /health/db-pool still answers at once
// and says "exhausted"; once the lock goes, the stuck operations finish and
// new ones succeed.
func TestFaultDatabaseStall(t *testing.T) {
	skipInShort(t, "a stalled database under load")
	t.Parallel()
	// Long enough that a loaded machine's delays stay well below it.
	const timeout = 2 * time.Second
	a := newAPI(t, withoutAdmission, func(o *apiOptions) { o.pool.Size, o.pool.MaxOverflow, o.pool.Timeout = 2, 1, timeout })
	token, convs := a.seedInbox(4, 3)
	c := a.loadClient(t, 0)
	ledger := newFaultLedger()
	ctx := context.Background()

	// Lock the viewer's participant row of convs[0], so that
	// markConversationRead blocks on it.
	unlock := a.lockParticipants(convs[0])

	const stuck = 3 // size + overflow
	blocked := make(chan *gqlResponse, stuck)
	for range stuck {
		go func() {
			r, _ := c.query(ctx, token, markRead, map[string]any{"c": convs[0]})
			blocked <- r
		}()
	}
	waitFor(t, 20*time.Second, "every connection blocked on the lock", func() bool { return a.lockWaiters() == stuck })

	// While stalled: 16 clients, a write then a read each, and a monitor
	// polling /health/db-pool meanwhile.
	type probe struct {
		st   dbpool.Stats
		took time.Duration
		err  error
	}
	var probes []probe
	stallDone := make(chan struct{})
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		for {
			st, took, err := poolStats(c)
			probes = append(probes, probe{st, took, err})
			select {
			case <-stallDone:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	const clients = 16
	var results []faultResult
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j, write := range []bool{true, false} {
				start := time.Now()
				var r *gqlResponse
				var err error
				if write {
					r, err = ledger.send(ctx, c, token, convs[1+i%3], fmt.Sprintf("stalled%d-%d", i, j))
				} else {
					r, err = c.query(ctx, token, graph.InboxQuery, nil)
				}
				mu.Lock()
				results = append(results, faultResult{start: start, took: time.Since(start), resp: r, err: err})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stallDone)
	<-probed
	final, finalTook, err := poolStats(c)
	if err != nil {
		t.Fatal(err)
	}
	probes = append(probes, probe{final, finalTook, nil})

	var fastest, slowest time.Duration
	for _, r := range results {
		if !faultRefusedWith(r.resp, graph.CodePoolTimeout) {
			t.Errorf("stalled request: %v %+v, want 503 with Retry-After and DB_POOL_TIMEOUT", r.err, r.resp)
			continue
		}
		if fastest == 0 || r.took < fastest {
			fastest = r.took
		}
		slowest = max(slowest, r.took)
	}
	// Not before the pool timeout; not so long after it that they must
	// have waited for something else.
	if fastest < timeout || slowest > timeout+5*time.Second {
		t.Errorf("refusals answered after %s to %s, want about the pool timeout %s", fastest, slowest, timeout)
	}
	tooks := make([]time.Duration, len(probes))
	for i, p := range probes {
		if p.err != nil {
			t.Fatalf("/health/db-pool: %v", p.err)
		}
		tooks[i] = p.took
	}
	slices.Sort(tooks)
	median, slowProbe := tooks[len(tooks)/2], tooks[len(tooks)-1]
	t.Logf("%d stalled requests refused after %s to %s; %d /health/db-pool probes, median %s, slowest %s; final %+v",
		len(results), fastest.Round(time.Millisecond), slowest.Round(time.Millisecond), len(probes),
		median.Round(time.Microsecond), slowProbe.Round(time.Microsecond), final)
	// Alone, every probe answers in under a millisecond. On a small machine
	// under -race the parallel tests' load delays some by tens, even
	// hundreds, of milliseconds; a probe that queued for a connection
	// would take the whole pool timeout. Hence the bounds: the median far
	// below the timeout, the slowest below it.
	if median > timeout/4 || slowProbe >= timeout {
		t.Errorf("/health/db-pool answered in %s (median) to %s while the pool was stalled, want under %s and never near the pool timeout", median, slowProbe, timeout/4)
	}
	if final.Status != dbpool.StatusExhausted || final.CheckedOut != stuck {
		t.Errorf("/health/db-pool after the refusals: status %q checked_out %d, want exhausted and %d", final.Status, final.CheckedOut, stuck)
	}
	if final.Timeouts != len(results) {
		t.Errorf("%d timeouts counted for %d refused operations, want one each", final.Timeouts, len(results))
	}

	// Let go: the stuck operations finish, new ones succeed at once.
	released := time.Now()
	unlock()
	for range stuck {
		if r := <-blocked; !r.ok() {
			t.Errorf("blocked markConversationRead after the lock went: %+v", r)
		}
	}
	for i := range clients {
		r, err := ledger.send(ctx, c, token, convs[1+i%3], fmt.Sprintf("after%d", i))
		if !r.ok() {
			t.Fatalf("write after the stall: %v %+v", err, r)
		}
	}
	t.Logf("recovered: blocked operations and %d writes done %s after the lock went", clients, time.Since(released).Round(time.Millisecond))
	a.waitReleased()
	faultCheckNothingLost(t, a.admin, ledger)
}

// faultUnreadQuery asks for little but makes the database count: with
// thousands of messages per conversation it runs for some milliseconds in
// Postgres and hardly any in Go, so that clients hang up mid-statement.
const faultUnreadQuery = `{ conversations(first: 20) { nodes { id unreadCount } } }`

// TestFaultClientsHangUp: 1,000 queries whose clients hang up after 0–20
// ms. Most are still waiting for a connection then; many of the ones
// holding one are in the middle of a statement. Every connection comes back,
// nothing keeps running on the server, and the pool opens hardly any
// connection beyond its size: a statement whose caller gave up is
// cancelled on the server, and its connection reused, not closed.
//
// (pgx keeps a connection whose statement it cancelled for 100 ms more,
// so that the cancel cannot hit the next statement on it: each hang-up
// mid-statement costs the pool that long, which bounds how many of the
// 1,000 get that far.)
//
// The pool has no overflow on purpose: QueuePool closes overflow
// connections when they are returned (by design), which would hide the
// count this test is about.
func TestFaultClientsHangUp(t *testing.T) {
	skipInShort(t, "1,000 requests hung up on")
	t.Parallel()
	const size, overflow = 8, 0
	a := newAPI(t, withoutAdmission, func(o *apiOptions) { o.pool.Size, o.pool.MaxOverflow, o.pool.Timeout = size, overflow, 10*time.Second })
	token, _ := a.seedInbox(20, 3000)
	c := a.loadClient(t, 0)
	ctx := context.Background()
	start := time.Now()
	if r, err := c.query(ctx, token, faultUnreadQuery, nil); !r.ok() {
		t.Fatalf("unread counts: %v %+v", err, r)
	}
	t.Logf("the query takes %s unloaded", time.Since(start).Round(time.Microsecond))

	const requests, workers = 1000, 32
	var next, hungUp, completed atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	start = time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= requests {
				rctx, hangUp := context.WithCancel(ctx)
				timer := time.AfterFunc(rand.N(20*time.Millisecond), hangUp)
				r, err := c.query(rctx, token, faultUnreadQuery, nil)
				timer.Stop()
				hangUp()
				switch {
				case errors.Is(err, context.Canceled):
					hungUp.Add(1)
				case r.ok():
					completed.Add(1)
				default:
					// A response the client did get must be a good one: a
					// cancel request hitting the next user of a connection
					// would show here.
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%v %+v", err, r))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	a.waitReleased()
	waitFor(t, 20*time.Second, "no statement left running on the server", func() bool {
		return a.count("SELECT count(*)::int FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'", a.appName) == 0
	})

	st := a.pool.Stats()
	held := st.AcquireCount - 1 // less the unloaded query
	t.Logf("%d requests in %s: %d hung up, %d completed; %d operations held a connection when their client left; opened %d connections (pool %d+%d), invalid %d",
		requests, wall.Round(time.Millisecond), hungUp.Load(), completed.Load(), held, st.Opened, size, overflow, st.Invalid)
	for i, b := range bad {
		if i == 5 {
			t.Errorf("... and %d more", len(bad)-i)
			break
		}
		t.Errorf("a client that stayed got: %s", b)
	}
	if hungUp.Load() < requests/4 || held < 10 {
		t.Errorf("%d of %d requests hung up on, %d while holding a connection: the test did not test much", hungUp.Load(), requests, held)
	}
	if limit := size + overflow + 2; st.Opened > limit {
		t.Errorf("opened %d connections for a pool of %d+%d (want at most %d): hang-ups close connections instead of cancelling statements", st.Opened, size, overflow, limit)
	}
	if r, err := c.query(ctx, token, faultUnreadQuery, nil); !r.ok() {
		t.Fatalf("query after the hang-ups: %v %+v", err, r)
	}
	if n := a.backends(); n > size+overflow {
		t.Errorf("%d backends, pool cap %d", n, size+overflow)
	}
}

// TestFaultConcurrentSends: one user posting several messages to one
// conversation at once (a double tap, two devices, a retry racing the
// original) gets every one stored and none refused.
func TestFaultConcurrentSends(t *testing.T) {
	skipInShort(t, "fault tests")
	t.Parallel()
	a := newAPI(t, withoutAdmission, func(o *apiOptions) { o.pool.Size, o.pool.MaxOverflow = 8, 0 })
	token, convs := a.seedInbox(1, 1)
	c := a.loadClient(t, 0)
	ledger := newFaultLedger()
	const senders, each = 8, 4
	var wg sync.WaitGroup
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				_, _ = ledger.send(context.Background(), c, token, convs[0], fmt.Sprintf("s%d-%d", i, j))
			}
		}()
	}
	wg.Wait()
	codes := map[string]int{}
	for _, outcome := range ledger.outcomes {
		codes[outcome]++
	}
	t.Logf("%d concurrent sends to one conversation: %v", senders*each, codes)
	if codes["ok"] != senders*each {
		t.Errorf("outcomes %v, want all %d ok", codes, senders*each)
	}
	a.waitReleased()
	faultCheckNothingLost(t, a.admin, ledger)
}
