package graph

import (
	"context"
	"time"

	"github.com/vikstrous/dataloadgen"

	"chatql/chat"
	"chatql/dbpool"
)

// Loader settings. An operation holds its connection from first use until
// its response is produced, so every millisecond a batch waits to fill is
// connection time others queue for: the window is short. Resolvers of list
// elements start within microseconds of each other, and the fields the
// inbox needs are prefetched in bulk (prefetch.go), so nothing waits on
// the window in the common shapes.
const (
	loaderWait     = 2 * time.Millisecond
	loaderCapacity = chat.MaxPageSize
)

// loaders are one operation's dataloaders, each batching one relationship a
// list can fan out over into one `= ANY($1)` statement on the operation's
// scope. Results are cached for the operation; mutations clear them.
type loaders struct {
	users         *dataloadgen.Loader[string, chat.User]
	conversations *dataloadgen.Loader[string, chat.Conversation]
	participants  *dataloadgen.Loader[string, []chat.User]
	lastMessages  *dataloadgen.Loader[string, *chat.Message]
	unread        *dataloadgen.Loader[string, int]
	messagePages  *dataloadgen.Loader[chat.PageKey, chat.MessagePage]
}

func newLoaders(op *operation) *loaders {
	opts := []dataloadgen.Option{dataloadgen.WithWait(loaderWait), dataloadgen.WithBatchCapacity(loaderCapacity)}
	db := op.scope
	return &loaders{
		users: dataloadgen.NewMappedLoader(func(ctx context.Context, ids []string) (map[string]chat.User, error) {
			return chat.UsersByID(ctx, db, ids)
		}, opts...),
		conversations: dataloadgen.NewMappedLoader(func(ctx context.Context, ids []string) (map[string]chat.Conversation, error) {
			return chat.ConversationsByID(ctx, db, op.viewerID(), ids)
		}, opts...),
		participants: dataloadgen.NewMappedLoader(func(ctx context.Context, ids []string) (map[string][]chat.User, error) {
			m, err := chat.ParticipantsByConversation(ctx, db, op.viewerID(), ids)
			return fillMissing(m, ids), err
		}, opts...),
		lastMessages: dataloadgen.NewMappedLoader(func(ctx context.Context, ids []string) (map[string]*chat.Message, error) {
			return lastMessagesByConversation(ctx, db, op.viewerID(), ids)
		}, opts...),
		unread: dataloadgen.NewMappedLoader(func(ctx context.Context, ids []string) (map[string]int, error) {
			m, err := chat.UnreadCounts(ctx, db, op.viewerID(), ids)
			return fillMissing(m, ids), err
		}, opts...),
		messagePages: dataloadgen.NewMappedLoader(func(ctx context.Context, keys []chat.PageKey) (map[chat.PageKey]chat.MessagePage, error) {
			return chat.MessagePages(ctx, db, op.viewerID(), keys)
		}, opts...),
	}
}

// clear forgets everything loaded: a mutation may have changed it.
func (l *loaders) clear() {
	l.users.ClearAll()
	l.conversations.ClearAll()
	l.participants.ClearAll()
	l.lastMessages.ClearAll()
	l.unread.ClearAll()
	l.messagePages.ClearAll()
}

// fillMissing gives keys a batch found nothing for the zero value, where
// nothing is an answer (no participants visible, nothing unread) rather
// than a missing thing.
func fillMissing[V any](m map[string]V, keys []string) map[string]V {
	if m == nil {
		return nil
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			var zero V
			m[k] = zero
		}
	}
	return m
}

// lastMessagesByConversation answers nil for conversations without messages.
func lastMessagesByConversation(ctx context.Context, db dbpool.DB, viewer string, ids []string) (map[string]*chat.Message, error) {
	msgs, err := chat.LastMessages(ctx, db, viewer, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*chat.Message, len(ids))
	for _, id := range ids {
		if m, ok := msgs[id]; ok {
			out[id] = &m
		} else {
			out[id] = nil
		}
	}
	return out, nil
}
