package chat_test

import "testing"

// TestReads checks every read against the read matrix (readable) on one
// world. Reads change nothing the others look at, so they share a database;
// each has a function of its own, next to its kind (conversations, messages,
// users, input).
func TestReads(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	t.Run("Inbox", func(t *testing.T) { testInbox(t, w) })
	t.Run("ConversationsByID", func(t *testing.T) { testConversationsByID(t, w) })
	t.Run("ParticipantsByConversation", func(t *testing.T) { testParticipantsByConversation(t, w) })
	t.Run("UnreadCounts", func(t *testing.T) { testUnreadCounts(t, w) })
	t.Run("MessagePages", func(t *testing.T) { testMessagePages(t, w) })
	t.Run("ConversationPages", func(t *testing.T) { testConversationPages(t, w) })
	t.Run("pages in any row order", func(t *testing.T) { testPagesInAnyRowOrder(t, w) })
	t.Run("LastMessages", func(t *testing.T) { testLastMessages(t, w) })
	t.Run("AnnouncedMessages", func(t *testing.T) { testAnnouncedMessages(t, w) })
	t.Run("UsersByID", func(t *testing.T) { testUsersByID(t, w) })
	t.Run("UserByID", func(t *testing.T) { testUserByID(t, w) })
	t.Run("bad input", func(t *testing.T) { testReadsRefuseBadInput(t, w) })
}
