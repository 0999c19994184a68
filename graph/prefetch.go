package graph

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/99designs/gqlgen/graphql"

	"chatql/chat"
)

// prefetched is what prefetchConversations loaded, by conversation id:
// the same data it primes the loaders with, for the direct rendering of
// the inbox (render.go), which reads it without going through them.
type prefetched struct {
	participants map[string][]chat.User
	unread       map[string]int
	// lastMessages holds nil for a conversation without messages.
	lastMessages map[string]*chat.Message
	pages        map[chat.PageKey]chat.MessagePage
}

// prefetchConversations loads, for a list of conversations just fetched,
// every relationship the query asks of them, one statement per
// relationship, and primes the loaders with the results. The element
// resolvers then find their data in the loader caches and never wait on a
// batch window, so the number of statements is fixed by the query's shape,
// whatever the list's length and however the goroutines are scheduled.
//
// unread, when not nil, holds the unread counts already (the inbox
// statement counts them). The last message of each conversation comes
// from its newest page when the query asks for one (messages without
// after): no statement of its own.
//
// fields are the fields selected on each conversation. Arguments that are
// invalid are skipped here: the field's own resolver reports them.
//
// Once the loaders are primed the connection goes back to the pool: what
// remains (resolving thousands of fields from the caches, encoding the
// response) is CPU work that other operations should not queue behind. A
// field that still needs SQL borrows again.
func prefetchConversations(ctx context.Context, convs []chat.Conversation, unread map[string]int, fields []graphql.CollectedField) (*prefetched, error) {
	out := &prefetched{}
	if len(convs) == 0 {
		return out, nil
	}
	op := operationFrom(ctx)
	viewer := op.viewerID()
	ids := make([]string, len(convs))
	for i, c := range convs {
		ids[i] = c.ID
		op.loaders.conversations.Prime(c.ID, c)
	}
	vars := graphql.GetOperationContext(ctx).Variables

	asked := map[string]bool{}
	pagesAsked := map[chat.PageKey]bool{} // by First and After
	newest := 0                           // First of a page without After, if any
	var pageKeys []chat.PageKey
	for _, f := range fields {
		if f.Name != "messages" {
			asked[f.Name] = true
			continue
		}
		page, ok := pageArgs(f, vars)
		if !ok || pagesAsked[page] {
			continue // invalid (its resolver reports it), or asked twice: under nodes and edges, say
		}
		pagesAsked[page] = true
		if page.After == "" {
			newest = max(newest, page.First)
		}
		for _, id := range ids {
			pageKeys = append(pageKeys, chat.PageKey{ConversationID: id, First: page.First, After: page.After})
		}
	}
	if asked["participants"] {
		m, err := chat.ParticipantsByConversation(ctx, op.scope, viewer, ids)
		if err != nil {
			return nil, err
		}
		out.participants = fillMissing(m, ids)
		for _, id := range ids {
			op.loaders.participants.Prime(id, m[id])
		}
	}
	if asked["unreadCount"] {
		if unread == nil {
			m, err := chat.UnreadCounts(ctx, op.scope, viewer, ids)
			if err != nil {
				return nil, err
			}
			unread = m
		}
		out.unread = fillMissing(unread, ids)
		for _, id := range ids {
			op.loaders.unread.Prime(id, unread[id])
		}
	}
	if len(pageKeys) > 0 {
		// The participants just loaded are most of the pages' authors.
		known := map[string]chat.User{}
		for _, users := range out.participants {
			for _, u := range users {
				known[u.ID] = u
			}
		}
		pages, err := chat.ConversationPages(ctx, op.scope, viewer, convs, pageKeys, known)
		if err != nil {
			return nil, err
		}
		out.pages = pages
		for k, p := range pages {
			op.loaders.messagePages.Prime(k, p)
		}
	}
	if asked["lastMessage"] {
		if newest > 0 {
			// The newest message heads the newest page.
			out.lastMessages = make(map[string]*chat.Message, len(ids))
			for _, id := range ids {
				var last *chat.Message
				if p := out.pages[chat.PageKey{ConversationID: id, First: newest}]; len(p.Messages) > 0 {
					last = &p.Messages[0]
				}
				out.lastMessages[id] = last
			}
		} else {
			m, err := lastMessagesByConversation(ctx, op.scope, viewer, ids)
			if err != nil {
				return nil, err
			}
			out.lastMessages = m
		}
		for _, id := range ids {
			op.loaders.lastMessages.Prime(id, out.lastMessages[id])
		}
	}
	op.scope.Yield()
	return out, nil
}

// pageArgs reads a messages field's arguments; false if they are invalid.
func pageArgs(f graphql.CollectedField, vars map[string]any) (chat.PageKey, bool) {
	args := f.ArgumentMap(vars)
	first, ok := intArg(args["first"])
	after, _ := args["after"].(string)
	if !ok || chat.ValidateMessageCursor("after", after) != nil {
		return chat.PageKey{}, false
	}
	if _, err := chat.PageSize("first", first); err != nil {
		return chat.PageKey{}, false
	}
	return chat.PageKey{First: first, After: after}, true
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
	case json.Number: // a variable's value
		i, err := n.Int64()
		return int(i), err == nil && i == int64(int(i))
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

// inboxPage loads a page of the viewer's conversations and prefetches
// what fields (those selected on each conversation) ask of them.
func inboxPage(ctx context.Context, first *int, after *string, fields []graphql.CollectedField) (chat.ConversationPage, *prefetched, error) {
	if _, err := requireViewer(ctx); err != nil {
		return chat.ConversationPage{}, nil, err
	}
	op := operationFrom(ctx)
	inbox := chat.Inbox
	if slices.ContainsFunc(fields, func(f graphql.CollectedField) bool { return f.Name == "unreadCount" }) {
		inbox = chat.InboxWithUnread
	}
	page, err := inbox(ctx, op.scope, op.viewerID(), deref(first, 20), deref(after, ""))
	if err != nil {
		return chat.ConversationPage{}, nil, err
	}
	data, err := prefetchConversations(ctx, page.Conversations, page.Unread, fields)
	if err != nil {
		return chat.ConversationPage{}, nil, err
	}
	return page, data, nil
}
