package graph

import (
	"context"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"chatql/chat"
)

// Direct rendering of the inbox.
//
// gqlgen resolves every field of every object through its generic
// machinery (a field context, a context value, a boxed result and a
// marshaler closure per field) and marshals every list of objects with one
// goroutine per element. For the inbox, whose data is all prefetched in a
// few statements, that machinery was most of the server's CPU: about 32,000
// allocations and 300 goroutines for 20 conversations. renderInbox answers
// the conversations root field instead by writing its JSON straight from
// the prefetched rows, when every field selected under it is one it knows
// (everything reachable from a conversation except Message.conversation).
// Anything else (and any field middleware, which expects to see every
// field) takes gqlgen's path, which stays the reference: render_test.go
// checks that both write the same bytes.

// renderKind is what one selected field writes.
type renderKind uint8

const (
	kTypename renderKind = iota
	kID                  // the object's id
	kCursor              // an edge's cursor
	kEdges
	kNodes
	kNode
	kPageInfo
	kHasNextPage
	kEndCursor
	kTitle
	kCreatedAt
	kLastMessageAt
	kParticipants
	kLastMessage
	kMessages
	kUnreadCount
	kBody
	kAuthor
	kDisplayName
	kEmail
)

// renderFields maps each supported field, by type and name, to its kind
// and to the type of its value when that is an object (whose fields are
// planned in turn).
var renderFields = map[string]map[string]struct {
	kind renderKind
	typ  string
}{
	"ConversationConnection": {
		"edges": {kEdges, "ConversationEdge"}, "nodes": {kNodes, "Conversation"}, "pageInfo": {kPageInfo, "PageInfo"},
	},
	"ConversationEdge": {"cursor": {kCursor, ""}, "node": {kNode, "Conversation"}},
	"MessageConnection": {
		"edges": {kEdges, "MessageEdge"}, "nodes": {kNodes, "Message"}, "pageInfo": {kPageInfo, "PageInfo"},
	},
	"MessageEdge": {"cursor": {kCursor, ""}, "node": {kNode, "Message"}},
	"PageInfo":    {"hasNextPage": {kHasNextPage, ""}, "endCursor": {kEndCursor, ""}},
	"Conversation": {
		"id": {kID, ""}, "title": {kTitle, ""}, "createdAt": {kCreatedAt, ""}, "lastMessageAt": {kLastMessageAt, ""},
		"participants": {kParticipants, "User"}, "lastMessage": {kLastMessage, "Message"},
		"messages": {kMessages, "MessageConnection"}, "unreadCount": {kUnreadCount, ""},
	},
	"Message": {"id": {kID, ""}, "body": {kBody, ""}, "createdAt": {kCreatedAt, ""}, "author": {kAuthor, "User"}},
	"User":    {"id": {kID, ""}, "displayName": {kDisplayName, ""}, "email": {kEmail, ""}, "createdAt": {kCreatedAt, ""}},
}

// renderField is one selected field, planned once per operation.
type renderField struct {
	alias []byte // `"alias":`, quoted
	kind  renderKind
	// typename is the object's type, for __typename.
	typename string
	// page is a messages field's First and After.
	page chat.PageKey
	sub  []renderField
}

// planRender plans the fields selected on an object of type typ; false if
// one of them is not rendered directly.
func planRender(opCtx *graphql.OperationContext, sel ast.SelectionSet, typ string) ([]renderField, bool) {
	known := renderFields[typ]
	collected := graphql.CollectFields(opCtx, sel, []string{typ})
	out := make([]renderField, 0, len(collected))
	for _, f := range collected {
		rf := renderField{alias: appendQuoted(nil, f.Alias)}
		rf.alias = append(rf.alias, ':')
		if f.Name == "__typename" {
			rf.kind, rf.typename = kTypename, typ
			out = append(out, rf)
			continue
		}
		k, ok := known[f.Name]
		if !ok {
			return nil, false
		}
		rf.kind = k.kind
		if k.kind == kMessages {
			if rf.page, ok = pageArgs(f, opCtx.Variables); !ok {
				return nil, false // the resolver reports the bad argument
			}
		}
		if k.typ != "" {
			if rf.sub, ok = planRender(opCtx, f.Selections, k.typ); !ok {
				return nil, false
			}
		}
		out = append(out, rf)
	}
	return out, true
}

// renderInbox is root field middleware: it answers Query.conversations by
// rendering it directly when planRender can, and leaves every other root
// field to next.
func renderInbox(ctx context.Context, next graphql.RootResolver) graphql.Marshaler {
	rfc := graphql.GetRootFieldContext(ctx)
	if rfc == nil || rfc.Field.Name != "conversations" || rfc.Field.ObjectDefinition == nil || rfc.Field.ObjectDefinition.Name != "Query" {
		return next(ctx)
	}
	opCtx := graphql.GetOperationContext(ctx)
	args := rfc.Field.ArgumentMap(opCtx.Variables)
	first, ok1 := optionalInt(args["first"])
	after, ok2 := optionalString(args["after"])
	if !ok1 || !ok2 {
		return next(ctx)
	}
	plan, ok := planRender(opCtx, rfc.Field.Selections, "ConversationConnection")
	if !ok {
		return next(ctx)
	}
	// The field context gqlgen would have made: errors and leak warnings
	// name the field's path.
	ctx = graphql.WithFieldContext(ctx, &graphql.FieldContext{
		Object: "Query", Field: rfc.Field, Args: args, IsMethod: true, IsResolver: true,
	})
	page, data, err := inboxPage(ctx, first, after, conversationFields(ctx))
	if err != nil {
		opCtx.Error(ctx, err)
		return graphql.Null
	}
	r := &renderer{viewer: operationFrom(ctx).viewerID(), data: data}
	return graphql.WriterFunc(func(w io.Writer) {
		buf := renderBuffers.Get().(*[]byte)
		*buf = r.conversationConnection((*buf)[:0], page, plan)
		_, _ = w.Write(*buf)
		if cap(*buf) <= maxPooledRender {
			renderBuffers.Put(buf)
		}
	})
}

// renderBuffers holds the buffers responses are rendered into, so that a
// busy server reuses them; one larger than maxPooledRender is dropped.
var renderBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

const maxPooledRender = 1 << 20

// optionalInt reads a nullable Int argument: nil when absent or null.
func optionalInt(v any) (*int, bool) {
	if v == nil {
		return nil, true
	}
	n, ok := intArg(v)
	return &n, ok
}

// optionalString reads a nullable String argument.
func optionalString(v any) (*string, bool) {
	if v == nil {
		return nil, true
	}
	s, ok := v.(string)
	return &s, ok
}

// renderer writes one inbox page's JSON from its prefetched data.
type renderer struct {
	viewer string
	data   *prefetched
}

func (r *renderer) conversationConnection(b []byte, page chat.ConversationPage, fields []renderField) []byte {
	b = append(b, '{')
	for i := range fields {
		f := &fields[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, f.alias...)
		switch f.kind {
		case kTypename:
			b = appendQuoted(b, f.typename)
		case kEdges:
			b = append(b, '[')
			for j := range page.Conversations {
				if j > 0 {
					b = append(b, ',')
				}
				b = r.conversationEdge(b, &page.Conversations[j], f.sub)
			}
			b = append(b, ']')
		case kNodes:
			b = append(b, '[')
			for j := range page.Conversations {
				if j > 0 {
					b = append(b, ',')
				}
				b = r.conversation(b, &page.Conversations[j], f.sub)
			}
			b = append(b, ']')
		case kPageInfo:
			end := ""
			if n := len(page.Conversations); n > 0 {
				end = page.Conversations[n-1].Cursor()
			}
			b = pageInfo(b, page.HasNext, end, f.sub)
		}
	}
	return append(b, '}')
}

func (r *renderer) conversationEdge(b []byte, c *chat.Conversation, fields []renderField) []byte {
	b = append(b, '{')
	for i := range fields {
		f := &fields[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, f.alias...)
		switch f.kind {
		case kTypename:
			b = appendQuoted(b, f.typename)
		case kCursor:
			b = appendQuoted(b, c.Cursor())
		case kNode:
			b = r.conversation(b, c, f.sub)
		}
	}
	return append(b, '}')
}

func (r *renderer) conversation(b []byte, c *chat.Conversation, fields []renderField) []byte {
	b = append(b, '{')
	for i := range fields {
		f := &fields[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, f.alias...)
		switch f.kind {
		case kTypename:
			b = appendQuoted(b, f.typename)
		case kID:
			b = appendQuoted(b, c.ID)
		case kTitle:
			if c.Title == nil {
				b = append(b, "null"...)
			} else {
				b = appendQuoted(b, *c.Title)
			}
		case kCreatedAt:
			b = appendTime(b, c.CreatedAt)
		case kLastMessageAt:
			if c.LastMessageAt == nil {
				b = append(b, "null"...)
			} else {
				b = appendTime(b, *c.LastMessageAt)
			}
		case kUnreadCount:
			b = strconv.AppendInt(b, int64(r.data.unread[c.ID]), 10)
		case kParticipants:
			b = append(b, '[')
			for j, u := range r.data.participants[c.ID] {
				if j > 0 {
					b = append(b, ',')
				}
				b = r.user(b, &u, f.sub)
			}
			b = append(b, ']')
		case kLastMessage:
			if m := r.data.lastMessages[c.ID]; m != nil {
				b = r.message(b, m, f.sub)
			} else {
				b = append(b, "null"...)
			}
		case kMessages:
			key := f.page
			key.ConversationID = c.ID
			b = r.messageConnection(b, r.data.pages[key], f.sub)
		}
	}
	return append(b, '}')
}

func (r *renderer) messageConnection(b []byte, page chat.MessagePage, fields []renderField) []byte {
	b = append(b, '{')
	for i := range fields {
		f := &fields[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, f.alias...)
		switch f.kind {
		case kTypename:
			b = appendQuoted(b, f.typename)
		case kEdges, kNodes:
			b = append(b, '[')
			for j := range page.Messages {
				if j > 0 {
					b = append(b, ',')
				}
				if f.kind == kEdges {
					b = r.messageEdge(b, &page.Messages[j], f.sub)
				} else {
					b = r.message(b, &page.Messages[j], f.sub)
				}
			}
			b = append(b, ']')
		case kPageInfo:
			end := ""
			if n := len(page.Messages); n > 0 {
				end = page.Messages[n-1].Cursor()
			}
			b = pageInfo(b, page.HasNext, end, f.sub)
		}
	}
	return append(b, '}')
}

func (r *renderer) messageEdge(b []byte, m *chat.Message, fields []renderField) []byte {
	b = append(b, '{')
	for i := range fields {
		f := &fields[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, f.alias...)
		switch f.kind {
		case kTypename:
			b = appendQuoted(b, f.typename)
		case kCursor:
			b = appendQuoted(b, m.Cursor())
		case kNode:
			b = r.message(b, m, f.sub)
		}
	}
	return append(b, '}')
}

func (r *renderer) message(b []byte, m *chat.Message, fields []renderField) []byte {
	b = append(b, '{')
	for i := range fields {
		f := &fields[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, f.alias...)
		switch f.kind {
		case kTypename:
			b = appendQuoted(b, f.typename)
		case kID:
			b = appendQuoted(b, m.ID)
		case kBody:
			b = appendQuoted(b, m.Body)
		case kCreatedAt:
			b = appendTime(b, m.CreatedAt)
		case kAuthor:
			b = r.user(b, &m.Author, f.sub)
		}
	}
	return append(b, '}')
}

func (r *renderer) user(b []byte, u *chat.User, fields []renderField) []byte {
	b = append(b, '{')
	for i := range fields {
		f := &fields[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, f.alias...)
		switch f.kind {
		case kTypename:
			b = appendQuoted(b, f.typename)
		case kID:
			b = appendQuoted(b, u.ID)
		case kDisplayName:
			b = appendQuoted(b, u.DisplayName)
		case kCreatedAt:
			b = appendTime(b, u.CreatedAt)
		case kEmail:
			// As the email resolver: the viewer's own, if they have one.
			if u.ID == r.viewer && u.Email != "" {
				b = appendQuoted(b, u.Email)
			} else {
				b = append(b, "null"...)
			}
		}
	}
	return append(b, '}')
}

// pageInfo writes a PageInfo; end "" is a null endCursor (an empty page).
func pageInfo(b []byte, hasNext bool, end string, fields []renderField) []byte {
	b = append(b, '{')
	for i := range fields {
		f := &fields[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, f.alias...)
		switch f.kind {
		case kTypename:
			b = appendQuoted(b, f.typename)
		case kHasNextPage:
			b = strconv.AppendBool(b, hasNext)
		case kEndCursor:
			if end == "" {
				b = append(b, "null"...)
			} else {
				b = appendQuoted(b, end)
			}
		}
	}
	return append(b, '}')
}

// appendTime writes a Time as graphql.MarshalTime does.
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hexDigits = "0123456789ABCDEF"

// appendQuoted writes s as a JSON string exactly as gqlgen's
// graphql.MarshalString does.
func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '\\' && c != '"' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '\t':
			b = append(b, `\t`...)
		case '\r':
			b = append(b, `\r`...)
		case '\n':
			b = append(b, `\n`...)
		case '\\':
			b = append(b, `\\`...)
		case '"':
			b = append(b, `\"`...)
		default:
			b = append(b, `\u00`...)
			b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
