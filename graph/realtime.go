package graph

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"golang.org/x/sync/singleflight"

	"chatql/chat"
	"chatql/dbpool"
	"chatql/realtime"
	"chatql/web"
)

// CodeTooSlow ends a subscription whose client fell too far behind.
const CodeTooSlow = "SUBSCRIPTION_TOO_SLOW"

// errNoRealtime is what messageAdded answers on a server without a hub.
var errNoRealtime = errors.New("graph: realtime updates are not enabled")

// announcements loads each announced message once for all the subscribers
// of its conversation in this process: a message to a conversation with a
// thousand subscribers here costs one statement on one briefly borrowed
// connection, not a thousand borrows queueing for the pool at once. The
// first subscriber to ask loads it; the others wait for that load, or find
// it among the recent ones (messages never change once sent).
type announcements struct {
	pool   *dbpool.Pool
	flight singleflight.Group

	mu     sync.Mutex
	recent map[string]announced
	order  []string // recent's keys, oldest first
}

// recentAnnouncements is how many loaded messages are kept for subscribers
// that come to them late (their previous event still being written).
const recentAnnouncements = 256

type announced struct {
	msg          chat.Message
	participants []string
}

func newAnnouncements(pool *dbpool.Pool) *announcements {
	return &announcements{pool: pool, recent: map[string]announced{}}
}

// load returns message id as viewer sees it: chat.ErrNotFound unless the
// viewer takes part in its conversation.
func (a *announcements) load(ctx context.Context, id, viewer string) (chat.Message, error) {
	a.mu.Lock()
	got, ok := a.recent[id]
	a.mu.Unlock()
	if !ok {
		// Shared by every subscriber waiting for it: one that leaves must
		// not fail the load for the rest.
		ch := a.flight.DoChan(id, func() (any, error) {
			var an announced
			lctx := context.WithoutCancel(ctx)
			err := a.pool.WithConn(lctx, func(db dbpool.DB) error {
				var err error
				an.msg, an.participants, err = chat.AnnouncedMessage(lctx, db, id)
				return err
			})
			if err == nil {
				a.remember(id, an)
			}
			return an, err
		})
		select {
		case r := <-ch:
			if r.Err != nil {
				return chat.Message{}, r.Err
			}
			got = r.Val.(announced)
		case <-ctx.Done():
			return chat.Message{}, ctx.Err()
		}
	}
	if !slices.Contains(got.participants, viewer) {
		return chat.Message{}, fmt.Errorf("message %s: %w", id, chat.ErrNotFound)
	}
	return got.msg, nil
}

func (a *announcements) remember(id string, an announced) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.recent[id]; ok {
		return
	}
	a.recent[id] = an
	a.order = append(a.order, id)
	if len(a.order) > recentAnnouncements {
		delete(a.recent, a.order[0])
		a.order = a.order[1:]
	}
}

// streamMessages sends the messages sub announces on the returned channel,
// each loaded through announcements, whose connection is given back before
// the message is handed over: no connection is held between events. It ends
// (closing the channel) when ctx is done or sub closes; an ending the client
// should know about is added as a subscription error.
func streamMessages(ctx context.Context, messages *announcements, sub *realtime.Subscription, viewer string) <-chan *chat.Message {
	out := make(chan *chat.Message)
	go func() {
		defer close(out)
		defer sub.Close()
		for {
			var ev *realtime.Event
			select {
			case <-ctx.Done():
				return
			case e, ok := <-sub.C:
				if !ok {
					if sub.Dropped() {
						tooSlow(ctx)
					} else if ctx.Err() == nil {
						endWithError(ctx, &gqlerror.Error{
							Message:    "the server is shutting down; subscribe again",
							Extensions: map[string]any{"code": CodeUnavailable},
						})
					}
					return
				}
				ev = e
			}
			msg, err := messages.load(ctx, ev.ID, viewer)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				// Removed from the conversation, or the database failed:
				// either way the stream cannot go on complete.
				code, message := classify(err)
				endWithError(ctx, &gqlerror.Error{Message: message, Extensions: map[string]any{"code": code}})
				return
			}
			select {
			case out <- &msg:
			case <-ctx.Done():
				return
			case <-sub.Done():
				// Dropped (or the hub stopped) while the client was not
				// taking this one: a dropped client learns it now, not
				// after its socket drains.
				if sub.Dropped() {
					tooSlow(ctx)
				}
				return
			}
		}
	}()
	return out
}

// tooSlowReason is the close reason of a socket whose subscriber was
// dropped (at most 123 bytes: a close frame's limit).
const tooSlowReason = CodeTooSlow + ": the client fell too far behind; subscribe again"

// tooSlow ends a subscription the hub dropped: on a websocket the whole
// socket is closed with web.CloseTryAgainLater (a client that stopped reading
// would never see an error message behind the ones it is not reading); on
// SSE the stream completes.
func tooSlow(ctx context.Context) {
	endWithError(ctx, &gqlerror.Error{
		Message:    "the client fell too far behind; subscribe again",
		Extensions: map[string]any{"code": CodeTooSlow},
	})
	_ = web.CloseSocket(ctx, web.CloseTryAgainLater, tooSlowReason)
}

// endWithError reports why a subscription stream is ending, where the
// transport can carry it: gqlgen's websocket transport sends the errors a
// stream collected as its final message; its SSE transport has nowhere to
// collect them (AddSubscriptionError would dereference nil there), so an
// SSE stream just completes and the client subscribes again.
func endWithError(ctx context.Context, err *gqlerror.Error) {
	if web.OnWebsocket(ctx) {
		transport.AddSubscriptionError(ctx, err)
	}
}
