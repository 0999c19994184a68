package chat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/chat"
	"chatql/dbpool"
	"chatql/realtime"
)

// Tests of the one order a conversation's messages have (the order they
// were committed in) and of read marks taken in that order. Transactions
// are interleaved explicitly with heldTx: a test decides when each step
// runs and when each transaction commits.

// heldTx is a transaction on a pooled connection that stays open between
// steps until commit.
type heldTx struct {
	steps chan func(ctx context.Context, db dbpool.DB) error
	errs  chan error
	done  chan struct{} // closed when the transaction has ended, with err
	err   error
	pid   int
}

func beginHeld(t *testing.T, p *dbpool.Pool) *heldTx {
	t.Helper()
	h := &heldTx{
		steps: make(chan func(context.Context, dbpool.DB) error),
		errs:  make(chan error, 1), // a step left running by a failed test does not block its end
		done:  make(chan struct{}),
	}
	go func() {
		defer close(h.done)
		h.err = p.WithTx(context.Background(), func(db dbpool.DB) error {
			for step := range h.steps {
				if step == nil {
					return nil
				}
				h.errs <- step(context.Background(), db)
			}
			return errors.New("rolled back")
		})
	}()
	if err := h.do(func(ctx context.Context, db dbpool.DB) error {
		var err error
		h.pid, err = dbpool.CollectOne(ctx, db, "SELECT pg_backend_pid()", nil, pgx.RowTo[int])
		return err
	}); err != nil {
		t.Fatalf("begin: %v", err)
	}
	t.Cleanup(func() {
		select {
		case h.steps <- nil: // a test that failed half way: end it
			<-h.done
		case <-h.done:
		}
	})
	return h
}

// start runs step in the transaction without waiting for it; the returned
// channel gives its error.
func (h *heldTx) start(step func(ctx context.Context, db dbpool.DB) error) <-chan error {
	h.steps <- step
	return h.errs
}

// do runs step in the transaction and waits for it.
func (h *heldTx) do(step func(ctx context.Context, db dbpool.DB) error) error {
	return <-h.start(step)
}

// commit commits the transaction; it must have no step running.
func (h *heldTx) commit() error {
	h.steps <- nil
	<-h.done
	return h.err
}

// blockedOrDone waits until the transaction's current step, whose result
// comes on done, either ends or waits for a lock held by another
// transaction. It reports whether it was blocked.
func blockedOrDone(t *testing.T, w *world, h *heldTx, done <-chan error) (blocked bool, err error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-done:
			return false, err
		default:
		}
		waiting, err := dbpool.CollectOne(t.Context(), w.db,
			"SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1", []any{h.pid}, pgx.RowTo[bool])
		if err != nil {
			t.Fatalf("watch backend %d: %v", h.pid, err)
		}
		if waiting {
			return true, nil
		}
		if time.Now().After(deadline) {
			t.Fatal("the step neither ended nor waited for a lock")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestMessageOrderIsCommitOrder: a message whose transaction started first
// but committed second is the newer one, everywhere: in pages and their
// cursors, as the last message, in its createdAt, and in the order its
// announcement arrives.
func TestMessageOrderIsCommitOrder(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	conv := w.mustCreate(t, w.alice, "race", w.bob)
	listener := w.listen(t)

	// Alice's transaction starts first, Bob's send commits meanwhile, then
	// Alice sends and commits.
	early := beginHeld(t, w.pool)
	if err := early.do(func(ctx context.Context, db dbpool.DB) error {
		_, err := db.Exec(ctx, "SELECT now()")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	first := w.mustSend(t, w.bob, conv.ID, "committed first")
	var second chat.Message
	if err := early.do(func(ctx context.Context, db dbpool.DB) error {
		var err error
		second, err = chat.SendMessage(ctx, db, w.alice.ID, conv.ID, "committed second")
		return err
	}); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	if err := early.commit(); err != nil {
		t.Fatalf("commit: %v", err)
	}

	want := []string{second.ID, first.ID} // newest first
	if got := w.messageIDs(t, w.bob.ID, conv.ID); !slices.Equal(got, want) {
		t.Errorf("page = %v, want %v (newest, i.e. last committed, first)", got, want)
	}
	if second.CreatedAt.Before(first.CreatedAt) {
		t.Errorf("createdAt went backwards: %v committed after %v", second.CreatedAt, first.CreatedAt)
	}
	// Paging with the first message's cursor gives the other.
	top := chat.PageKey{ConversationID: conv.ID, First: 1}
	pages, err := chat.MessagePages(t.Context(), w.db, w.bob.ID, []chat.PageKey{top})
	if err != nil {
		t.Fatalf("MessagePages: %v", err)
	}
	rest := chat.PageKey{ConversationID: conv.ID, First: chat.MaxPageSize, After: pages[top].Messages[0].Cursor()}
	pages, err = chat.MessagePages(t.Context(), w.db, w.bob.ID, []chat.PageKey{rest})
	if err != nil {
		t.Fatalf("MessagePages: %v", err)
	}
	if got := messageIDs(pages[rest].Messages); !slices.Equal(got, want[1:]) {
		t.Errorf("page after the newest's cursor = %v, want %v", got, want[1:])
	}
	last, err := chat.LastMessages(t.Context(), w.db, w.bob.ID, []string{conv.ID})
	if err != nil {
		t.Fatalf("LastMessages: %v", err)
	}
	if got := last[conv.ID].ID; got != second.ID {
		t.Errorf("last message %s, want %s (committed last)", got, second.ID)
	}
	if at := w.conversation(t, w.bob.ID, conv.ID).LastMessageAt; at == nil || !at.Equal(second.CreatedAt) {
		t.Errorf("lastMessageAt %v, want %v", at, second.CreatedAt)
	}
	if got := listener.ids(t, 2); !slices.Equal(got, []string{first.ID, second.ID}) {
		t.Errorf("announced %v, want %v (commit order)", got, []string{first.ID, second.ID})
	}
}

// TestMarkReadWaitsForSend: a read mark taken while a message is being
// sent (its transaction open) never counts that message as read unless the
// mark's transaction could see it: either the mark waits for the send and
// includes it, or the message stays unread.
func TestMarkReadWaitsForSend(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	conv := w.mustCreate(t, w.alice, "marks", w.bob, w.carol)
	w.mustSend(t, w.bob, conv.ID, "seen")

	send := beginHeld(t, w.pool)
	var msg chat.Message
	if err := send.do(func(ctx context.Context, db dbpool.DB) error {
		var err error
		msg, err = chat.SendMessage(ctx, db, w.bob.ID, conv.ID, "in flight")
		return err
	}); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}

	mark := beginHeld(t, w.pool)
	var visible []string
	marked := mark.start(markRead(w.carol.ID, conv.ID, &visible))
	blocked, err := blockedOrDone(t, w, mark, marked)
	if err != nil {
		t.Fatalf("MarkRead: %v", err)
	}
	if !blocked {
		// The mark is taken without the message: committing it first must
		// leave the message unread.
		if err := mark.commit(); err != nil {
			t.Fatalf("commit mark: %v", err)
		}
		if err := send.commit(); err != nil {
			t.Fatalf("commit send: %v", err)
		}
	} else {
		if err := send.commit(); err != nil {
			t.Fatalf("commit send: %v", err)
		}
		if err := <-marked; err != nil {
			t.Fatalf("MarkRead: %v", err)
		}
		if err := mark.commit(); err != nil {
			t.Fatalf("commit mark: %v", err)
		}
	}
	want := 0
	if !slices.Contains(visible, msg.ID) {
		want = 1
	}
	if n := w.unread(t, w.carol.ID, conv.ID)[conv.ID]; n != want {
		t.Errorf("unread %d, want %d (mark blocked: %v; the mark's transaction saw %v, the message is %s)", n, want, blocked, visible, msg.ID)
	}
	if !blocked {
		t.Errorf("the read mark did not wait for the send in flight")
	}
}

// TestSendWaitsForMarkRead: a message sent while a read mark's transaction
// is open commits after the mark, and so is unread.
func TestSendWaitsForMarkRead(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	conv := w.mustCreate(t, w.alice, "marks", w.bob, w.carol)
	w.mustSend(t, w.bob, conv.ID, "seen")

	mark := beginHeld(t, w.pool)
	var visible []string
	if err := mark.do(markRead(w.carol.ID, conv.ID, &visible)); err != nil {
		t.Fatalf("MarkRead: %v", err)
	}
	send := beginHeld(t, w.pool)
	var msg chat.Message
	sent := send.start(func(ctx context.Context, db dbpool.DB) error {
		var err error
		msg, err = chat.SendMessage(ctx, db, w.bob.ID, conv.ID, "after the mark")
		return err
	})
	blocked, err := blockedOrDone(t, w, send, sent)
	if err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	if err := mark.commit(); err != nil {
		t.Fatalf("commit mark: %v", err)
	}
	if blocked {
		if err := <-sent; err != nil {
			t.Fatalf("SendMessage: %v", err)
		}
	}
	if err := send.commit(); err != nil {
		t.Fatalf("commit send: %v", err)
	}
	if slices.Contains(visible, msg.ID) {
		t.Fatalf("the mark's transaction saw a message sent after it")
	}
	if n := w.unread(t, w.carol.ID, conv.ID)[conv.ID]; n != 1 {
		t.Errorf("unread %d, want 1", n)
	}
}

// markRead is a step that marks conv read as viewer, then lists in visible
// the ids of the messages its transaction sees.
func markRead(viewer, conv string, visible *[]string) func(ctx context.Context, db dbpool.DB) error {
	return func(ctx context.Context, db dbpool.DB) error {
		if _, err := chat.MarkRead(ctx, db, viewer, conv); err != nil {
			return err
		}
		var err error
		*visible, err = dbpool.Collect(ctx, db, "SELECT id::text FROM messages WHERE conversation_id = $1", []any{conv}, pgx.RowTo[string])
		return err
	}
}

// runWorkers runs each worker's steps in order, the workers at once, and
// fails the test with the first error.
func runWorkers(t *testing.T, workers [][]func() error) {
	t.Helper()
	errs := make(chan error, len(workers))
	for _, steps := range workers {
		go func() {
			for _, step := range steps {
				if err := step(); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatalf("racing writes: %v", err)
		}
	}
}

// announcements receives what is announced on realtime.Channel, on a
// connection of its own.
type announcements struct{ conn *pgx.Conn }

func (w *world) listen(t *testing.T) *announcements {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), w.url)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(t.Context(), "LISTEN "+pgx.Identifier{realtime.Channel}.Sanitize()); err != nil {
		t.Fatalf("listen: %v", err)
	}
	return &announcements{conn: conn}
}

// ids returns the message ids of the next n announcements, in the order
// they arrive.
func (a *announcements) ids(t *testing.T, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var ids []string
	for range n {
		note, err := a.conn.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("after %d announcements: %v", len(ids), err)
		}
		var e realtime.Event
		if err := json.Unmarshal([]byte(note.Payload), &e); err != nil {
			t.Fatalf("announcement %q: %v", note.Payload, err)
		}
		ids = append(ids, e.ID)
	}
	return ids
}

// TestConcurrentSendersOneOrder: messages sent at once by many senders have
// one order: their seqs are 1..n without gaps, in the order they were
// announced (committed), createdAt never goes back along it, and pages
// followed by their cursors list exactly that order, newest first, as does
// the last message.
func TestConcurrentSendersOneOrder(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	senders := []chat.User{w.alice, w.bob, w.carol, w.dave}
	conv := w.mustCreate(t, w.alice, "busy", senders[1:]...)
	listener := w.listen(t)
	const each = 15
	var workers [][]func() error
	for _, s := range senders {
		var steps []func() error
		for i := range each {
			steps = append(steps, func() error {
				_, err := w.sendMessage(t, s.ID, conv.ID, fmt.Sprintf("%s %d", s.DisplayName, i))
				return err
			})
		}
		workers = append(workers, steps)
	}
	runWorkers(t, workers)
	n := len(senders) * each
	announced := listener.ids(t, n)

	// Every page, newest first, following the cursors.
	var listed []chat.Message
	after := ""
	for {
		key := chat.PageKey{ConversationID: conv.ID, First: 7, After: after}
		pages, err := chat.MessagePages(t.Context(), w.db, w.bob.ID, []chat.PageKey{key})
		if err != nil {
			t.Fatalf("MessagePages: %v", err)
		}
		listed = append(listed, pages[key].Messages...)
		if !pages[key].HasNext {
			break
		}
		after = pages[key].Messages[len(pages[key].Messages)-1].Cursor()
	}
	slices.Reverse(listed)
	if got := messageIDs(listed); !slices.Equal(got, announced) {
		t.Fatalf("pages, oldest first:\n  %v\nannounced:\n  %v", got, announced)
	}
	for i, m := range listed {
		if m.Seq != int64(i+1) {
			t.Errorf("message %d has seq %d", i+1, m.Seq)
		}
		if i > 0 && m.CreatedAt.Before(listed[i-1].CreatedAt) {
			t.Errorf("createdAt goes back at seq %d: %v after %v", m.Seq, m.CreatedAt, listed[i-1].CreatedAt)
		}
	}
	newest := listed[n-1]
	last, err := chat.LastMessages(t.Context(), w.db, w.bob.ID, []string{conv.ID})
	if err != nil {
		t.Fatalf("LastMessages: %v", err)
	}
	if last[conv.ID].ID != newest.ID {
		t.Errorf("last message %s, want %s", last[conv.ID].ID, newest.ID)
	}
	c := w.conversation(t, w.bob.ID, conv.ID)
	if c.LastSeq != int64(n) || c.LastMessageAt == nil || !c.LastMessageAt.Equal(newest.CreatedAt) {
		t.Errorf("conversation at seq %d, lastMessageAt %v; want %d, %v", c.LastSeq, c.LastMessageAt, n, newest.CreatedAt)
	}
}

// TestMessagesSince: the catch-up announces, for each conversation whose
// messages went past the seq given, its newest message, and nothing for
// the others.
func TestMessagesSince(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	busy := w.mustCreate(t, w.alice, "busy", w.bob)
	quiet := w.mustCreate(t, w.alice, "quiet", w.bob)
	empty := w.mustCreate(t, w.alice, "empty", w.bob)
	var newest chat.Message
	for _, body := range []string{"one", "two", "three"} {
		newest = w.mustSend(t, w.bob, busy.ID, body)
	}
	w.mustSend(t, w.bob, quiet.ID, "one")
	events, err := chat.MessagesSince(t.Context(), w.db, map[string]int64{
		busy.ID: 1, quiet.ID: 1, empty.ID: 0, w.convs[missing]: 0,
	})
	if err != nil {
		t.Fatalf("MessagesSince: %v", err)
	}
	if len(events) != 1 {
		t.Fatalf("events %+v, want one, for %s", events, busy.ID)
	}
	if e := events[0]; e.ID != newest.ID || e.ConversationID != busy.ID || e.Seq != 3 || !e.CreatedAt.Equal(newest.CreatedAt) {
		t.Errorf("event %+v, want message %s at seq 3", e, newest.ID)
	}
	if events, err := chat.MessagesSince(t.Context(), w.db, map[string]int64{}); err != nil || len(events) != 0 {
		t.Errorf("for no conversations: %v, %v", events, err)
	}
}

// TestUnreadExactUnderConcurrency: senders, read marks and adds race on one
// conversation. Afterwards every mark covers exactly the messages its
// transaction saw (all of those up to its seq, none after), and each
// reader's unread count is the number of others' messages after their
// final mark. Deadlocks between the three would fail the writes.
func TestUnreadExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	conv := w.mustCreate(t, w.alice, "race", w.bob, w.carol)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))

	type mark struct {
		reader  string
		seq     int64
		visible map[int64]bool
	}
	var (
		mu    sync.Mutex
		marks []mark
	)
	markOnce := func(reader string) error {
		_, err := inTx(t, w.pool, func(ctx context.Context, db dbpool.DB) (struct{}, error) {
			if _, err := chat.MarkRead(ctx, db, reader, conv.ID); err != nil {
				return struct{}{}, err
			}
			m := mark{reader: reader, visible: map[int64]bool{}}
			var err error
			if m.seq, err = dbpool.CollectOne(ctx, db, `SELECT last_read_seq FROM conversation_participants
				WHERE conversation_id = $1 AND user_id = $2`, []any{conv.ID, reader}, pgx.RowTo[int64]); err != nil {
				return struct{}{}, err
			}
			seqs, err := dbpool.Collect(ctx, db, "SELECT seq FROM messages WHERE conversation_id = $1", []any{conv.ID}, pgx.RowTo[int64])
			for _, s := range seqs {
				m.visible[s] = true
			}
			mu.Lock()
			marks = append(marks, m)
			mu.Unlock()
			return struct{}{}, err
		})
		return err
	}

	// Each worker runs its steps in a random order of its own.
	type step = func() error
	var workers [][]step
	for _, sender := range []chat.User{w.bob, w.carol} {
		var steps []step
		for i := range 20 {
			steps = append(steps, func() error {
				_, err := w.sendMessage(t, sender.ID, conv.ID, fmt.Sprintf("%s %d", sender.DisplayName, i))
				return err
			})
		}
		for range 5 {
			steps = append(steps, func() error { return markOnce(sender.ID) })
		}
		workers = append(workers, steps)
	}
	for range 2 {
		var steps []step
		for range 15 {
			steps = append(steps, func() error { return markOnce(w.alice.ID) })
		}
		workers = append(workers, steps)
	}
	var adds []step
	for i := range 5 {
		u := w.newUser(t, fmt.Sprintf("Late%d", i))
		adds = append(adds, func() error {
			_, err := w.addParticipant(t, w.alice.ID, conv.ID, u.ID)
			return err
		})
	}
	workers = append(workers, adds)

	for _, steps := range workers {
		rng.Shuffle(len(steps), func(i, j int) { steps[i], steps[j] = steps[j], steps[i] })
	}
	runWorkers(t, workers)

	key := chat.PageKey{ConversationID: conv.ID, First: chat.MaxPageSize}
	pages, err := chat.MessagePages(t.Context(), w.db, w.alice.ID, []chat.PageKey{key})
	if err != nil {
		t.Fatalf("MessagePages: %v", err)
	}
	msgs := pages[key].Messages
	for _, m := range marks {
		for _, msg := range msgs {
			if seen := m.visible[msg.Seq]; seen != (msg.Seq <= m.seq) {
				t.Errorf("a mark at seq %d: message %d visible %v", m.seq, msg.Seq, seen)
			}
		}
		if len(m.visible) != int(m.seq) {
			t.Errorf("a mark at seq %d saw %d messages", m.seq, len(m.visible))
		}
	}
	for _, reader := range []chat.User{w.alice, w.bob, w.carol} {
		final, err := dbpool.CollectOne(t.Context(), w.db, `SELECT last_read_seq FROM conversation_participants
			WHERE conversation_id = $1 AND user_id = $2`, []any{conv.ID, reader.ID}, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		var want int64
		for _, m := range marks {
			if m.reader == reader.ID {
				want = max(want, m.seq)
			}
		}
		unread := 0
		for _, msg := range msgs {
			if msg.Author.ID == reader.ID {
				want = max(want, msg.Seq) // a sender has read up to their own message
			} else if msg.Seq > final {
				unread++
			}
		}
		if final != want {
			t.Errorf("%s's mark is at %d, want %d", reader.DisplayName, final, want)
		}
		if n := w.unread(t, reader.ID, conv.ID)[conv.ID]; n != unread {
			t.Errorf("%s's unread count %d, want %d (messages of others after seq %d)", reader.DisplayName, n, unread, final)
		}
		t.Logf("%s: mark at seq %d of %d, %d unread", reader.DisplayName, final, len(msgs), unread)
	}
	early := 0
	for _, m := range marks {
		if m.seq < int64(len(msgs)) {
			early++
		}
	}
	t.Logf("%d messages, %d marks (%d of them before the last message), all exact", len(msgs), len(marks), early)
}
