package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/99designs/gqlgen/graphql"

	"chatql/graph"
)

// TestInboxRenderedDirectly: the conversations field rendered directly
// from the prefetched rows (graph/render.go) is byte for byte what gqlgen's
// own resolvers write, for the inbox and for the shapes around it:
// aliases, fragments, directives, __typename, edges and cursors, pages
// after a cursor, variables, nulls, the viewer's email and strings that
// need escaping. The reference is a second server on the same database
// with a field middleware, which turns the direct rendering off.
func TestInboxRenderedDirectly(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	token, _ := a.seedInbox(23, 12)
	var viewer string
	var me struct{ Me struct{ ID string } }
	a.post(token, `{ me { id } }`, nil).into(t, &me)
	viewer = me.Me.ID
	other, _ := a.user("Quote \" back\\slash \t tab \u0001 ctl é")
	a.conversation("", []string{viewer, other})                                                  // no title, no messages
	a.conversation("line\nbreak \"title\"", []string{viewer, other}, "a \"body\"\n", "<b>&</b>") // most recent
	generic := startAPI(t, a.dbURL, a.admin, a.tokens, []func(*apiOptions){func(o *apiOptions) {
		o.fieldMiddleware = func(ctx context.Context, next graphql.Resolver) (any, error) { return next(ctx) }
	}})

	var page struct {
		Conversations struct {
			Nodes []struct {
				Messages struct{ PageInfo struct{ EndCursor string } }
			}
		}
	}
	a.post(token, `{ conversations(first: 5) { nodes { messages(first: 3) { pageInfo { endCursor } } } } }`, nil).into(t, &page)
	cursor := page.Conversations.Nodes[2].Messages.PageInfo.EndCursor

	for _, tc := range []struct {
		name, query string
		vars        map[string]any
	}{
		{"inbox", graph.InboxQuery, nil},
		{"everything", `{ conversations(first: 30) { __typename
			pageInfo { __typename hasNextPage endCursor }
			edges { __typename cursor node { id title createdAt lastMessageAt unreadCount
				participants { __typename id displayName email createdAt }
				lastMessage { id body createdAt author { id email } }
				messages(first: 4) { __typename pageInfo { hasNextPage endCursor }
					edges { __typename cursor node { __typename id body createdAt author { displayName } } } } } } } }`, nil},
		{"aliases and fragments", `query Q { c: conversations { ...Conn } }
			fragment Conn on ConversationConnection { nodes { ...Conv k: id } pageInfo { endCursor } }
			fragment Conv on Conversation { id t: title newest: messages(first: 1) { nodes { id } }
				older: messages(first: 2, after: "` + cursor + `") { nodes { b: body } pageInfo { hasNextPage } }
				... on Conversation { unreadCount } }`, nil},
		{"variables and directives", `query Q($n: Int, $m: Int!, $skip: Boolean!, $after: String) {
			conversations(first: $n, after: $after) { nodes { id lastMessage @skip(if: $skip) { id }
				messages(first: $m) @include(if: $skip) { nodes { id } } participants @skip(if: $skip) { id } } } }`,
			map[string]any{"n": 7, "m": 2, "skip": true, "after": nil}},
		{"last message without a page", `{ conversations(first: 3) { nodes { lastMessage { body author { id } } } } }`, nil},
		{"empty page", `{ conversations(first: 2, after: "` + emptyAfter(t, a, token) + `") { edges { cursor } pageInfo { hasNextPage endCursor } } }`, nil},
	} {
		direct := a.post(token, tc.query, tc.vars)
		ref := generic.post(token, tc.query, tc.vars)
		if !direct.ok() || !ref.ok() {
			t.Fatalf("%s: direct %s\nreference %s", tc.name, direct.Raw, ref.Raw)
		}
		if !bytes.Equal(direct.Data, ref.Data) {
			t.Errorf("%s: rendered directly:\n%s\nby gqlgen:\n%s", tc.name, direct.Data, ref.Data)
		}
		if direct.Extensions.DB.Statements != ref.Extensions.DB.Statements {
			t.Errorf("%s: %d statements rendered directly, %d by gqlgen", tc.name,
				direct.Extensions.DB.Statements, ref.Extensions.DB.Statements)
		}
	}

	// Errors take the same path too: the direct rendering reports them on
	// the field, as the resolver does.
	for _, q := range []string{`{ conversations(first: 0) { nodes { id } } }`, `{ conversations(after: "nope") { nodes { id } } }`} {
		direct, ref := a.post(token, q, nil), generic.post(token, q, nil)
		if !bytes.Equal(direct.Raw, ref.Raw) && string(direct.Data) != string(ref.Data) {
			t.Errorf("%s: direct %s, reference %s", q, direct.Raw, ref.Raw)
		}
		if got, want := direct.codes(), ref.codes(); len(got) != 1 || len(want) != 1 || got[0] != want[0] {
			t.Errorf("%s: codes %v, want %v", q, got, want)
		}
	}
	if direct, ref := a.post("", graph.InboxQuery, nil), generic.post("", graph.InboxQuery, nil); string(direct.Data) != string(ref.Data) ||
		len(direct.codes()) != 1 || direct.codes()[0] != ref.codes()[0] {
		t.Errorf("signed out: direct %s, reference %s", direct.Raw, ref.Raw)
	}
}

// emptyAfter is the cursor of the viewer's oldest conversation: nothing
// comes after it.
func emptyAfter(t *testing.T, a *testAPI, token string) string {
	var out struct {
		Conversations struct{ PageInfo struct{ EndCursor string } }
	}
	a.post(token, `{ conversations(first: 100) { pageInfo { endCursor } } }`, nil).into(t, &out)
	return out.Conversations.PageInfo.EndCursor
}
