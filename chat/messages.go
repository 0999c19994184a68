package chat

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"chatql/dbpool"
	"chatql/realtime"
)

const messageColumns = "m.id, m.conversation_id, m.seq, m.body, m.created_at, " + userColumns

// messageDest is where messageColumns scan to, in their order.
func messageDest(m *Message) []any {
	return []any{&m.ID, &m.ConversationID, &m.Seq, &m.Body, &m.CreatedAt,
		&m.Author.ID, &m.Author.Email, &m.Author.DisplayName, &m.Author.CreatedAt}
}

func scanMessage(row pgx.CollectableRow) (Message, error) {
	var m Message
	err := row.Scan(messageDest(&m)...)
	return m, err
}

// PageKey identifies one page of one conversation's messages: First
// messages older than the cursor After ("" for the newest).
type PageKey struct {
	ConversationID string
	First          int
	After          string
}

// MessagePage is one page of a conversation's messages, newest first.
type MessagePage struct {
	Messages []Message
	HasNext  bool
}

// MessagePages loads many pages in one statement. Pages of conversations the
// viewer does not take part in come back empty. Keys must have been checked
// (PageSize, ValidateMessageCursor).
func MessagePages(ctx context.Context, db dbpool.DB, viewer string, keys []PageKey) (map[PageKey]MessagePage, error) {
	return loadPages(ctx, db, keys, `
		SELECT k.idx::int, `+messageColumns+`
		FROM unnest($1::uuid[], $2::int[], $3::bigint[]) WITH ORDINALITY
		     AS k(conv, lim, before_seq, idx)
		JOIN conversation_participants v ON v.conversation_id = k.conv AND v.user_id = $4
		CROSS JOIN LATERAL (
			SELECT * FROM messages m
			WHERE m.conversation_id = k.conv
			  AND (k.before_seq IS NULL OR m.seq < k.before_seq)
			ORDER BY m.seq DESC
			LIMIT k.lim
		) m
		JOIN users u ON u.id = m.author_id`, []any{viewer}, messageDest)
}

// ConversationPages is MessagePages for the conversations of convs, which
// the caller loaded for viewer through a statement that checked the viewer
// takes part in them (Inbox, InboxWithUnread, ConversationsByID): an inbox
// asks for pages of the conversations it has just listed. Its statement
// checks nothing again and joins no author: those are the two costliest
// parts of MessagePages' statement, about half of the Postgres CPU of a
// full Inbox. Authors are taken from known (the participants of convs,
// typically, loaded just before) and those not there are loaded in one
// more statement.
//
// A key of a conversation not in convs, or not loaded for viewer, makes
// the whole call check as MessagePages does.
func ConversationPages(ctx context.Context, db dbpool.DB, viewer string, convs []Conversation, keys []PageKey, known map[string]User) (map[PageKey]MessagePage, error) {
	checked := make(map[string]bool, len(convs))
	for _, c := range convs {
		checked[c.ID] = c.loadedFor != "" && c.loadedFor == viewer
	}
	listed := true
	for _, k := range keys {
		listed = listed && checked[k.ConversationID]
	}
	join, args := "", []any(nil)
	if !listed {
		join, args = "JOIN conversation_participants v ON v.conversation_id = k.conv AND v.user_id = $4", []any{viewer}
	}
	pages, err := loadPages(ctx, db, keys, `
		SELECT k.idx::int, m.id, m.seq, m.body, m.created_at, m.author_id
		FROM unnest($1::uuid[], $2::int[], $3::bigint[]) WITH ORDINALITY
		     AS k(conv, lim, before_seq, idx)
		`+join+`
		CROSS JOIN LATERAL (
			SELECT * FROM messages m
			WHERE m.conversation_id = k.conv
			  AND (k.before_seq IS NULL OR m.seq < k.before_seq)
			ORDER BY m.seq DESC
			LIMIT k.lim
		) m`, args, func(m *Message) []any {
		return []any{&m.ID, &m.Seq, &m.Body, &m.CreatedAt, &m.Author.ID}
	})
	if err != nil {
		return nil, err
	}
	if err := fillAuthors(ctx, db, pages, known); err != nil {
		return nil, err
	}
	return pages, nil
}

// fillAuthors completes the authors of the messages of pages, which hold
// only their IDs, from known, and from one statement for the others.
func fillAuthors(ctx context.Context, db dbpool.DB, pages map[PageKey]MessagePage, known map[string]User) error {
	var missing []string
	seen := map[string]bool{}
	for _, p := range pages {
		for i := range p.Messages {
			a := &p.Messages[i].Author
			if u, ok := known[a.ID]; ok {
				*a = u
			} else if !seen[a.ID] {
				seen[a.ID] = true
				missing = append(missing, a.ID)
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	users, err := UsersByID(ctx, db, missing)
	if err != nil {
		return fmt.Errorf("load authors: %w", err)
	}
	for _, p := range pages {
		for i := range p.Messages {
			a := &p.Messages[i].Author
			if u, ok := users[a.ID]; ok {
				*a = u
			}
		}
	}
	return nil
}

// newestFirst orders a page's messages.
func newestFirst(a, b Message) int { return cmp.Compare(b.Seq, a.Seq) }

// loadPages runs query, a statement of MessagePages' shape: its first
// three arguments are the keys' conversations, row limits and cursors (in
// that order; more may follow), and each row is the key's position (from
// 1) and then a message, which dest says where to scan; the message's
// conversation is the key's.
func loadPages(ctx context.Context, db dbpool.DB, keys []PageKey, query string, more []any, dest func(*Message) []any) (map[PageKey]MessagePage, error) {
	convs := make([]string, len(keys))
	limits := make([]int32, len(keys))
	before := make([]*int64, len(keys))
	for i, k := range keys {
		seq, err := parseMessageCursor("after", k.After)
		if err != nil {
			return nil, err
		}
		if _, err := PageSize("first", k.First); err != nil {
			return nil, err
		}
		convs[i], limits[i] = k.ConversationID, int32(k.First+1)
		if seq != 0 {
			before[i] = &seq
		}
	}
	// Rows are scanned straight into their pages, each sized for a
	// short page up front: an inbox reads hundreds of messages, and collecting
	// them in a slice first doubled its allocations.
	pages := make([]MessagePage, len(keys))
	for i, k := range keys {
		pages[i].Messages = make([]Message, 0, min(k.First+1, 21))
	}
	err := db.Rows(ctx, query, append([]any{convs, limits, before}, more...),
		func(rows pgx.Rows) error {
			var idx int
			var m Message
			dest := append([]any{&idx}, dest(&m)...)
			for rows.Next() {
				if err := rows.Scan(dest...); err != nil {
					return err
				}
				if idx < 1 || idx > len(keys) {
					return fmt.Errorf("page %d of %d", idx, len(keys))
				}
				m.ConversationID = keys[idx-1].ConversationID
				// Pages are built per position, so that a key given twice
				// gets its page once rather than its rows twice.
				pages[idx-1].Messages = append(pages[idx-1].Messages, m)
			}
			return rows.Err()
		})
	if err != nil {
		return nil, fmt.Errorf("load messages: %w", err)
	}
	// The statements leave rows in the order PostgreSQL finds them rather
	// than sort them (a sort of every row was a tenth of the statement's
	// CPU): each page is put newest first here, almost always already, and
	// its row past First only says there is a next page.
	for i, k := range keys {
		p := &pages[i]
		if !slices.IsSortedFunc(p.Messages, newestFirst) {
			slices.SortFunc(p.Messages, newestFirst)
		}
		if len(p.Messages) > k.First {
			p.Messages, p.HasNext = p.Messages[:k.First], true
		}
	}
	out := make(map[PageKey]MessagePage, len(keys))
	for i, k := range keys {
		out[k] = pages[i]
	}
	return out, nil
}

// LastMessages loads the newest message of each conversation among ids that
// the viewer takes part in; conversations without messages are absent.
func LastMessages(ctx context.Context, db dbpool.DB, viewer string, ids []string) (map[string]Message, error) {
	msgs, err := dbpool.Collect(ctx, db, `
		SELECT `+messageColumns+`
		FROM conversation_participants v
		CROSS JOIN LATERAL (
			SELECT * FROM messages m
			WHERE m.conversation_id = v.conversation_id
			ORDER BY m.seq DESC
			LIMIT 1
		) m
		JOIN users u ON u.id = m.author_id
		WHERE v.conversation_id = ANY($1::uuid[]) AND v.user_id = $2`, []any{ids, viewer}, scanMessage)
	if err != nil {
		return nil, fmt.Errorf("load last messages: %w", err)
	}
	out := make(map[string]Message, len(msgs))
	for _, m := range msgs {
		out[m.ConversationID] = m
	}
	return out, nil
}

// SendMessage posts a message as the viewer. Run it in a transaction: the
// message, the conversation's sequence and lastMessageAt, and the sender's
// read mark change together or not at all, and the conversation stays
// locked until the transaction ends, which is what puts its messages in
// commit order. Keep that transaction short.
func SendMessage(ctx context.Context, db dbpool.DB, viewer, conversationID, body string) (Message, error) {
	body = strings.TrimSpace(body)
	if err := textLength("body", body, 1, MaxBodyLength); err != nil {
		return Message{}, err
	}
	// The conversation's lock comes first, as in MarkRead and
	// AddParticipant: taking a participant row first would deadlock with
	// them. Only a participant takes it; whether they still are is checked
	// again below, under the lock, by a statement that sees what was
	// committed while it waited.
	tag, err := db.Exec(ctx, `
		SELECT 1 FROM conversations c
		WHERE c.id = $1
		  AND EXISTS (SELECT 1 FROM conversation_participants p WHERE p.conversation_id = c.id AND p.user_id = $2)
		FOR NO KEY UPDATE`, conversationID, viewer)
	if err != nil {
		return Message{}, fmt.Errorf("lock conversation: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return Message{}, fmt.Errorf("conversation %s: %w", conversationID, ErrNotFound)
	}
	// The insert takes the next seq and the time, and moves lastMessageAt
	// (the triggers of migration 00002); the sender has read up to it.
	msg, err := dbpool.CollectOne(ctx, db, `
		WITH m AS (
			INSERT INTO messages (conversation_id, author_id, body)
			SELECT $1, $2, $3
			WHERE EXISTS (SELECT 1 FROM conversation_participants WHERE conversation_id = $1 AND user_id = $2)
			RETURNING *
		), r AS (
			UPDATE conversation_participants p
			SET last_read_seq = greatest(p.last_read_seq, m.seq), last_read_at = greatest(p.last_read_at, m.created_at)
			FROM m WHERE p.conversation_id = m.conversation_id AND p.user_id = m.author_id
		)
		SELECT `+messageColumns+` FROM m JOIN users u ON u.id = m.author_id`,
		[]any{conversationID, viewer, body}, scanMessage)
	if errors.Is(err, pgx.ErrNoRows) {
		return Message{}, fmt.Errorf("conversation %s: %w", conversationID, ErrNotFound)
	}
	if err != nil {
		return Message{}, fmt.Errorf("insert message: %w", err)
	}
	if err := announce(ctx, db, msg); err != nil {
		return Message{}, err
	}
	return msg, nil
}

// announce tells the realtime listeners about msg when the transaction
// commits.
func announce(ctx context.Context, db dbpool.DB, msg Message) error {
	return realtime.Announce(ctx, db, realtime.Event{
		ID: msg.ID, ConversationID: msg.ConversationID, Seq: msg.Seq, CreatedAt: msg.CreatedAt,
	})
}

// MessagesSince is the realtime hub's catch-up after its listener
// reconnects (realtime.MissedFunc): for each conversation in after whose
// messages went past the seq given (0: any), an event for its newest
// message. One per conversation is enough: a subscriber loads every
// message between the last it delivered and the one announced.
func MessagesSince(ctx context.Context, db dbpool.DB, after map[string]int64) ([]realtime.Event, error) {
	convs := make([]string, 0, len(after))
	seqs := make([]int64, 0, len(after))
	for c, seq := range after {
		convs, seqs = append(convs, c), append(seqs, seq)
	}
	events, err := dbpool.Collect(ctx, db, `
		SELECT m.id, m.conversation_id, m.seq, m.created_at
		FROM unnest($1::uuid[], $2::bigint[]) AS k(conv, after_seq)
		CROSS JOIN LATERAL (
			SELECT * FROM messages m
			WHERE m.conversation_id = k.conv AND m.seq > k.after_seq
			ORDER BY m.seq DESC
			LIMIT 1
		) m`, []any{convs, seqs}, func(r pgx.CollectableRow) (realtime.Event, error) {
		var e realtime.Event
		err := r.Scan(&e.ID, &e.ConversationID, &e.Seq, &e.CreatedAt)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("messages since: %w", err)
	}
	return events, nil
}

// Announced is a run of a conversation's messages as its realtime
// subscribers are sent them, with the conversation and its participants
// as the same statement saw them: each subscriber is checked against those
// participants.
type Announced struct {
	Conversation Conversation
	Participants []string
	// Messages are the run, oldest first; each one's Conversation points
	// to the one above.
	Messages []Message
}

// AnnouncedMessages loads, for any viewer, at most limit messages of a
// conversation after the seq given, oldest first: one statement serves
// every subscriber of the conversation, however many messages were
// announced meanwhile. Nothing after it (or no such conversation) is an
// empty run.
func AnnouncedMessages(ctx context.Context, db dbpool.DB, conversationID string, after int64, limit int) (Announced, error) {
	var an Announced
	msgs, err := dbpool.Collect(ctx, db, `
		SELECT `+conversationColumns+`, p.ids, `+messageColumns+`
		FROM conversations c
		CROSS JOIN LATERAL (
			SELECT coalesce(array_agg(p.user_id), '{}') AS ids
			FROM conversation_participants p WHERE p.conversation_id = c.id
		) p
		CROSS JOIN LATERAL (
			SELECT * FROM messages m
			WHERE m.conversation_id = c.id AND m.seq > $2
			ORDER BY m.seq
			LIMIT $3
		) m
		JOIN users u ON u.id = m.author_id
		WHERE c.id = $1
		ORDER BY m.seq`, []any{conversationID, after, limit}, func(row pgx.CollectableRow) (Message, error) {
		var m Message
		err := row.Scan(append(append(conversationDest(&an.Conversation), &an.Participants), messageDest(&m)...)...)
		return m, err
	})
	if err != nil {
		return Announced{}, fmt.Errorf("load announced messages: %w", err)
	}
	for i := range msgs {
		msgs[i].Conversation = &an.Conversation
	}
	an.Messages = msgs
	return an, nil
}
