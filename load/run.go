package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/dbpool"
)

// Modes of a Result.
const (
	ModeChatQL  = "chatql"
	ModeCeiling = "ceiling"
	// ModeRaw is the raw ceiling (RawCeilingRun), ModeHTTP the HTTP one
	// (HTTPCeilingHandler driven like chatql).
	ModeRaw  = "raw"
	ModeHTTP = "http"
	// ModeNoAdmission is chatql with admission off (ADMISSION_PER_USER=0),
	// the baseline of the fairness figures.
	ModeNoAdmission = "adm-off"
	// ModePostGraphile is PostGraphile 4 on the same data (make
	// bench-peers).
	ModePostGraphile = "graphile"
)

// Client is one simulated user: a token and a conversation to write to.
type Client struct {
	Token          string
	UserID         string
	ConversationID string
}

// Clients returns n clients, each a different seeded user that takes part
// in at least one conversation, the heavy user first. tokenFor mints the
// user's access token.
func Clients(ctx context.Context, conn *pgx.Conn, n int, tokenFor func(userID string) (string, error)) ([]Client, error) {
	return ClientsWithInbox(ctx, conn, n, 1, tokenFor)
}

// ClientsWithInbox is Clients among the users in at least
// minConversations conversations (FullInbox: a full Inbox page each).
func ClientsWithInbox(ctx context.Context, conn *pgx.Conn, n, minConversations int, tokenFor func(userID string) (string, error)) ([]Client, error) {
	rows, err := conn.Query(ctx, `
		SELECT u.id::text, min(p.conversation_id::text)
		FROM users u JOIN conversation_participants p ON p.user_id = u.id
		GROUP BY u.id, u.email HAVING count(*) >= $2 ORDER BY u.email LIMIT $1`, n, minConversations)
	if err != nil {
		return nil, fmt.Errorf("pick users: %w", err)
	}
	clients, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Client, error) {
		var c Client
		err := row.Scan(&c.UserID, &c.ConversationID)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("pick users: %w", err)
	}
	if len(clients) < n {
		return nil, fmt.Errorf("only %d users with %d conversations or more, need %d: seed first (--seed)", len(clients), minConversations, n)
	}
	for i := range clients {
		if clients[i].Token, err = tokenFor(clients[i].UserID); err != nil {
			return nil, err
		}
	}
	return clients, nil
}

// HTTPRun drives a chatql server: Concurrency clients each send Query (or,
// with probability WriteRatio, a sendMessage) back to back for Duration.
type HTTPRun struct {
	// Mode names the results: ModeChatQL unless set (ModeHTTP,
	// ModeNoAdmission).
	Mode        string
	BaseURL     string
	Clients     []Client
	Concurrency int
	Duration    time.Duration
	WriteRatio  float64
	Query       string
	// Path is the GraphQL endpoint's path (default /query).
	Path string
	// Variables, when set, gives each client's variables for Query.
	Variables func(Client) map[string]any
	// Sample, when set, is polled every 50 ms for the measured
	// application's server connections.
	Sample func(ctx context.Context) (int, error)
}

const sendMessage = `mutation Send($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) { id } }`

// Run executes the load and returns what it measured.
func (h HTTPRun) Run(ctx context.Context) (Result, error) {
	if len(h.Clients) < h.Concurrency {
		return Result{}, fmt.Errorf("%d clients for concurrency %d", len(h.Clients), h.Concurrency)
	}
	transport := &http.Transport{MaxIdleConns: h.Concurrency, MaxIdleConnsPerHost: h.Concurrency, IdleConnTimeout: time.Minute}
	defer transport.CloseIdleConnections()
	httpClient := &http.Client{Transport: transport, Timeout: 2 * time.Minute}

	mode := h.Mode
	if mode == "" {
		mode = ModeChatQL
	}
	res := Result{Mode: mode, Concurrency: h.Concurrency, Errors: map[string]int{}}
	res.PoolBefore, _ = poolSnapshot(ctx, httpClient, h.BaseURL)
	path := h.Path
	if path == "" {
		path = "/query"
	}

	var mu sync.Mutex
	record := func(lat []time.Duration, errs map[string]int) {
		mu.Lock()
		defer mu.Unlock()
		res.Latencies = append(res.Latencies, lat...)
		for k, v := range errs {
			res.Errors[k] += v
		}
	}
	stopSampling := startSampler(ctx, h.Sample, &res.MaxBackends)
	start := time.Now()
	deadline := start.Add(h.Duration)
	var wg sync.WaitGroup
	var seq atomic.Int64
	for i := range h.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := h.Clients[i]
			request := map[string]any{"query": h.Query}
			if h.Variables != nil {
				request["variables"] = h.Variables(c)
			}
			inbox, _ := json.Marshal(request)
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			var lat []time.Duration
			errs := map[string]int{}
			for time.Now().Before(deadline) && ctx.Err() == nil {
				body := inbox
				if h.WriteRatio > 0 && rng.Float64() < h.WriteRatio {
					body, _ = json.Marshal(map[string]any{"query": sendMessage, "variables": map[string]any{
						"c": c.ConversationID, "b": fmt.Sprintf("load message %d", seq.Add(1)),
					}})
				}
				t0 := time.Now()
				kind := post(ctx, httpClient, h.BaseURL+path, c.Token, body)
				lat = append(lat, time.Since(t0))
				if kind != "" {
					errs[kind]++
				}
			}
			record(lat, errs)
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	stopSampling()
	slices.Sort(res.Latencies)
	res.PoolAfter, _ = poolSnapshot(ctx, httpClient, h.BaseURL)
	return res, ctx.Err()
}

// post sends one GraphQL request and returns "" or the kind of failure.
// The response is only decoded when it carries errors: decoding 60 KB of
// inbox on every request would load the machine being measured.
func post(ctx context.Context, c *http.Client, url, token string, body []byte) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "request: " + err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return "transport error"
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return "transport error"
	}
	if resp.StatusCode == http.StatusOK && !bytes.Contains(raw, []byte(`"errors"`)) {
		return ""
	}
	var r struct {
		Errors []struct {
			Extensions struct{ Code string } `json:"extensions"`
		} `json:"errors"`
	}
	code := "no code"
	if json.Unmarshal(raw, &r) == nil && len(r.Errors) > 0 {
		code = r.Errors[0].Extensions.Code
	}
	return fmt.Sprintf("HTTP %d %s", resp.StatusCode, code)
}

// poolSnapshot reads the server's /health/db-pool.
func poolSnapshot(ctx context.Context, c *http.Client, baseURL string) (*dbpool.Stats, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/health/db-pool", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var s dbpool.Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, err
	}
	return &s, nil
}

// startSampler polls sample every 50 ms into max until stopped. Stopping
// does not cancel a sample in flight: pgx closes a connection whose query
// is cancelled, and the next run samples over the same one.
func startSampler(ctx context.Context, sample func(context.Context) (int, error), max *int) (stop func()) {
	if sample == nil {
		return func() {}
	}
	stopping, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if n, err := sample(ctx); err == nil && n > *max {
				*max = n
			}
			select {
			case <-ctx.Done():
				return
			case <-stopping:
				return
			case <-tick.C:
			}
		}
	}()
	return func() { close(stopping); <-done }
}

// BackendSampler counts the server connections whose application_name is
// one of apps, over a connection of its own.
func BackendSampler(conn *pgx.Conn, apps ...string) func(context.Context) (int, error) {
	return func(ctx context.Context) (int, error) {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*)::int FROM pg_stat_activity WHERE application_name = ANY($1)", apps).Scan(&n)
		return n, err
	}
}
