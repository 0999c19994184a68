package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/jackc/pgx/v5"

	"chatql/auth"
	"chatql/load"
	"chatql/localpg/pgtest"
	"chatql/web"
)

// These tests run the built server as its own process: its memory and
// goroutines are then its own, and a signal shuts it down for real.

// budgetSubscribers is the issue's figure: one process, one listening
// connection, thousands of subscribers.
const budgetSubscribers = 2000

// startRealtimeProcess seeds a new database with ds, starts chatql on it
// and returns the process, the database URL, its application name and
// clients (seeded users with a token and a conversation).
func startRealtimeProcess(t *testing.T, ds load.DataSet, clients int, env ...string) (*process, string, string, []load.Client) {
	t.Helper()
	dbURL := pgtest.NewDatabase(t)
	cs := seedClients(t, dbURL, ds, clients)
	p, app := startChatql(t, dbURL, env...)
	return p, dbURL, app, cs
}

// seedClients seeds dbURL with ds and returns n clients.
func seedClients(t *testing.T, dbURL string, ds load.DataSet, n int) []load.Client {
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
	tokens, err := auth.NewTokens([]byte(testSecret), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := load.Clients(ctx, conn, n, func(id string) (string, error) {
		tok, _, err := tokens.Issue(id)
		return tok, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// startChatql runs the built server on dbURL with the Supabase block;
// env is added (a DATABASE_URL there wins). It returns the process and its
// application name.
func startChatql(t *testing.T, dbURL string, env ...string) (*process, string) {
	t.Helper()
	app := fmt.Sprintf("chatql-rt-%d", time.Now().UnixNano())
	env = append([]string{
		"DATABASE_URL=" + dbURL,
		"DB_APPLICATION_NAME=" + app,
		"JWT_SECRET=" + testSecret,
		"DB_POOL_SIZE=3", "DB_MAX_OVERFLOW=2",
		"LOG_LEVEL=warn",
	}, env...)
	return startProcess(t, buildBinary(t), t.TempDir(), env...), app
}

// TestRealtimeBudget: 2,000 websocket subscribers on one process with the
// Supabase block (3 + 2). No connection is checked out while they wait,
// the process never has more than size + overflow + 1 (the listener)
// backends, every subscriber gets its conversation's message within 1 s,
// and the server's goroutines come back to their baseline once they hang
// up. Not parallel: delivery latency is measured, so it runs alone.
func TestRealtimeBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 websockets: not in -short")
	}
	ds := load.DataSet{Users: 400, Conversations: 200, Messages: 400, HeavyUserConversations: 10, Seed: 2}
	p, dbURL, app, clients := startRealtimeProcess(t, ds, 300)
	ctx := context.Background()
	sampleConn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer sampleConn.Close(ctx)

	r, err := load.SubscribeRun{
		BaseURL:     "http://" + p.addr,
		Clients:     clients,
		Subscribers: budgetSubscribers,
		Sample:      load.BackendSampler(sampleConn, app, app+"-listener"),
	}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var report bytes.Buffer
	load.PrintSubscribe(&report, r)
	t.Logf("\n%s", report.String())

	if len(r.Errors) > 0 || r.Missing > 0 || r.Unexpected > 0 {
		t.Errorf("errors %v, missing %d, unexpected %d", r.Errors, r.Missing, r.Unexpected)
	}
	if len(r.Latencies) != budgetSubscribers {
		t.Errorf("%d deliveries, want %d", len(r.Latencies), budgetSubscribers)
	} else if slowest := r.Latencies[len(r.Latencies)-1]; slowest > time.Second {
		t.Errorf("slowest delivery %s, want within 1 s", slowest)
	}
	if r.CheckedOutIdle != 0 || r.CheckedOutAfter != 0 {
		t.Errorf("checked out with subscribers waiting: %d, after the deliveries: %d; want 0", r.CheckedOutIdle, r.CheckedOutAfter)
	}
	if r.MaxBackends > 3+2+1 {
		t.Errorf("%d backends, want at most 6 (3 + 2 + the listener)", r.MaxBackends)
	}
	if r.GoroutinesAfter > r.GoroutinesBefore {
		t.Errorf("server goroutines %d after every socket closed, %d before", r.GoroutinesAfter, r.GoroutinesBefore)
	}
	if r.GoroutinesOpen < budgetSubscribers {
		t.Errorf("%d server goroutines with %d sockets open: the figures are not the server's", r.GoroutinesOpen, budgetSubscribers)
	}
}

// TestRealtimeShutdownGoingAway: SIGTERM closes a subscriber's socket with
// 1001 (going away), so that the client reconnects, completes SSE
// subscriptions, and the process exits cleanly and promptly.
func TestRealtimeShutdownGoingAway(t *testing.T) {
	t.Parallel()
	ds := load.DataSet{Users: 10, Conversations: 5, Messages: 10, Seed: 3}
	p, _, _, clients := startRealtimeProcess(t, ds, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	protocols := []string{"graphql-transport-ws", "graphql-ws"}
	ended := make(chan error, len(protocols))
	for _, proto := range protocols {
		conn, _, err := websocket.Dial(ctx, "ws://"+p.addr+"/query", &websocket.DialOptions{Subprotocols: []string{proto}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseNow()
		init, _ := json.Marshal(map[string]string{"authorization": "Bearer " + clients[0].Token})
		if err := wsjson.Write(ctx, conn, map[string]any{"type": "connection_init", "payload": json.RawMessage(init)}); err != nil {
			t.Fatal(err)
		}
		start := "subscribe"
		if proto == "graphql-ws" {
			start = "start"
		}
		payload, _ := json.Marshal(map[string]any{"query": messageAddedSubscription, "variables": map[string]any{"c": clients[0].ConversationID}})
		if err := wsjson.Write(ctx, conn, map[string]any{"id": "1", "type": start, "payload": json.RawMessage(payload)}); err != nil {
			t.Fatal(err)
		}
		go func() {
			// Acks and keep-alives until the server closes the socket.
			for {
				var m map[string]any
				if err := wsjson.Read(ctx, conn, &m); err != nil {
					ended <- fmt.Errorf("%s: %w", proto, err)
					return
				}
			}
		}()
	}
	// And two SSE streams: messageAdded, and poolStatus (which the hub
	// stopping would not end).
	completed := make(chan error, 2)
	for _, q := range []string{messageAddedSubscription, `subscription { poolStatus(intervalMs: 100) { status } }`} {
		body, _ := json.Marshal(map[string]any{"query": q, "variables": map[string]any{"c": clients[0].ConversationID}})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.addr+"/query", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Authorization", "Bearer "+clients[0].Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		go func() {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if sc.Text() == "event: complete" {
					completed <- nil
					return
				}
			}
			completed <- fmt.Errorf("SSE stream ended without completing: %v", sc.Err())
		}()
	}
	waitMetric(t, "http://"+p.addr, "chatql_realtime_subscribers", 3)
	waitMetric(t, "http://"+p.addr, "chatql_sse_streams_open", 2)
	began := time.Now()
	p.stop(t, syscall.SIGTERM)
	for range protocols {
		err := <-ended
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != web.CloseGoingAway || ce.Reason != "server shutting down" {
			t.Errorf("socket ended with %v, want close %d", err, web.CloseGoingAway)
		}
	}
	for range 2 {
		if err := <-completed; err != nil {
			t.Error(err)
		}
	}
	if d := time.Since(began); d > 4*time.Second {
		t.Errorf("shutdown took %s: the close handshake was not answered promptly?", d)
	}
}

// waitMetric polls the server's /metrics until name (unlabelled) is want.
func waitMetric(t *testing.T, base, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := scrapeMetric(base, name)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (%v), want %v", name, got, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func scrapeMetric(base, name string) (float64, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return 0, err
	}
	for _, line := range bytes.Split(buf.Bytes(), []byte("\n")) {
		var v float64
		if n, _ := fmt.Sscanf(string(line), name+" %g", &v); n == 1 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("%s not in /metrics", name)
}

// TestRealtimeBehindTransactionPooler: with DATABASE_URL on a
// transaction-mode pooler (where LISTEN cannot work: the session it would
// listen on is handed to other clients after each transaction),
// DATABASE_DIRECT_URL takes the listener past it, and subscribers get
// their messages.
func TestRealtimeBehindTransactionPooler(t *testing.T) {
	t.Parallel()
	b := startPooler(t, "transaction", 50, 2)
	direct := pgtest.NewDatabase(t)
	ds := load.DataSet{Users: 20, Conversations: 10, Messages: 20, Seed: 4}
	clients := seedClients(t, direct, ds, 10)
	p, _ := startChatql(t, direct,
		"DATABASE_URL="+throughBouncer(b)(direct), "DB_QUERY_EXEC_MODE=exec", "DATABASE_DIRECT_URL="+direct)

	ctx := context.Background()
	r, err := load.SubscribeRun{BaseURL: "http://" + p.addr, Clients: clients, Subscribers: 20}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Errors) > 0 || r.Missing > 0 || r.Unexpected > 0 || len(r.Latencies) != 20 {
		var report bytes.Buffer
		load.PrintSubscribe(&report, r)
		t.Fatalf("through the pooler:\n%s%v", report.String(), r.Errors)
	}

	// The control: without DATABASE_DIRECT_URL the listener's LISTEN goes
	// through the pooler too, and its notifications go nowhere.
	p.stop(t, syscall.SIGTERM)
	p, _ = startChatql(t, direct, "DATABASE_URL="+throughBouncer(b)(direct), "DB_QUERY_EXEC_MODE=exec", "DB_MIGRATE=false")
	r, err = load.SubscribeRun{BaseURL: "http://" + p.addr, Clients: clients, Subscribers: 5, Wait: 2 * time.Second}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Latencies) != 0 {
		t.Fatalf("%d of 5 subscribers got their message with LISTEN through a transaction pooler: the test proves nothing", len(r.Latencies))
	}
}

// TestRealtimeTwoProcesses: two chatql processes on one database, each with
// its own pool and listener; a message sent through A reaches a subscriber
// of B, in order, with nothing but Postgres between them.
func TestRealtimeTwoProcesses(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	clients := seedClients(t, dbURL, load.DataSet{Users: 10, Conversations: 5, Messages: 10, Seed: 5}, 2)
	a, _ := startChatql(t, dbURL)
	b, _ := startChatql(t, dbURL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Subscribe on B.
	conn, _, err := websocket.Dial(ctx, "ws://"+b.addr+"/query", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	init, _ := json.Marshal(map[string]string{"Authorization": "Bearer " + clients[0].Token})
	sub, _ := json.Marshal(map[string]any{"query": messageAddedSubscription, "variables": map[string]any{"c": clients[0].ConversationID}})
	for _, m := range []map[string]any{
		{"type": "connection_init", "payload": json.RawMessage(init)},
		{"id": "1", "type": "subscribe", "payload": json.RawMessage(sub)},
	} {
		if err := wsjson.Write(ctx, conn, m); err != nil {
			t.Fatal(err)
		}
	}
	waitMetric(t, "http://"+b.addr, "chatql_realtime_subscribers", 1)

	// Send through A.
	var want []string
	for i := range 3 {
		body, _ := json.Marshal(map[string]any{"query": sendMessageMutation, "variables": map[string]any{"c": clients[0].ConversationID, "b": fmt.Sprintf("via A %d", i)}})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+a.addr+"/query", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+clients[0].Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Data struct{ SendMessage struct{ ID string } }
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil || out.Data.SendMessage.ID == "" {
			t.Fatalf("send through A: %v %+v", err, out)
		}
		want = append(want, out.Data.SendMessage.ID)
	}
	for i := 0; i < len(want); {
		var m wsMessage
		if err := wsjson.Read(ctx, conn, &m); err != nil {
			t.Fatalf("subscriber on B: %v", err)
		}
		switch m.Type {
		case "connection_ack", "ping", "pong":
			continue
		case "next":
			var ev struct {
				Data struct{ MessageAdded addedEvent }
			}
			if err := json.Unmarshal(m.Payload, &ev); err != nil || ev.Data.MessageAdded.ID != want[i] {
				t.Fatalf("event %d on B: %s, want %s", i, m.Payload, want[i])
			}
			i++
		default:
			t.Fatalf("subscriber on B got %s %s", m.Type, m.Payload)
		}
	}
}
