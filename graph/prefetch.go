package graph

import (
	"context"

	"github.com/99designs/gqlgen/graphql"

	"chatql/chat"
)

// prefetchConversations loads, for a list of conversations just fetched,
// every relationship the query asks of them, one statement per
// relationship, and primes the loaders with the results. The element
// resolvers then find their data in the loader caches and never wait on a
// batch window, so the number of statements is fixed by the query's shape,
// whatever the list's length and however the goroutines are scheduled.
//
// fields are the fields selected on each conversation. Arguments that are
// invalid are skipped here: the field's own resolver reports them.
//
// Once the loaders are primed the connection goes back to the pool: what
// remains (resolving thousands of fields from the caches, encoding the
// response) is CPU work that other operations should not queue behind. A
// field that still needs SQL borrows again.
func prefetchConversations(ctx context.Context, convs []chat.Conversation, fields []graphql.CollectedField) error {
	if len(convs) == 0 {
		return nil
	}
	op := operationFrom(ctx)
	viewer := op.viewerID()
	ids := make([]string, len(convs))
	for i, c := range convs {
		ids[i] = c.ID
		op.loaders.conversations.Prime(c.ID, c)
	}
	vars := graphql.GetOperationContext(ctx).Variables

	done := map[string]bool{}
	pagesAsked := map[chat.PageKey]bool{} // by First and After
	var pageKeys []chat.PageKey
	for _, f := range fields {
		switch f.Name {
		case "messages":
			args := f.ArgumentMap(vars)
			first, ok := intArg(args["first"])
			after, _ := args["after"].(string)
			if !ok || chat.ValidateMessageCursor("after", after) != nil {
				continue
			}
			if _, err := chat.PageSize("first", first); err != nil {
				continue
			}
			page := chat.PageKey{First: first, After: after}
			if pagesAsked[page] {
				continue // the same page asked for twice: under nodes and edges, say
			}
			pagesAsked[page] = true
			for _, id := range ids {
				pageKeys = append(pageKeys, chat.PageKey{ConversationID: id, First: first, After: after})
			}
			continue
		}
		if done[f.Name] {
			continue
		}
		done[f.Name] = true
		switch f.Name {
		case "participants":
			m, err := chat.ParticipantsByConversation(ctx, op.scope, viewer, ids)
			if err != nil {
				return err
			}
			for _, id := range ids {
				op.loaders.participants.Prime(id, m[id])
			}
		case "unreadCount":
			m, err := chat.UnreadCounts(ctx, op.scope, viewer, ids)
			if err != nil {
				return err
			}
			for _, id := range ids {
				op.loaders.unread.Prime(id, m[id])
			}
		case "lastMessage":
			m, err := lastMessagesByConversation(ctx, op.scope, viewer, ids)
			if err != nil {
				return err
			}
			for _, id := range ids {
				op.loaders.lastMessages.Prime(id, m[id])
			}
		}
	}
	if len(pageKeys) > 0 {
		pages, err := chat.MessagePages(ctx, op.scope, viewer, pageKeys)
		if err != nil {
			return err
		}
		for k, p := range pages {
			op.loaders.messagePages.Prime(k, p)
		}
	}
	op.scope.Yield()
	return nil
}

// intArg reads an Int argument as ArgumentMap returns it.
func intArg(v any) (int, bool) {
	switch n := v.(type) {
	case int:
		return n, true
	case int32:
		return int(n), true
	case int64:
		return int(n), true
	case float64:
		return int(n), n == float64(int(n))
	}
	return 0, false
}

// conversationFields returns the fields selected on the conversations of
// a connection: under edges.node and under nodes.
func conversationFields(ctx context.Context) []graphql.CollectedField {
	opCtx := graphql.GetOperationContext(ctx)
	var out []graphql.CollectedField
	for _, f := range graphql.CollectFieldsCtx(ctx, nil) {
		switch f.Name {
		case "nodes":
			out = append(out, graphql.CollectFields(opCtx, f.Selections, nil)...)
		case "edges":
			for _, e := range graphql.CollectFields(opCtx, f.Selections, nil) {
				if e.Name == "node" {
					out = append(out, graphql.CollectFields(opCtx, e.Selections, nil)...)
				}
			}
		}
	}
	return out
}
