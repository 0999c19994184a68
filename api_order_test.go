package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/chat"
	"chatql/dbpool"
)

// Bursts of messages into one conversation: subscribers that keep reading
// receive every message, in the order messages(...) lists them, and the
// delivery costs a few borrows per burst, not one per message.

const burstSenders, burstEach = 20, 20

// listMessages pages through conv's messages as messages(...) lists them
// and returns their ids oldest first.
func (r *testAPI) listMessages(token, conv string) []string {
	r.t.Helper()
	var ids []string
	var after any
	for {
		var data struct {
			Conversation struct {
				Messages struct {
					Nodes    []struct{ ID string }
					PageInfo pageInfoJSON
				}
			}
		}
		r.post(token, `query($c: ID!, $after: String) { conversation(id: $c) {
			messages(first: 100, after: $after) { nodes { id } pageInfo { hasNextPage endCursor } } } }`,
			map[string]any{"c": conv, "after": after}).into(r.t, &data)
		m := data.Conversation.Messages
		for _, n := range m.Nodes {
			ids = append(ids, n.ID)
		}
		if !m.PageInfo.HasNextPage {
			break
		}
		after = *m.PageInfo.EndCursor
	}
	slices.Reverse(ids)
	return ids
}

// checkReceived checks that each subscriber received the messages of conv
// after its first, in the order messages(...) lists them.
func (r *testAPI) checkReceived(token, conv string, got [][]string) {
	r.t.Helper()
	want := r.listMessages(token, conv)[1:]
	for i := range got {
		if !slices.Equal(got[i], want) {
			r.t.Errorf("subscriber %d received\n  %v\nmessages(...) lists\n  %v", i, got[i], want)
		}
	}
}

// receiveAll reads n messages of subscription "1" from every client in
// turn, so that none of them falls behind the others, and returns the ids
// each received.
func receiveAll(clients []*wsClient, n int) [][]string {
	got := make([][]string, len(clients))
	for range n {
		for i, c := range clients {
			got[i] = append(got[i], c.nextMessage("1").ID)
		}
	}
	return got
}

// burstSubscribers makes three users, a conversation of theirs, and a
// subscriber for each, who have all received a first message.
func burstSubscribers(t *testing.T, a *testAPI) (conv string, tokens []string, clients []*wsClient) {
	t.Helper()
	var members []string
	for _, name := range []string{"Ann", "Bob", "Cat"} {
		id, token := a.user(name)
		members, tokens = append(members, id), append(tokens, token)
	}
	conv = a.conversation("burst", members)
	for _, token := range tokens {
		c := connectWS(t, a.srv.URL, token)
		c.subscribeMessages("1", conv)
		clients = append(clients, c)
	}
	a.waitSubscribers(len(clients))
	first := a.sendMessage(tokens[0], conv, "first")
	for i, got := range receiveAll(clients, 1) {
		if got[0] != first {
			t.Fatalf("subscriber %d got %s, want %s", i, got[0], first)
		}
	}
	a.waitReleased()
	return conv, tokens, clients
}

// sendBurst starts senders sending each messages at once to conv through
// the API, as the bearers of tokens in turn. The returned function waits
// for them and fails the test if a send failed.
func (r *testAPI) sendBurst(conv string, tokens []string, senders, each int) (wait func()) {
	r.t.Helper()
	failed := make(chan string, senders*each)
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// Not r.post: it fails the test, which only the test's
				// goroutine may do.
				resp, err := r.client.query(context.Background(), tokens[s%len(tokens)], sendMessageMutation, map[string]any{"c": conv, "b": fmt.Sprintf("%d-%d", s, i)})
				switch {
				case err != nil:
					failed <- err.Error()
				case len(resp.Errors) > 0:
					failed <- string(resp.Raw)
				}
			}
		}()
	}
	r.t.Cleanup(wg.Wait) // before the server closes, should the test fail first
	return func() {
		r.t.Helper()
		wg.Wait()
		close(failed)
		for f := range failed {
			r.t.Fatalf("a send failed: %s", f)
		}
	}
}

// holdPool borrows every connection of the pool until release is called.
func holdPool(t *testing.T, p *dbpool.Pool) (release func()) {
	t.Helper()
	cfg := p.Config()
	n := cfg.MaxConnections() - cfg.Reserved
	held := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.WithConn(context.Background(), func(db dbpool.DB) error {
				if _, err := db.Exec(context.Background(), "SELECT 1"); err != nil { // borrows
					return err
				}
				<-held
				return nil
			})
		}()
	}
	waitFor(t, 10*time.Second, "every connection held", func() bool { return p.Stats().CheckedOut == n },
		func() string { return fmt.Sprintf("stats %+v", p.Stats()) })
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(held)
			wg.Wait()
		})
	}
	t.Cleanup(release)
	return release
}

// TestRealtimeBurstStalledPool: a burst of 20 senders × 20 messages is
// announced while every connection of the server's pool is taken, so that
// delivery must wait for the database: the subscribers, who keep reading,
// are not dropped although the burst is far beyond a subscriber's buffer,
// and once the pool is free they receive all of it in the order
// messages(...) lists it, for a borrow per chat.MaxPageSize messages.
func TestRealtimeBurstStalledPool(t *testing.T) {
	skipInShort(t, "a burst of 400 messages")
	t.Parallel()
	a := newRealtimeAPI(t)
	conv, tokens, clients := burstSubscribers(t, a)
	var senders []string
	if err := a.admin.QueryRow(context.Background(),
		"SELECT array_agg(user_id::text ORDER BY joined_at) FROM conversation_participants WHERE conversation_id = $1", conv).Scan(&senders); err != nil {
		t.Fatal(err)
	}

	release := holdPool(t, a.pool)
	held := time.Now()
	before := a.pool.Stats().AcquireCount
	announced := a.hub.Stats().Notifications
	// The senders write on connections of their own, as another replica's
	// would: the server's pool is left to the delivery.
	errs := make(chan error, burstSenders)
	for s := range burstSenders {
		go func() {
			errs <- func() error {
				conn, err := pgx.Connect(context.Background(), a.dbURL)
				if err != nil {
					return err
				}
				defer conn.Close(context.Background())
				for i := range burstEach {
					err := pgx.BeginFunc(context.Background(), conn, func(tx pgx.Tx) error {
						_, err := chat.SendMessage(context.Background(), dbpool.Conn(tx.Conn()), senders[s%len(senders)], conv, fmt.Sprintf("%d-%d", s, i))
						return err
					})
					if err != nil {
						return err
					}
				}
				return nil
			}()
		}()
	}
	for range burstSenders {
		if err := <-errs; err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	const burst = burstSenders * burstEach
	waitFor(t, 10*time.Second, "the burst announced", func() bool { return a.hub.Stats().Notifications >= announced+burst },
		func() string {
			return fmt.Sprintf("%d of %d messages announced", a.hub.Stats().Notifications-announced, burst)
		})
	if st := a.hub.Stats(); st.Dropped != 0 || st.Subscribers != len(clients) {
		t.Fatalf("while delivery waited for the pool: %d dropped, %d subscribers; want 0, %d", st.Dropped, st.Subscribers, len(clients))
	}
	release()
	t.Logf("the pool was held for %s", time.Since(held).Round(time.Millisecond))

	got := receiveAll(clients, burst)
	a.waitReleased()
	borrows := a.pool.Stats().AcquireCount - before
	if bound := (burst + chat.MaxPageSize - 1) / chat.MaxPageSize; borrows > bound {
		t.Errorf("delivering %d messages to %d subscribers took %d borrows, want at most %d", burst, len(clients), borrows, bound)
	}
	a.checkReceived(tokens[0], conv, got)
	t.Logf("%d messages delivered to each of %d subscribers (none dropped) with %d borrows", burst, len(clients), borrows)
}

// TestRealtimeBurstPromptSubscribers: the burst of the issue, 20 senders ×
// 20 messages through the API, whose sends compete with the delivery for
// the pool: every subscriber that keeps reading receives every message, in
// the order messages(...) lists them, and none is dropped.
func TestRealtimeBurstPromptSubscribers(t *testing.T) {
	skipInShort(t, "a burst of 400 messages")
	t.Parallel()
	a := newRealtimeAPI(t)
	conv, tokens, clients := burstSubscribers(t, a)
	before := a.pool.Stats().AcquireCount

	const burst = burstSenders * burstEach
	sent := a.sendBurst(conv, tokens, burstSenders, burstEach)
	got := receiveAll(clients, burst)
	sent()
	a.waitReleased()
	// Each send borrows once (TestRealtimeFanOutOneLoad); the rest is the
	// delivery's.
	borrows := a.pool.Stats().AcquireCount - before - burst
	a.checkReceived(tokens[0], conv, got)
	if st := a.hub.Stats(); st.Dropped != 0 {
		t.Errorf("%d subscribers dropped", st.Dropped)
	}
	t.Logf("%d messages delivered to each of %d subscribers (none dropped) with %d borrows", burst, len(clients), borrows)
}

// TestRealtimeReconnectMidBurst: the listener's backend is terminated in
// the middle of a burst; subscribers still receive every message once, in
// the order messages(...) lists them.
func TestRealtimeReconnectMidBurst(t *testing.T) {
	skipInShort(t, "a burst with a reconnect")
	t.Parallel()
	a := newRealtimeAPI(t)
	conv, tokens, clients := burstSubscribers(t, a)

	const senders, each = 5, 20
	sent := a.sendBurst(conv, tokens, senders, each)
	got := receiveAll(clients, 10)
	_, pid := a.hub.Connected()
	var ok bool
	if err := a.admin.QueryRow(context.Background(), "SELECT pg_terminate_backend($1)", int32(pid)).Scan(&ok); err != nil || !ok {
		t.Fatalf("terminate listener %d: %v %v", pid, ok, err)
	}
	for i, rest := range receiveAll(clients, senders*each-10) {
		got[i] = append(got[i], rest...)
	}
	sent()
	a.waitListening(pid)
	a.checkReceived(tokens[0], conv, got)
	for _, c := range clients {
		c.quiet(200 * time.Millisecond)
	}
}
