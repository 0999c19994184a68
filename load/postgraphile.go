package load

// PostGraphile 4 on the load data set, for make bench-peers: what it needs
// in the database to answer the Inbox, and the Inbox in its schema.
//
// PostGraphile builds its schema from the tables; two functions give it
// what chatql's Inbox has and the tables alone do not: the viewer's
// conversations in order of last activity (a set-returning function,
// which it exposes as a root connection), and each conversation's unread
// count for the viewer (a computed column, which must live in the table's
// schema). The viewer is an argument: PostGraphile checks no token here,
// where chatql verifies one and checks the viewer's participation.

// PostGraphileSQL creates the two functions; it is run on the bench's own
// throwaway database only.
const PostGraphileSQL = `
CREATE OR REPLACE FUNCTION public.viewer_inbox(viewer uuid) RETURNS SETOF public.conversations
LANGUAGE sql STABLE AS $$
	SELECT c.* FROM public.conversation_participants p
	JOIN public.conversations c ON c.id = p.conversation_id
	WHERE p.user_id = viewer
	ORDER BY coalesce(c.last_message_at, c.created_at) DESC, c.id DESC
$$;
CREATE OR REPLACE FUNCTION public.conversations_unread_count(c public.conversations, viewer uuid) RETURNS int
LANGUAGE sql STABLE AS $$
	SELECT count(*)::int FROM public.messages m
	JOIN public.conversation_participants p ON p.conversation_id = m.conversation_id AND p.user_id = viewer
	WHERE m.conversation_id = c.id AND m.author_id <> viewer AND m.seq > p.last_read_seq
$$;
`

// PostGraphileInbox is chatql's Inbox (graph/inbox.graphql) in
// PostGraphile's schema: the same 20 conversations with their unread
// counts, participants, last message and latest 10 messages, and the same
// fields of each.
const PostGraphileInbox = `query Inbox($viewer: UUID!) {
  viewerInbox(viewer: $viewer, first: 20) { edges { node {
    id title unreadCount(viewer: $viewer)
    participants: conversationParticipantsByConversationId { nodes { userByUserId { id displayName } } }
    lastMessage: messagesByConversationId(first: 1, orderBy: [SEQ_DESC]) { nodes { id body author: userByAuthorId { id displayName } } }
    messages: messagesByConversationId(first: 10, orderBy: [SEQ_DESC]) { nodes { id body createdAt author: userByAuthorId { id displayName } } }
  } } }
}`

// PostGraphileVariables are a client's variables for PostGraphileInbox.
func PostGraphileVariables(c Client) map[string]any {
	return map[string]any{"viewer": c.UserID}
}
