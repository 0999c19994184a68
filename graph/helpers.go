package graph

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/99designs/gqlgen/graphql"

	"github.com/vikstrous/dataloadgen"

	"chatql/chat"
	"chatql/graph/model"
)

// inWriteTx runs a signed-in mutation in a transaction on the operation's
// scope. Loader caches are cleared first: earlier fields of the operation
// may have loaded what this one changes.
func inWriteTx[T any](ctx context.Context, fn func(ctx context.Context, op *operation) (T, error)) (T, error) {
	var out T
	if _, err := requireViewer(ctx); err != nil {
		return out, err
	}
	op := operationFrom(ctx)
	op.loaders.clear()
	err := op.scope.InTx(ctx, func(ctx context.Context) error {
		var err error
		out, err = fn(ctx, op)
		return err
	})
	return out, err
}

// writeConversation is inWriteTx for the mutations that return a conversation.
func (r *mutationResolver) writeConversation(ctx context.Context, fn func(ctx context.Context, op *operation) (chat.Conversation, error)) (*chat.Conversation, error) {
	conv, err := inWriteTx(ctx, fn)
	if err != nil {
		return nil, err
	}
	return &conv, nil
}

// signIn checks input's email and password. A place at the password gate
// is taken first, so that a full gate refuses the attempt before it
// borrows a connection; the account is then looked up on the operation's
// connection, which goes back before the password is checked (slow on
// purpose, and possibly waiting for a running slot).
func (r *mutationResolver) signIn(ctx context.Context, input model.SignInInput) (chat.User, error) {
	turn, err := r.opts.Passwords.Admit()
	if err != nil {
		return chat.User{}, err
	}
	defer turn.Release() // when the lookup fails
	op := operationFrom(ctx)
	creds, err := chat.LookupCredentials(ctx, op.scope, input.Email)
	if err != nil {
		return chat.User{}, err
	}
	op.scope.Yield()
	return creds.Check(ctx, turn, input.Password)
}

func (r *mutationResolver) authPayload(user chat.User) (*model.AuthPayload, error) {
	token, expires, err := r.opts.Tokens.Issue(user.ID)
	if err != nil {
		return nil, fmt.Errorf("issue token: %w", err)
	}
	return &model.AuthPayload{Token: token, ExpiresAt: expires, User: &user}, nil
}

// loadConversation loads a conversation the viewer takes part in; any other
// is NOT_FOUND, whether or not it exists.
func loadConversation(ctx context.Context, id string) (*chat.Conversation, error) {
	conv, err := operationFrom(ctx).loaders.conversations.Load(ctx, id)
	if errors.Is(err, dataloadgen.ErrNotFound) {
		return nil, fmt.Errorf("conversation %s: %w", id, chat.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return &conv, nil
}

// pageKey checks a messages field's arguments.
func pageKey(conversationID string, first *int, after *string) (chat.PageKey, error) {
	n, err := chat.PageSize("first", deref(first, 20))
	if err != nil {
		return chat.PageKey{}, err
	}
	a := deref(after, "")
	if err := chat.ValidateMessageCursor("after", a); err != nil {
		return chat.PageKey{}, err
	}
	return chat.PageKey{ConversationID: conversationID, First: n, After: a}, nil
}

// messageConnection builds a page of messages. Edges (a cursor each) are
// only built when asked for: an inbox asks for nodes of many pages.
func messageConnection(ctx context.Context, page chat.MessagePage) *model.MessageConnection {
	conn := &model.MessageConnection{
		Nodes:    page.Messages,
		PageInfo: &model.PageInfo{HasNextPage: page.HasNext},
	}
	if n := len(page.Messages); n > 0 {
		end := page.Messages[n-1].Cursor()
		conn.PageInfo.EndCursor = &end
	}
	if !graphql.FieldRequested(ctx, "edges") {
		conn.Edges = []model.MessageEdge{}
		return conn
	}
	conn.Edges = make([]model.MessageEdge, len(page.Messages))
	for i := range page.Messages {
		m := &page.Messages[i]
		conn.Edges[i] = model.MessageEdge{Cursor: m.Cursor(), Node: m}
	}
	return conn
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// Bounds of poolStatus's intervalMs: often enough to watch a load test,
// seldom enough that a dashboard left open costs nothing.
const (
	minPollIntervalMs     = 100
	maxPollIntervalMs     = 60_000
	defaultPollIntervalMs = 1000
)

// pollInterval checks a subscription's intervalMs argument; null means the
// default.
func pollInterval(ms *int) (time.Duration, error) {
	n := deref(ms, defaultPollIntervalMs)
	if n < minPollIntervalMs || n > maxPollIntervalMs {
		return 0, &chat.InputError{Field: "intervalMs", Message: fmt.Sprintf("must be between %d and %d milliseconds", minPollIntervalMs, maxPollIntervalMs)}
	}
	return time.Duration(n) * time.Millisecond, nil
}
