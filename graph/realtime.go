package graph

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
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

// announcedBatch is the most messages one load brings: a subscriber that is
// behind catches up a statement per announcedBatch messages, however many
// were announced meanwhile.
const announcedBatch = chat.MaxPageSize

// announcements loads announced messages once for all the subscribers of
// their conversation in this process, a run at a time: the messages after
// the last one a subscriber delivered, up to announcedBatch of them, in one
// statement on one briefly borrowed connection. Subscribers at the same
// place share the load; the others, and the late, find the messages among
// the ones loaded recently (messages never change once sent).
type announcements struct {
	pool   *dbpool.Pool
	flight singleflight.Group

	mu   sync.Mutex
	runs map[string][]announced // by conversation: its latest loaded messages, consecutive
	// order lists runs' keys, the least recently loaded first; size counts
	// the messages in runs, at most recentMessages.
	order []string
	size  int
}

// recentMessages bounds the messages announcements keeps, across
// conversations; runMessages those of one run, so that one busy
// conversation leaves room for at least three others. A run longer than
// a load lets subscribers of a conversation that drift apart in a burst
// (one delivering its first hundred while another is at its third) still
// share the loads. A subscriber further behind loads what it needs again.
const (
	recentMessages = 2048
	runMessages    = 512
)

// announced is a loaded message with the participants of its conversation
// at the time it was loaded.
type announced struct {
	msg          chat.Message
	participants []string
}

func newAnnouncements(pool *dbpool.Pool) *announcements {
	return &announcements{pool: pool, runs: map[string][]announced{}}
}

// load sends on the returned channel the messages of conversation conv
// after seq after, oldest first, at most announcedBatch, for any viewer
// (the caller checks its viewer against each one's participants). None
// means there are none. The caller may go on with other work meanwhile:
// the load goes on, for the others sharing it, if the caller leaves.
func (a *announcements) load(ctx context.Context, conv string, after int64) <-chan singleflight.Result {
	if got := a.cached(conv, after); got != nil {
		ch := make(chan singleflight.Result, 1)
		ch <- singleflight.Result{Val: got}
		return ch
	}
	return a.flight.DoChan(conv+"/"+strconv.FormatInt(after, 10), func() (any, error) {
		// Loaded by another flight that ended while this one was starting?
		if got := a.cached(conv, after); got != nil {
			return got, nil
		}
		var an chat.Announced
		lctx := context.WithoutCancel(ctx)
		err := a.pool.WithConn(lctx, func(db dbpool.DB) error {
			var err error
			an, err = chat.AnnouncedMessages(lctx, db, conv, after, announcedBatch)
			return err
		})
		if err != nil {
			return nil, err
		}
		got := make([]announced, len(an.Messages))
		for i, m := range an.Messages {
			got[i] = announced{msg: m, participants: an.Participants}
		}
		a.remember(conv, got)
		return got, nil
	})
}

// cached returns the remembered messages of conv after seq after, nil
// unless the next one is among them.
func (a *announcements) cached(conv string, after int64) []announced {
	a.mu.Lock()
	defer a.mu.Unlock()
	run := a.runs[conv]
	if len(run) == 0 {
		return nil
	}
	i := after + 1 - run[0].msg.Seq
	if i < 0 || i >= int64(len(run)) {
		return nil
	}
	// Elements of a run are never changed, only added after its end, so
	// the caller may keep this slice.
	return run[i:min(int64(len(run)), i+announcedBatch)]
}

// remember adds got to the run of conv: after its end when it continues
// it, in its place otherwise.
func (a *announcements) remember(conv string, got []announced) {
	if len(got) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.runs[conv]
	run := got
	if n := len(old); n > 0 && old[0].msg.Seq <= got[0].msg.Seq && got[0].msg.Seq <= old[n-1].msg.Seq+1 {
		// Appending writes past the end only: slices of the run handed
		// out before keep what they hold.
		run = old
		for _, an := range got {
			if an.msg.Seq == run[len(run)-1].msg.Seq+1 {
				run = append(run, an)
			}
		}
	}
	run = run[max(0, len(run)-runMessages):]
	a.size += len(run) - len(old)
	a.runs[conv] = run
	a.order = append(slices.DeleteFunc(a.order, func(c string) bool { return c == conv }), conv)
	for a.size > recentMessages && len(a.order) > 1 {
		a.size -= len(a.runs[a.order[0]])
		delete(a.runs, a.order[0])
		a.order = a.order[1:]
	}
}

// streamMessages sends the messages of conversation conv after seq after
// on the returned channel, in their order, with none missing: each event
// of sub says how far the conversation has got, and the messages up to
// there are loaded through announcements, whose connection is given back
// before they are handed over: no connection is held between events.
// While a load runs, events go on being taken: a subscriber waiting on
// the database never falls behind; only one whose client does not take
// what it is sent does, and is dropped. The stream ends (closing the
// channel) when ctx is done or sub closes; an ending the client should
// know about is added as a subscription error.
func streamMessages(ctx context.Context, messages *announcements, sub *realtime.Subscription, conv, viewer string, after int64) <-chan *chat.Message {
	out := make(chan *chat.Message)
	go func() {
		defer close(out)
		defer sub.Close()
		// latest is how far the conversation is known to have got.
		latest := max(after, sub.Announced)
		var loading <-chan singleflight.Result
		for {
			if loading == nil && latest > after {
				loading = messages.load(ctx, conv, after)
			}
			var run []announced
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
				if e.Seq == 0 {
					// An event without a seq says only that there is more.
					latest = max(latest, after+1)
				}
				latest = max(latest, e.Seq)
				continue
			case r := <-loading:
				loading = nil
				if r.Err != nil {
					if ctx.Err() != nil {
						return
					}
					// The database failed: the stream cannot go on complete.
					endWithCause(ctx, r.Err)
					return
				}
				if run = r.Val.([]announced); len(run) == 0 {
					latest = after // announced, yet gone: nothing to wait for
					continue
				}
			}
			for _, an := range run {
				if !slices.Contains(an.participants, viewer) {
					// No longer among the participants: no more of it.
					endWithCause(ctx, fmt.Errorf("message %s: %w", an.msg.ID, chat.ErrNotFound))
					return
				}
				msg := an.msg
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
				after = msg.Seq
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

// endWithCause ends a stream with err, presented as the API presents it.
func endWithCause(ctx context.Context, err error) {
	code, message := classify(err)
	endWithError(ctx, &gqlerror.Error{Message: message, Extensions: map[string]any{"code": code}})
}

// endWithError reports why a subscription stream is ending, where the
// transport can carry it: gqlgen's websocket transport sends the errors a
// stream collected as its final message; its SSE transport has nowhere to
// collect them (AddSubscriptionError would dereference nil there), so an
// SSE stream just completes and the client subscribes again.
//
// Once ctx is done nobody waits for the error: the transport has stopped
// reading the stream and reads the collected errors without a lock, so
// nothing is added then (the window between the check and the append is
// gqlgen's to close: AddSubscriptionError is not synchronised).
func endWithError(ctx context.Context, err *gqlerror.Error) {
	if web.OnWebsocket(ctx) && ctx.Err() == nil {
		transport.AddSubscriptionError(ctx, err)
	}
}
