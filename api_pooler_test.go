package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/dbpool"
	"chatql/graph"
	"chatql/localpg/pgtest"
)

// The incident chatql was built for, replayed through a real PgBouncer: a
// session-mode pooler that refuses clients past a limit, the way Supabase's
// pooler answers "MaxClientsInSessionMode: max clients reached". Each test
// starts its own PgBouncer in front of the package's throwaway cluster and
// routes the API's pool through it; fixtures and checks use the direct URL.

// bouncerRefusals counts the clients PgBouncer turned away for
// max_client_conn, from its log: its own side of the story.
func bouncerRefusals(t *testing.T, b *pgtest.Bouncer) int {
	t.Helper()
	content, err := os.ReadFile(b.LogFile())
	if err != nil {
		t.Fatalf("read the pgbouncer log: %v", err)
	}
	// One WARNING line per refused client; the LOG line "closing because"
	// depends on log_disconnections.
	return strings.Count(string(content), "pooler error: no more connections allowed")
}

// errorLog is a slog handler that tallies the err attribute of every
// record, so that a test can tell what the server logged behind the
// generic INTERNAL its clients saw. Statement names are folded, so that
// one kind of error counts once.
type errorLog struct {
	mu   sync.Mutex
	errs map[string]int
}

var stmtcacheName = regexp.MustCompile(`stmtcache_[0-9a-f]+`)

func (h *errorLog) Enabled(context.Context, slog.Level) bool { return true }

func (h *errorLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			h.mu.Lock()
			if h.errs == nil {
				h.errs = map[string]int{}
			}
			h.errs[stmtcacheName.ReplaceAllString(a.Value.String(), "stmtcache_…")]++
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

func (h *errorLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *errorLog) WithGroup(string) slog.Handler      { return h }

// tally returns the errors logged, with their counts, most frequent first.
func (h *errorLog) tally() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	msgs := slices.Collect(maps.Keys(h.errs))
	slices.SortFunc(msgs, func(a, b string) int { return h.errs[b] - h.errs[a] })
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = fmt.Sprintf("%dx %s", h.errs[m], m)
	}
	return out
}

// loadResult is what a load phase saw.
type loadResult struct {
	requests     int
	ok           int            // 200 with no errors
	statuses     map[int]int    // HTTP status of every answered request
	codes        map[string]int // extensions.code of every error
	failures     []string       // the first few failed answers, for the log
	transport    int            // requests that got no answer (timeout, reset)
	missing503   int            // 503s without Retry-After
	errorsNot503 int            // answers with errors whose status was not 503
	maxLatency   time.Duration
	elapsed      time.Duration
}

// expectAllOK fails unless every request of the phase, of which there
// were some, succeeded.
func (r loadResult) expectAllOK(t *testing.T, phase string) {
	t.Helper()
	if r.ok != r.requests || r.requests == 0 {
		t.Errorf("%s: %d of %d requests failed; first failures:\n%s", phase, r.requests-r.ok, r.requests, strings.Join(r.failures, "\n"))
	}
}

// expectWithinBudget fails if the server saw more connections than budget,
// or the pools had more open; PgBouncer's refusals are reported.
func expectWithinBudget(t *testing.T, budget, maxServer, maxPool, refused int) {
	t.Helper()
	if maxServer > budget || maxPool > budget {
		t.Errorf("saw %d server and %d pool connections, the budget is %d", maxServer, maxPool, budget)
	}
	// A refusal here is not a connection over the budget: when an overflow
	// connection is closed and another opened at once, PgBouncer may count
	// the closing one for a moment and refuse the new one. dbpool tries
	// again within milliseconds (isClientCapRefusal), so the requests still
	// succeed, which the callers check; the refusals are only reported.
	if refused != 0 {
		t.Logf("PgBouncer refused %d connects (a close and an open crossing; retried)", refused)
	}
}

func (r loadResult) perSecond() float64 { return float64(r.requests) / r.elapsed.Seconds() }

func (r loadResult) String() string {
	return fmt.Sprintf("%d requests in %s (%.0f/s), %d ok, statuses %v, codes %v, %d unanswered, slowest %s",
		r.requests, r.elapsed.Round(time.Millisecond), r.perSecond(), r.ok, r.statuses, r.codes, r.transport, r.maxLatency.Round(time.Millisecond))
}

// runLoad has clients goroutines send body, one request after another,
// spread over servers and signed in round-robin as the bearers of tokens,
// until d has passed; each request may take at most reqTimeout. Requests in
// flight at the end are waited for.
func runLoad(t *testing.T, servers []*testAPI, tokens []string, body map[string]any, clients int, d, reqTimeout time.Duration) loadResult {
	conns := make([]gqlClient, len(servers))
	for i, s := range servers {
		conns[i] = s.loadClient(t, reqTimeout)
	}
	res := loadResult{statuses: map[int]int{}, codes: map[string]int{}}
	var mu sync.Mutex
	record := func(r *gqlResponse, err error, latency time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		res.requests++
		res.maxLatency = max(res.maxLatency, latency)
		var notJSON *notJSONError
		switch {
		case errors.As(err, &notJSON):
			res.statuses[notJSON.status]++
			res.codes["(body not JSON)"]++
			if len(res.failures) < 5 {
				res.failures = append(res.failures, err.Error())
			}
			return
		case err != nil:
			res.transport++
			if len(res.failures) < 5 {
				res.failures = append(res.failures, err.Error())
			}
			return
		}
		res.statuses[r.Status]++
		if r.Status == http.StatusServiceUnavailable && r.Header.Get("Retry-After") == "" {
			res.missing503++
		}
		for _, e := range r.Errors {
			res.codes[e.Extensions.Code]++
		}
		if len(r.Errors) > 0 && r.Status != http.StatusServiceUnavailable {
			res.errorsNot503++
		}
		if r.ok() && r.Data != nil {
			res.ok++
		} else if len(res.failures) < 5 {
			res.failures = append(res.failures, fmt.Sprintf("%d %s", r.Status, r.Raw))
		}
	}

	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for i := range clients {
		c := conns[i%len(conns)]
		token := tokens[i%len(tokens)]
		wg.Go(func() {
			for time.Now().Before(end) {
				sent := time.Now()
				r, err := c.do(context.Background(), bearer(token), body)
				record(r, err, time.Since(sent))
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// connSampler watches, while a load phase runs, the server connections of
// the test database (every client backend of it but the sampler's own,
// which is the only direct connection: the rest come through PgBouncer;
// autovacuum workers show in pg_stat_activity with the database's name too)
// and the open connections of the pools.
type connSampler struct {
	stop, done chan struct{}
	maxServer  int
	maxPool    int // the most connections all pools had open at one instant
	err        error
}

func sampleConnections(conn *pgx.Conn, pools ...*dbpool.Pool) *connSampler {
	s := &connSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		ticker := time.NewTicker(10 * time.Millisecond)
		defer ticker.Stop()
		for {
			var n int
			if err := conn.QueryRow(context.Background(),
				`SELECT count(*)::int FROM pg_stat_activity
				WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
				s.err = err
				return
			}
			s.maxServer = max(s.maxServer, n)
			total := 0
			for _, p := range pools {
				total += p.Stats().Total
			}
			s.maxPool = max(s.maxPool, total)
			select {
			case <-s.stop:
				return
			case <-ticker.C:
			}
		}
	}()
	return s
}

// finish stops the sampler and returns what it saw.
func (s *connSampler) finish(t *testing.T) (maxServer, maxPool int) {
	t.Helper()
	close(s.stop)
	<-s.done
	if s.err != nil {
		t.Fatalf("sample pg_stat_activity: %v", s.err)
	}
	return s.maxServer, s.maxPool
}

// TestPoolerSessionModeSupabaseBlock is the incident, beaten: behind a
// session-mode pooler that admits 5 clients, chatql with the Supabase block
// of .env.example (3 + 2; its timeout of 30 s raised to loadPoolTimeout)
// and its realtime listener on the same endpoint (so the pool lends at
// most 4) serves 256 concurrent inbox
// clients, signed in as 64 different users, for 10 s while websocket
// subscribers stay open, without one error, and never has more than 5
// connections through the pooler; the subscribers then still get a new
// message.
func TestPoolerSessionModeSupabaseBlock(t *testing.T) {
	skipInShort(t, "load through PgBouncer")
	t.Parallel()
	b := startPooler(t, "session", 5, 5)
	a := newAPI(t, withRealtime, withPatientAdmission, func(o *apiOptions) {
		o.pool.Size, o.pool.MaxOverflow, o.pool.Timeout = 3, 2, loadPoolTimeout
		o.pool.Reserved = 1 // what config sets without DATABASE_DIRECT_URL
		o.poolURL = throughBouncer(b)
	})
	a.waitListening(0)
	tokens, convs := a.seedCrowd(64, 64, 10)
	// conversation i's first member is user 4i mod 64.
	const subscribers = 8
	subs := make([]*wsClient, subscribers)
	for i := range subs {
		subs[i] = connectWS(t, a.srv.URL, tokens[(4*i)%len(tokens)])
		subs[i].subscribeMessages("1", convs[i])
	}
	a.waitSubscribers(subscribers)

	sampler := sampleConnections(a.admin, a.pool)
	res := runLoad(t, []*testAPI{a}, tokens, map[string]any{"query": graph.InboxQuery}, 256, 10*time.Second, loadPoolTimeout+time.Minute)
	maxServer, maxPool := sampler.finish(t)
	refused := bouncerRefusals(t, b)
	st := a.pool.Stats()
	t.Logf("session pooler, max_client_conn 5, chatql 3+2 with the listener, %d subscribers, 256 clients of 64 users for 10 s: %s", subscribers, res)
	t.Logf("at most %d server connections (listener included), %d pool connections; PgBouncer refused %d clients; pool %+v",
		maxServer, maxPool, refused, st)

	res.expectAllOK(t, "load")
	expectWithinBudget(t, 5, maxServer, maxPool+st.Listener, refused)
	if maxPool > 4 {
		t.Errorf("the pool opened %d connections beside the listener; the budget leaves it 4", maxPool)
	}
	if st.Listener != 1 || st.MaxConnections != 5 {
		t.Errorf("snapshot: listener %d, max_connections %d; want 1 and the budget, 5", st.Listener, st.MaxConnections)
	}
	// The listener stayed within the budget and kept working.
	for i, c := range subs {
		id := a.sendMessage(tokens[(4*i+1)%len(tokens)], convs[i], "after the load")
		if ev := c.nextMessage("1"); ev.ID != id {
			t.Errorf("subscriber %d got %+v, want message %s", i, ev, id)
		}
	}
	a.waitReleased()
}

// TestPoolerMisconfigurationFails is the incident itself: the original
// configuration (20 connections, no overflow) behind the same pooler gets
// clients refused. It proves the test above can fail, and that chatql
// reports the refusal as it should: 503 DB_UNAVAILABLE with Retry-After,
// promptly, never INTERNAL, never a hang.
func TestPoolerMisconfigurationFails(t *testing.T) {
	skipInShort(t, "load through PgBouncer")
	t.Parallel()
	b := startPooler(t, "session", 5, 5)
	// The incident as it was: no admission in front of the pool.
	a := newAPI(t, withoutAdmission, func(o *apiOptions) {
		o.pool.Size, o.pool.MaxOverflow, o.pool.Timeout = 20, 0, 30*time.Second
		o.poolURL = throughBouncer(b)
	})
	tokens, _ := a.seedCrowd(32, 32, 10)

	const bound = 15 * time.Second
	res := runLoad(t, []*testAPI{a}, tokens, map[string]any{"query": graph.InboxQuery}, 64, 4*time.Second, bound)
	refused := bouncerRefusals(t, b)
	t.Logf("session pooler, max_client_conn 5, chatql 20+0, 64 clients for 4 s: %s", res)
	t.Logf("PgBouncer refused %d clients; pool %+v", refused, a.pool.Stats())

	if res.ok == res.requests {
		t.Fatalf("no request failed: the misconfiguration went unpunished; first answers: %v", res.failures)
	}
	if refused == 0 {
		t.Error("PgBouncer's log shows no refused client")
	}
	if res.transport != 0 {
		t.Errorf("%d requests got no answer within %s: %v", res.transport, bound, res.failures)
	}
	for status := range res.statuses {
		if status != http.StatusOK && status != http.StatusServiceUnavailable {
			t.Errorf("HTTP %d seen (%v), want only 200 and 503", status, res.statuses)
		}
	}
	if res.errorsNot503 != 0 {
		t.Errorf("%d answers with errors were not 503", res.errorsNot503)
	}
	for code := range res.codes {
		if code != graph.CodeUnavailable {
			t.Errorf("error code %s seen (%v), want only DB_UNAVAILABLE", code, res.codes)
		}
	}
	if res.missing503 != 0 {
		t.Errorf("%d 503s without Retry-After", res.missing503)
	}
	if res.maxLatency > bound {
		t.Errorf("slowest request took %s", res.maxLatency)
	}
	a.waitReleased()
}

// TestPoolerTransactionMode: behind a transaction-mode pooler (Supabase's
// port 6543) chatql works with DB_QUERY_EXEC_MODE=exec, through every main
// flow and under concurrent load, and with simple_protocol under load; with
// the default cache_statement most operations fail, because its prepared
// statements meet server connections that do not have them (or already
// have them).
func TestPoolerTransactionMode(t *testing.T) {
	skipInShort(t, "load through PgBouncer")
	t.Parallel()
	// Fewer server connections than chatql has clients, so that the pooler
	// really hands each transaction whichever server connection is free.
	b := startPooler(t, "transaction", 50, 2)
	// One user's 32 clients: more transactions at once than the pool has
	// connections is the point, so admission stays out of the way.
	a := newAPI(t, withoutAdmission, func(o *apiOptions) {
		o.pool.Size, o.pool.MaxOverflow, o.pool.Timeout = 3, 2, loadPoolTimeout
		o.pool.QueryExecMode = pgx.QueryExecModeExec
		o.poolURL = throughBouncer(b)
	})

	// Sign up two people, sign one in again.
	type authPayload struct {
		Token string
		User  userJSON
	}
	signUpAs := func(name string) authPayload {
		var data struct{ SignUp authPayload }
		a.post("", signUp, map[string]any{"in": map[string]any{
			"email": strings.ToLower(name) + "@example.com", "password": "password-" + name, "displayName": name,
		}}).into(t, &data)
		if data.SignUp.Token == "" || data.SignUp.User.DisplayName != name {
			t.Fatalf("signUp %s: %+v", name, data.SignUp)
		}
		return data.SignUp
	}
	ann, bob := signUpAs("Ann"), signUpAs("Bob")
	var in struct{ SignIn authPayload }
	a.post("", signIn, map[string]any{"email": "ann@example.com", "password": "password-Ann"}).into(t, &in)
	if in.SignIn.User.ID != ann.User.ID {
		t.Fatalf("signIn as Ann gave user %s, want %s", in.SignIn.User.ID, ann.User.ID)
	}
	annToken := in.SignIn.Token

	// Ann starts a conversation with Bob; they exchange 25 messages.
	var created struct{ CreateConversation conversationJSON }
	a.post(annToken, createConversation, map[string]any{"in": map[string]any{
		"title": "through the pooler", "participantIds": []string{bob.User.ID},
	}}).into(t, &created)
	conv := created.CreateConversation
	if got := slices.Sorted(slices.Values(userIDs(conv.Participants))); !slices.Equal(got, slices.Sorted(slices.Values([]string{ann.User.ID, bob.User.ID}))) {
		t.Fatalf("participants %v", got)
	}
	var sent []string // message ids, oldest first
	bobUnread := 0    // sending marks the conversation read for the sender
	for i := range 25 {
		token, author := annToken, ann.User.ID
		if i%2 == 1 {
			token, author = bob.Token, bob.User.ID
			bobUnread = 0
		} else {
			bobUnread++
		}
		var data struct{ SendMessage messageJSON }
		a.post(token, sendMessage, map[string]any{"c": conv.ID, "b": fmt.Sprintf("message %d", i)}).into(t, &data)
		if data.SendMessage.Author.ID != author || data.SendMessage.Body != fmt.Sprintf("message %d", i) {
			t.Fatalf("sendMessage %d: %+v", i, data.SendMessage)
		}
		sent = append(sent, data.SendMessage.ID)
	}

	// Bob's inbox shows it with Ann's messages unread and the last one on top.
	var inbox struct {
		Conversations struct {
			Edges []struct{ Node conversationJSON }
		}
	}
	a.post(bob.Token, graph.InboxQuery, nil).into(t, &inbox)
	if len(inbox.Conversations.Edges) != 1 {
		t.Fatalf("Bob's inbox has %d conversations, want 1", len(inbox.Conversations.Edges))
	}
	node := inbox.Conversations.Edges[0].Node
	if node.ID != conv.ID || node.UnreadCount != bobUnread || node.LastMessage == nil || node.LastMessage.ID != sent[24] ||
		len(node.Participants) != 2 || len(node.Messages.Nodes) != 10 {
		t.Fatalf("Bob's inbox entry: %+v, want %d unread and message %s last", node, bobUnread, sent[24])
	}

	var read struct{ MarkConversationRead conversationJSON }
	a.post(bob.Token, markRead, map[string]any{"c": conv.ID}).into(t, &read)
	if read.MarkConversationRead.UnreadCount != 0 {
		t.Errorf("unread after markConversationRead: %d", read.MarkConversationRead.UnreadCount)
	}

	// Page through the messages, newest first, 10 at a time.
	var paged []string
	var after any
	for page := 1; ; page++ {
		var data messagePageJSON
		a.post(bob.Token, messagePage, map[string]any{"c": conv.ID, "after": after}).into(t, &data)
		m := data.Conversation.Messages
		for _, e := range m.Edges {
			paged = append(paged, e.Node.ID)
		}
		if !m.PageInfo.HasNextPage {
			break
		}
		if page == 5 || m.PageInfo.EndCursor == nil {
			t.Fatalf("page %d: %+v", page, m.PageInfo)
		}
		after = *m.PageInfo.EndCursor
	}
	newestFirst := slices.Clone(sent)
	slices.Reverse(newestFirst)
	if !slices.Equal(paged, newestFirst) {
		t.Errorf("paged messages %v, want %v", paged, newestFirst)
	}

	// Concurrent load: more chatql connections than server connections.
	res := runLoad(t, []*testAPI{a}, []string{bob.Token}, map[string]any{"query": graph.InboxQuery}, 32, 3*time.Second, loadPoolTimeout+time.Minute)
	t.Logf("transaction pooler (2 server connections), exec mode, 32 clients for 3 s: %s", res)
	res.expectAllOK(t, "exec mode")
	a.waitReleased()

	// simple_protocol, the other mode the README offers for transaction
	// poolers, on the same pooler and database.
	through := func(mode pgx.QueryExecMode) func(*apiOptions) {
		return func(o *apiOptions) {
			o.pool.Size, o.pool.MaxOverflow, o.pool.Timeout = 3, 2, loadPoolTimeout
			o.pool.QueryExecMode = mode
			o.poolURL = throughBouncer(b)
		}
	}
	simple := a.replica(t, withoutAdmission, through(pgx.QueryExecModeSimpleProtocol))
	res = runLoad(t, []*testAPI{simple}, []string{bob.Token}, map[string]any{"query": graph.InboxQuery}, 16, 2*time.Second, loadPoolTimeout+time.Minute)
	t.Logf("transaction pooler, simple_protocol mode, 16 clients for 2 s: %s", res)
	res.expectAllOK(t, "simple_protocol mode")
	simple.waitReleased()

	// The default mode, cache_statement, on the same pooler and database:
	// pgx prepares each statement under a name derived from its text
	// (stmtcache_<hash>) on the server connection the pooler lent for that
	// round trip, and runs it later on whichever one it lends next.
	logged := &errorLog{}
	cached := a.replica(t, withoutAdmission, through(pgx.QueryExecModeCacheStatement), func(o *apiOptions) { o.logger = slog.New(logged) })
	res = runLoad(t, []*testAPI{cached}, []string{bob.Token}, map[string]any{"query": graph.InboxQuery}, 16, 2*time.Second, 45*time.Second)
	errs := logged.tally()
	t.Logf("transaction pooler, default cache_statement mode, 16 clients for 2 s: %s", res)
	t.Logf("what the server logged:\n%s", strings.Join(errs, "\n"))
	if res.ok == res.requests {
		t.Errorf("cache_statement behind a transaction pooler had no errors: %s", res)
	}
	if !strings.Contains(strings.Join(errs, "\n"), `prepared statement "stmtcache_…"`) {
		t.Errorf("no prepared-statement error logged; logged: %v", errs)
	}
	cached.waitReleased()
}

// TestPoolerReplicasShareBudget: three replicas of chatql, each with 1 + 1
// connections, share a session-mode pooler that admits 6 clients: the
// sizing rule replicas × (size + overflow) ≤ limit holds, so 64 clients
// spread over them get no errors.
func TestPoolerReplicasShareBudget(t *testing.T) {
	skipInShort(t, "load through PgBouncer")
	t.Parallel()
	b := startPooler(t, "session", 6, 6)
	pooled := func(o *apiOptions) {
		o.pool.Size, o.pool.MaxOverflow, o.pool.Timeout = 1, 1, loadPoolTimeout
		o.poolURL = throughBouncer(b)
	}
	// Without admission: admission keeps most requests out of the pool's
	// queue, so an overflow connection is more often closed on return and
	// reopened; a pooler sized exactly at the budget can then refuse the
	// reopen while it has not yet seen the close (README, Poolers).
	a := newAPI(t, pooled, withoutAdmission)
	tokens, _ := a.seedCrowd(32, 32, 10)
	replicas := []*testAPI{a, a.replica(t, pooled, withoutAdmission), a.replica(t, pooled, withoutAdmission)}

	sampler := sampleConnections(a.admin, replicas[0].pool, replicas[1].pool, replicas[2].pool)
	res := runLoad(t, replicas, tokens, map[string]any{"query": graph.InboxQuery}, 64, 5*time.Second, loadPoolTimeout+time.Minute)
	maxServer, maxPool := sampler.finish(t)
	refused := bouncerRefusals(t, b)
	t.Logf("session pooler, max_client_conn 6, 3 replicas of 1+1, 64 clients for 5 s: %s", res)
	t.Logf("at most %d server connections, %d pool connections over the replicas; PgBouncer refused %d clients", maxServer, maxPool, refused)
	for i, r := range replicas {
		t.Logf("replica %d: %+v", i+1, r.pool.Stats())
	}

	res.expectAllOK(t, "load")
	expectWithinBudget(t, 6, maxServer, maxPool, refused)
	for _, r := range replicas {
		r.waitReleased()
	}
}
