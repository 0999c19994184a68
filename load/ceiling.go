package load

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"chatql/chat"
	"chatql/dbpool"
)

// CeilingRun issues the Inbox query's statements straight over a pool of
// the same size as the server's: the same SQL, the same connections, no
// GraphQL and no HTTP. Its throughput is the most any server issuing those
// statements over those connections could reach.
type CeilingRun struct {
	Pool        *dbpool.Pool
	Clients     []Client
	Concurrency int
	Duration    time.Duration
	// Conversations and Messages are the Inbox query's page sizes.
	Conversations, Messages int
	Sample                  func(ctx context.Context) (int, error)
}

// Run executes the load and returns what it measured.
func (c CeilingRun) Run(ctx context.Context) (Result, error) {
	return closedLoop(ctx, ModeCeiling, c.Clients, c.Concurrency, c.Duration, c.Sample, c.inbox)
}

// closedLoop has concurrency clients, each signed in as its own viewer,
// call inbox back to back until d has passed, and returns the latencies
// and errors they saw, with the most backends sample saw meanwhile.
func closedLoop(ctx context.Context, mode string, clients []Client, concurrency int, d time.Duration,
	sample func(ctx context.Context) (int, error), inbox func(ctx context.Context, viewer string) error) (Result, error) {
	if len(clients) < concurrency {
		return Result{}, fmt.Errorf("%d clients for concurrency %d", len(clients), concurrency)
	}
	res := Result{Mode: mode, Concurrency: concurrency, Errors: map[string]int{}}
	var mu sync.Mutex
	stop := startSampler(ctx, sample, &res.MaxBackends)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			viewer := clients[i].UserID
			var lat []time.Duration
			errs := map[string]int{}
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				if err := inbox(ctx, viewer); err != nil {
					errs[err.Error()]++
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			res.Latencies = append(res.Latencies, lat...)
			for k, v := range errs {
				res.Errors[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	stop()
	slices.Sort(res.Latencies)
	return res, ctx.Err()
}

// inbox runs, on one scope, the statements the server runs for the Inbox
// query, in the same order: the viewer check, the page of conversations,
// with its unread counts, the participants, the pages of messages (the
// last message is the first of its page).
func (c CeilingRun) inbox(ctx context.Context, viewer string) error {
	s := c.Pool.Scope()
	defer s.Release()
	if _, err := chat.UsersByID(ctx, s, []string{viewer}); err != nil {
		return err
	}
	page, err := chat.InboxWithUnread(ctx, s, viewer, c.Conversations, "")
	if err != nil {
		return err
	}
	ids := make([]string, len(page.Conversations))
	keys := make([]chat.PageKey, len(page.Conversations))
	for i, conv := range page.Conversations {
		ids[i] = conv.ID
		keys[i] = chat.PageKey{ConversationID: conv.ID, First: c.Messages}
	}
	if _, err := chat.ParticipantsByConversation(ctx, s, viewer, ids); err != nil {
		return err
	}
	_, err = chat.MessagePages(ctx, s, viewer, keys)
	return err
}
