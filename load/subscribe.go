package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sync/errgroup"
)

// SubscribeRun measures realtime delivery: it holds Subscribers websockets
// open on a chatql server (graphql-transport-ws), subscriber i signed in as
// Clients[i % len(Clients)] and subscribed to messageAdded of that client's
// conversation; then it sends one message to every such conversation and
// measures, per subscriber, the time from sending to receiving it.
//
// A subscription refused by admission (OVERLOADED or RATE_LIMITED, as a
// burst of 2,000 starts can be) is sent again after the retryAfter it was
// given, as a client app would, at most maxResubscribes times.
type SubscribeRun struct {
	BaseURL     string
	Clients     []Client
	Subscribers int
	// Senders is how many messages are sent at once (default 8).
	Senders int
	// Wait is how long a subscriber waits for its message (default 10 s).
	Wait time.Duration
	// MetricsToken is the server's METRICS_TOKEN, if it has one.
	MetricsToken string
	// Sample, when set, is polled every 50 ms for the measured process's
	// server connections.
	Sample func(ctx context.Context) (int, error)
}

// SubscribeResult is what a SubscribeRun measured.
type SubscribeResult struct {
	Subscribers int
	// Connect is the time to open every socket and have every
	// subscription registered on the server.
	Connect time.Duration
	// Messages is how many were sent (one per subscribed conversation).
	Messages int
	// Latencies holds, for each subscriber that received its message,
	// the time from the start of its sendMessage to its arrival; sorted.
	Latencies []time.Duration
	// Missing counts subscribers that did not get their message in Wait;
	// Unexpected counts events a subscriber should not have had (another
	// conversation's, a second copy, an error).
	Missing, Unexpected int
	// Errors counts failed connects, subscribes and sends by kind.
	Errors      map[string]int
	MaxBackends int
	// CheckedOutIdle is the pool's checked_out with every subscription
	// open and no message in flight; CheckedOutAfter the same after all
	// deliveries.
	CheckedOutIdle, CheckedOutAfter int
	// The server process, from its /metrics: before connecting, with
	// every subscription open, and after every socket closed (goroutines
	// are waited for, up to 10 s, to come back to the first figure).
	RSSBefore, RSSSubscribed                          float64
	HeapSubscribed                                    float64
	GoroutinesBefore, GoroutinesOpen, GoroutinesAfter int
	// SubscribersBefore is the server's subscriber count before the run.
	SubscribersBefore int
	// Resubscribed counts subscriptions sent again after a refusal.
	Resubscribed int64
}

// Percentile returns the delivery latency below which a fraction p fell.
func (r SubscribeResult) Percentile(p float64) time.Duration {
	return Result{Latencies: r.Latencies}.Percentile(p)
}

// PrintSubscribe writes r as a short report.
func PrintSubscribe(w io.Writer, r SubscribeResult) {
	mb := func(b float64) string { return fmt.Sprintf("%.0f MB", b/(1<<20)) }
	fmt.Fprintf(w, "subscribers %d (connected in %s)  messages %d  delivered %d  missing %d  unexpected %d\n",
		r.Subscribers, r.Connect.Round(time.Millisecond), r.Messages, len(r.Latencies), r.Missing, r.Unexpected)
	if n := len(r.Latencies); n > 0 {
		fmt.Fprintf(w, "delivery latency  p50 %s ms  p99 %s ms  max %s ms\n",
			ms(r.Percentile(0.5)), ms(r.Percentile(0.99)), ms(r.Latencies[n-1]))
	}
	fmt.Fprintf(w, "server  RSS %s before, %s with every subscription open (Go heap %s)  goroutines %d -> %d -> %d\n",
		mb(r.RSSBefore), mb(r.RSSSubscribed), mb(r.HeapSubscribed), r.GoroutinesBefore, r.GoroutinesOpen, r.GoroutinesAfter)
	fmt.Fprintf(w, "pool checked_out %d idle, %d after  max backends %d (pool and listener)\n",
		r.CheckedOutIdle, r.CheckedOutAfter, r.MaxBackends)
	if r.Resubscribed > 0 {
		fmt.Fprintf(w, "resubscribed after a refusal (OVERLOADED, RATE_LIMITED) %d times\n", r.Resubscribed)
	}
	for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
		fmt.Fprintf(w, "errors  %s: %d\n", k, r.Errors[k])
	}
}

const messageAdded = `subscription Added($c: ID!) { messageAdded(conversationId: $c) { id body conversation { id } } }`

// maxResubscribes bounds how often one subscriber resubscribes after a
// refusal.
const maxResubscribes = 5

// subscriber is one open socket and what it received.
type subscriber struct {
	conv      string
	conn      *websocket.Conn
	got       chan arrival // its reader's events
	subscribe wsMessage
	// resubscribed counts, for the whole run, subscriptions sent again
	// after a refusal; retries this subscriber's.
	resubscribed *atomic.Int64
	retries      int
	retryAfter   time.Duration // set between a refusal and its complete
}

type arrival struct {
	conv string
	at   time.Time
	err  string // set for anything but a messageAdded event
}

type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// Run executes the measurement. Every socket is closed when it returns.
func (s SubscribeRun) Run(ctx context.Context) (SubscribeResult, error) {
	if len(s.Clients) == 0 || s.Subscribers <= 0 {
		return SubscribeResult{}, errors.New("load: no clients or no subscribers")
	}
	if s.Senders <= 0 {
		s.Senders = 8
	}
	if s.Wait <= 0 {
		s.Wait = 10 * time.Second
	}
	res := SubscribeResult{Subscribers: s.Subscribers, Errors: map[string]int{}}
	var errMu sync.Mutex
	fail := func(kind string) {
		errMu.Lock()
		res.Errors[kind]++
		errMu.Unlock()
	}
	// No keep-alive for the probes: an idle connection is a goroutine on
	// the server, which would blur the goroutine figures.
	probe := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	before, err := s.scrape(ctx, probe)
	if err != nil {
		return res, err
	}
	res.RSSBefore = before["process_resident_memory_bytes"]
	res.GoroutinesBefore = int(before["go_goroutines"])
	res.SubscribersBefore = int(before["chatql_realtime_subscribers"])
	stopSampling := startSampler(ctx, s.Sample, &res.MaxBackends)
	defer stopSampling()

	// Open and subscribe, 64 at a time.
	start := time.Now()
	subs := make([]*subscriber, s.Subscribers)
	defer func() {
		for _, sub := range subs {
			if sub != nil {
				sub.conn.Close(websocket.StatusNormalClosure, "")
			}
		}
	}()
	var resubscribed atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	wsURL := "ws" + strings.TrimPrefix(s.BaseURL, "http") + "/query"
	for i := range subs {
		c := s.Clients[i%len(s.Clients)]
		g.Go(func() error {
			sub, err := openSubscriber(gctx, wsURL, c, &resubscribed)
			if err != nil {
				fail(err.Error())
				return nil
			}
			subs[i] = sub
			return nil
		})
	}
	_ = g.Wait()
	opened := 0
	for _, sub := range subs {
		if sub != nil {
			opened++
		}
	}
	// A subscription is registered after its subscribe message is read:
	// wait for the server to count them all.
	var open map[string]float64
	for deadline := time.Now().Add(30 * time.Second); ; {
		if open, err = s.scrape(ctx, probe); err != nil {
			return res, err
		}
		if int(open["chatql_realtime_subscribers"]) >= res.SubscribersBefore+opened || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.Connect = time.Since(start)
	res.Resubscribed = resubscribed.Load()
	if n := int(open["chatql_realtime_subscribers"]) - res.SubscribersBefore; n < opened {
		fail(fmt.Sprintf("only %d of %d subscriptions registered", n, opened))
	}
	res.RSSSubscribed = open["process_resident_memory_bytes"]
	res.HeapSubscribed = open["go_memstats_heap_inuse_bytes"]
	res.GoroutinesOpen = int(open["go_goroutines"])
	if snap, err := poolSnapshot(ctx, probe, s.BaseURL); err == nil {
		res.CheckedOutIdle = snap.CheckedOut
	}

	// One message per subscribed conversation, sent by a participant.
	sender := map[string]Client{}
	for i, sub := range subs {
		if sub != nil {
			sender[sub.conv] = s.Clients[i%len(s.Clients)]
		}
	}
	var sentMu sync.Mutex
	sentAt := map[string]time.Time{}
	send := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: s.Senders}, Timeout: 30 * time.Second}
	defer send.CloseIdleConnections()
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(s.Senders)
	for _, conv := range slices.Sorted(maps.Keys(sender)) {
		c := sender[conv]
		g.Go(func() error {
			body, _ := json.Marshal(map[string]any{"query": sendMessage, "variables": map[string]any{"c": conv, "b": "subscribe run"}})
			sentMu.Lock()
			sentAt[conv] = time.Now()
			sentMu.Unlock()
			if kind := post(gctx, send, s.BaseURL+"/query", c.Token, body); kind != "" {
				fail("send: " + kind)
			}
			return nil
		})
	}
	_ = g.Wait()
	res.Messages = len(sender)

	// Each subscriber expects exactly one event: its conversation's.
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, sub := range subs {
		if sub == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			timer := time.NewTimer(s.Wait)
			defer timer.Stop()
			select {
			case a, ok := <-sub.got:
				mu.Lock()
				defer mu.Unlock()
				switch {
				case !ok:
					res.Missing++
					res.Errors["socket closed"]++
				case a.err != "":
					res.Unexpected++
					res.Errors[subscriptionErrorKind(a.err)]++
				case a.conv != sub.conv:
					res.Unexpected++
				default:
					sentMu.Lock()
					res.Latencies = append(res.Latencies, a.at.Sub(sentAt[sub.conv]))
					sentMu.Unlock()
				}
			case <-timer.C:
				mu.Lock()
				res.Missing++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// Anything more is a duplicate or another conversation's.
	time.Sleep(200 * time.Millisecond)
	for _, sub := range subs {
		if sub != nil {
			res.Unexpected += len(sub.got)
		}
	}
	slices.Sort(res.Latencies)
	if snap, err := poolSnapshot(ctx, probe, s.BaseURL); err == nil {
		res.CheckedOutAfter = snap.CheckedOut
	}

	// Hang up and wait for the server's goroutines to come back.
	for i, sub := range subs {
		if sub != nil {
			sub.conn.Close(websocket.StatusNormalClosure, "")
			subs[i] = nil
		}
	}
	send.CloseIdleConnections()
	for deadline := time.Now().Add(10 * time.Second); ; {
		after, err := s.scrape(ctx, probe)
		if err != nil {
			return res, err
		}
		res.GoroutinesAfter = int(after["go_goroutines"])
		if res.GoroutinesAfter <= res.GoroutinesBefore || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return res, ctx.Err()
}

// openSubscriber connects as c, subscribes to c's conversation and starts
// a reader that answers pings and passes on everything else.
func openSubscriber(ctx context.Context, url string, c Client, resubscribed *atomic.Int64) (*subscriber, error) {
	dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(dialCtx, url, &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		return nil, errors.New("dial failed")
	}
	init, _ := json.Marshal(map[string]string{"Authorization": "Bearer " + c.Token})
	vars, _ := json.Marshal(map[string]any{"query": messageAdded, "variables": map[string]any{"c": c.ConversationID}})
	if err := wsjson.Write(dialCtx, conn, wsMessage{Type: "connection_init", Payload: init}); err != nil {
		conn.CloseNow()
		return nil, errors.New("connection_init failed")
	}
	for {
		var m wsMessage
		if err := wsjson.Read(dialCtx, conn, &m); err != nil {
			conn.CloseNow()
			return nil, errors.New("no connection_ack")
		}
		if m.Type == "connection_ack" {
			break
		}
	}
	subscribe := wsMessage{ID: "1", Type: "subscribe", Payload: vars}
	if err := wsjson.Write(dialCtx, conn, subscribe); err != nil {
		conn.CloseNow()
		return nil, errors.New("subscribe failed")
	}
	sub := &subscriber{conv: c.ConversationID, conn: conn, got: make(chan arrival, 16), subscribe: subscribe, resubscribed: resubscribed}
	go sub.read()
	return sub, nil
}

func (s *subscriber) read() {
	defer close(s.got)
	for {
		var m wsMessage
		if err := wsjson.Read(context.Background(), s.conn, &m); err != nil {
			return
		}
		at := time.Now()
		var a arrival
		switch m.Type {
		case "ping":
			_ = wsjson.Write(context.Background(), s.conn, wsMessage{Type: "pong"})
			continue
		case "pong":
			continue
		case "next":
			var p struct {
				Data struct {
					MessageAdded struct{ Conversation struct{ ID string } }
				}
				Errors json.RawMessage
			}
			err := json.Unmarshal(m.Payload, &p)
			if wait, ok := refusedFor(p.Errors); err == nil && ok && s.retries < maxResubscribes {
				// Refused as it started: the subscription completes
				// next, then it is sent again.
				s.retryAfter = wait
				continue
			}
			if err != nil || len(p.Errors) > 0 {
				a.err = string(m.Payload)
			}
			a.conv, a.at = p.Data.MessageAdded.Conversation.ID, at
		case "complete":
			if s.retryAfter > 0 {
				s.retries++
				s.resubscribed.Add(1)
				time.Sleep(s.retryAfter)
				s.retryAfter = 0
				if err := wsjson.Write(context.Background(), s.conn, s.subscribe); err != nil {
					return
				}
				continue
			}
			a.err = m.Type
		default:
			a.err = m.Type + " " + string(m.Payload)
		}
		select {
		case s.got <- a:
		default: // counted as unexpected by the buffer check
		}
	}
}

// refusedFor reports whether a list of GraphQL errors is admission's
// refusal, and the retryAfter it gave (at least a second).
func refusedFor(payload json.RawMessage) (time.Duration, bool) {
	var errs []struct {
		Extensions struct {
			Code       string `json:"code"`
			RetryAfter int    `json:"retryAfter"`
		} `json:"extensions"`
	}
	if json.Unmarshal(payload, &errs) != nil || len(errs) == 0 {
		return 0, false
	}
	switch errs[0].Extensions.Code {
	case "OVERLOADED", "RATE_LIMITED":
		return time.Duration(max(errs[0].Extensions.RetryAfter, 1)) * time.Second, true
	}
	return 0, false
}

// subscriptionErrorKind names what a subscriber received instead of its
// event, by the error's extensions.code when it has one.
func subscriptionErrorKind(received string) string {
	const key = `"code":"`
	if i := strings.Index(received, key); i >= 0 {
		rest := received[i+len(key):]
		if j := strings.IndexByte(rest, '"'); j >= 0 {
			return "subscription " + rest[:j]
		}
	}
	kind, _, _ := strings.Cut(received, " ")
	return "subscription " + kind
}

// scrape reads the server's /metrics into name → value (unlabelled
// samples only).
func (s SubscribeRun) scrape(ctx context.Context, c *http.Client) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.BaseURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	if s.MetricsToken != "" {
		req.Header.Set("Authorization", "Bearer "+s.MetricsToken)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape /metrics: HTTP %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape /metrics: %w", err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) > 0 {
				continue
			}
			switch {
			case m.Gauge != nil:
				out[name] = m.GetGauge().GetValue()
			case m.Counter != nil:
				out[name] = m.GetCounter().GetValue()
			}
		}
	}
	return out, nil
}
