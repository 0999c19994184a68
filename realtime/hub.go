// Package realtime announces new chat messages to the subscribers of this
// process. One dedicated connection per process (not from the pool: a
// LISTEN needs its session for as long as the process runs) listens on
// Channel; the hub fans each notification out to the subscribers of its
// conversation.
//
// realtime owns the announcement (Channel, Event and its payload,
// Announce) and nothing of the chat domain: what a message is, and how to
// find the ones a reconnect missed (Options.Missed), is chat's.
package realtime

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/dbpool"
)

// Channel is the NOTIFY channel Announce sends on.
const Channel = "chatql_messages"

// BufferSize is how many events a subscriber may fall behind before it is
// dropped: a slow subscriber never holds up the others. Events are small
// (ids and a seq), so a consumer can take them while it waits on other
// work and fall behind only when its own client does not keep up.
const BufferSize = 64

// Reconnect backoff: the first retry is quick (a restarted server or a
// terminated backend), later ones back off so that an outage is not hammered.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// recentConversations is how many conversations the hub remembers the
// latest announced seq of: to drop the duplicates and stale events a
// catch-up after a reconnect and a late notification produce, to start the
// catch-up from, and to tell a new subscriber what was announced before it.
const recentConversations = 4096

// Event announces one committed message. It is the NOTIFY payload.
type Event struct {
	ID             string `json:"id"`
	ConversationID string `json:"conversationId"`
	// Seq is the message's place in its conversation: a conversation's
	// messages are committed, and so announced, in Seq order. An event
	// says that the conversation has messages up to Seq; 0 (a sender that
	// did not give one) says only that it has new ones.
	Seq       int64     `json:"seq"`
	CreatedAt time.Time `json:"createdAt"`
}

// Announce tells every listener of the database about e. NOTIFY is
// delivered at commit, so in a transaction that rolls back nothing is
// announced. The payload carries ids and the time only, never a body:
// listeners load what they deliver with their subscribers' rights.
func Announce(ctx context.Context, db dbpool.DB, e Event) error {
	payload, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	if _, err := db.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, string(payload)); err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	return nil
}

// MissedFunc returns, on db (the listener's connection), an event for the
// newest message of each conversation in after whose messages went past
// the seq given (0: any). The hub calls it after a reconnect, for the
// conversations it has subscribers of, with the last seq it announced of
// each; subscribers load the messages in between themselves.
type MissedFunc func(ctx context.Context, db dbpool.DB, after map[string]int64) ([]Event, error)

// Options configure a Hub.
type Options struct {
	// URL is the database to listen on: a direct connection, since a
	// transaction-mode pooler does not keep LISTEN sessions.
	URL string
	// ApplicationName names the listener's backend in pg_stat_activity.
	ApplicationName string
	// Missed finds what was announced while the listener was down; nil
	// skips catching up (subscribers then miss those messages).
	Missed MissedFunc
	Logger *slog.Logger
}

// Hub owns the listening connection and the subscribers. Subscribe and
// Subscription.Close are safe for concurrent use; Run is called once.
type Hub struct {
	opts   Options
	cfg    *pgx.ConnConfig
	logger *slog.Logger

	mu      sync.Mutex
	subs    map[string]map[*Subscription]struct{} // by conversation id
	stopped bool
	// latest is the highest seq announced per conversation, for at most
	// recentConversations of them; heard lists its keys, oldest first.
	latest    map[string]int64
	heard     []string
	connected chan struct{}
	pid       uint32
	stats     Stats // counters only; Subscribers and Listening are computed
}

// Stats is what a hub has done so far, for metrics.
type Stats struct {
	// Subscribers is the number of open subscriptions.
	Subscribers int
	// Listening is true while the listening connection is up.
	Listening bool
	// Notifications counts the messages announced (once each).
	Notifications uint64
	// Dropped counts subscriptions closed because they fell behind.
	Dropped uint64
	// Reconnects counts listening connections after the first.
	Reconnects uint64
}

// New checks opts and returns a hub that is not listening yet: see Run.
func New(opts Options) (*Hub, error) {
	cfg, err := pgx.ParseConfig(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("realtime: database URL: %w", err)
	}
	if opts.ApplicationName != "" {
		cfg.RuntimeParams["application_name"] = opts.ApplicationName
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Hub{
		opts: opts, cfg: cfg, logger: opts.Logger,
		subs:      map[string]map[*Subscription]struct{}{},
		latest:    map[string]int64{},
		connected: make(chan struct{}),
	}, nil
}

// Subscription receives the events of one conversation on C until it is
// closed: by Close, by the hub stopping, or because it fell BufferSize
// events behind (Dropped then reports true).
type Subscription struct {
	C <-chan *Event
	// Announced is the seq of the conversation's newest message this hub
	// had announced when the subscription began (0: none it remembers).
	// Messages up to it do not arrive on C: a subscriber whose view of the
	// conversation is older loads them itself.
	Announced int64

	c       chan *Event
	done    chan struct{} // closed with c, but never read from
	hub     *Hub
	conv    string
	closed  bool // guarded by hub.mu
	dropped bool // guarded by hub.mu
}

// Subscribe registers a subscriber to conversationID's messages. The caller
// must Close it. On a stopped hub the subscription is closed at once.
func (h *Hub) Subscribe(conversationID string) *Subscription {
	// Pointers: one Event per message, shared by its subscribers, keeps
	// each buffer an eighth of the size (thousands of them are open).
	c := make(chan *Event, BufferSize)
	s := &Subscription{C: c, c: c, done: make(chan struct{}), hub: h, conv: conversationID}
	h.mu.Lock()
	defer h.mu.Unlock()
	s.Announced = h.latest[conversationID]
	if h.stopped {
		s.closed = true
		close(c)
		close(s.done)
		return s
	}
	set := h.subs[conversationID]
	if set == nil {
		set = map[*Subscription]struct{}{}
		h.subs[conversationID] = set
	}
	set[s] = struct{}{}
	return s
}

// Close unregisters s and closes C. It is idempotent.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.removeLocked(s)
}

// Done is closed when s is: unlike C it can be watched while its pending
// events are still being handled, so that a consumer blocked on a slow
// client learns at once that it was dropped.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Dropped reports whether C was closed because s fell too far behind.
func (s *Subscription) Dropped() bool {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.dropped
}

func (h *Hub) removeLocked(s *Subscription) {
	if s.closed {
		return
	}
	s.closed = true
	close(s.c)
	close(s.done)
	if set := h.subs[s.conv]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(h.subs, s.conv)
		}
	}
}

// Subscribers counts the open subscriptions.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, set := range h.subs {
		n += len(set)
	}
	return n
}

// Stats returns the hub's subscriber count and counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.stats
	for _, set := range h.subs {
		st.Subscribers += len(set)
	}
	return st
}

// Connected returns a channel closed once the hub listens on a new
// connection (the first, or the next after a reconnect), and the backend
// pid of that connection (0 before the first).
func (h *Hub) Connected() (<-chan struct{}, uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.connected, h.pid
}

// Run listens until ctx is done, reconnecting with backoff (100 ms doubling
// to 5 s) whenever the connection fails, and catching up on the messages
// of subscribed conversations committed meanwhile. When it returns every
// subscription is closed and later ones are closed at once.
func (h *Hub) Run(ctx context.Context) {
	defer h.stop()
	backoff := minBackoff
	first := true
	for ctx.Err() == nil {
		err := h.listen(ctx, !first, func() { backoff = minBackoff; first = false })
		if ctx.Err() != nil {
			return
		}
		h.logger.Warn("realtime listener disconnected; reconnecting", "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (h *Hub) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	for _, set := range h.subs {
		for s := range set {
			h.removeLocked(s)
		}
	}
}

// listen runs one connection: connect, LISTEN, catch up if reconnecting,
// then deliver notifications until an error.
func (h *Hub) listen(ctx context.Context, catchUp bool, ok func()) error {
	conn, err := pgx.ConnectConfig(ctx, h.cfg)
	if err != nil {
		return err
	}
	defer func() {
		h.mu.Lock()
		h.stats.Listening = false
		h.mu.Unlock()
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{Channel}.Sanitize()); err != nil {
		return err
	}
	if catchUp {
		if err := h.catchUp(ctx, conn); err != nil {
			return fmt.Errorf("catch up: %w", err)
		}
	}
	h.mu.Lock()
	if h.pid != 0 {
		h.stats.Reconnects++
	}
	h.stats.Listening = true
	h.pid = conn.PgConn().PID()
	close(h.connected)
	h.connected = make(chan struct{})
	h.mu.Unlock()
	ok()
	h.logger.Debug("realtime listener connected", "pid", conn.PgConn().PID())
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var e Event
		if err := json.Unmarshal([]byte(n.Payload), &e); err != nil || e.ID == "" || e.ConversationID == "" {
			h.logger.Warn("realtime: ignoring malformed notification", "payload", n.Payload)
			continue
		}
		h.deliver(e)
	}
}

// catchUp announces, for each subscribed conversation with messages past
// the last seq announced of it, its newest message. It runs after LISTEN,
// so what commits meanwhile is announced as well, possibly twice; the
// duplicate is dropped.
func (h *Hub) catchUp(ctx context.Context, conn *pgx.Conn) error {
	h.mu.Lock()
	after := make(map[string]int64, len(h.subs))
	for id := range h.subs {
		after[id] = h.latest[id]
	}
	h.mu.Unlock()
	if len(after) == 0 || h.opts.Missed == nil {
		return nil
	}
	events, err := h.opts.Missed(ctx, dbpool.Conn(conn), after)
	if err != nil {
		return err
	}
	for _, e := range events {
		h.deliver(e)
	}
	if len(events) > 0 {
		h.logger.Info("realtime listener caught up", "conversations", len(after), "behind", len(events))
	}
	return nil
}

// deliver fans ev out without blocking: a subscriber whose buffer is full is
// dropped. An event at or below the seq last announced of its conversation
// is skipped.
func (h *Hub) deliver(ev Event) {
	e := &ev
	h.mu.Lock()
	defer h.mu.Unlock()
	if e.Seq > 0 {
		last, known := h.latest[e.ConversationID]
		if known && e.Seq <= last {
			return
		}
		if !known {
			h.heard = append(h.heard, e.ConversationID)
			if len(h.heard) > recentConversations {
				delete(h.latest, h.heard[0])
				h.heard = h.heard[1:]
			}
		}
		h.latest[e.ConversationID] = e.Seq
	}
	h.stats.Notifications++
	for s := range h.subs[e.ConversationID] {
		select {
		case s.c <- e:
		default:
			s.dropped = true
			h.stats.Dropped++
			h.removeLocked(s)
			h.logger.Warn("realtime subscriber too slow; dropped", "conversation_id", e.ConversationID)
		}
	}
}
