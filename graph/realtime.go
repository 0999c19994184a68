package graph

import (
	"context"
	"errors"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"chatql/chat"
	"chatql/dbpool"
	"chatql/realtime"
)

// CodeTooSlow ends a subscription whose client fell too far behind.
const CodeTooSlow = "SUBSCRIPTION_TOO_SLOW"

// errNoRealtime is what messageAdded answers on a server without a hub.
var errNoRealtime = errors.New("graph: realtime updates are not enabled")

// streamMessages sends the messages sub announces on the returned channel,
// each loaded as viewer with a scope of its own that is released before the
// message is handed over: no connection is held between events. It ends
// (closing the channel) when ctx is done or sub closes; an ending the client
// should know about is added as a subscription error.
func streamMessages(ctx context.Context, pool *dbpool.Pool, sub *realtime.Subscription, viewer string) <-chan *chat.Message {
	out := make(chan *chat.Message)
	go func() {
		defer close(out)
		defer sub.Close()
		for {
			var ev realtime.Event
			select {
			case <-ctx.Done():
				return
			case e, ok := <-sub.C:
				if !ok {
					if sub.Dropped() {
						tooSlow(ctx)
					} else if ctx.Err() == nil {
						transport.AddSubscriptionError(ctx, &gqlerror.Error{
							Message:    "the server is shutting down; subscribe again",
							Extensions: map[string]any{"code": CodeUnavailable},
						})
					}
					return
				}
				ev = e
			}
			var msg chat.Message
			err := pool.WithConn(ctx, func(db dbpool.DB) error {
				var err error
				msg, err = chat.MessageByID(ctx, db, viewer, ev.ID)
				return err
			})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				// Removed from the conversation, or the database failed:
				// either way the stream cannot go on complete.
				code, message := classify(err)
				transport.AddSubscriptionError(ctx, &gqlerror.Error{Message: message, Extensions: map[string]any{"code": code}})
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
// socket is closed with CloseTryAgainLater (a client that stopped reading
// would never see an error message behind the ones it is not reading); on
// SSE the stream ends with the error.
func tooSlow(ctx context.Context) {
	transport.AddSubscriptionError(ctx, &gqlerror.Error{
		Message:    "the client fell too far behind; subscribe again",
		Extensions: map[string]any{"code": CodeTooSlow},
	})
	_ = closeSocket(ctx, CloseTryAgainLater, tooSlowReason)
}
