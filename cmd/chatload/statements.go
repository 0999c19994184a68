package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"chatql/chat"
	"chatql/dbpool"
	"chatql/load"
)

// statements measures PostgreSQL's CPU per call of each statement of the
// Inbox, one connection, no concurrency: the backend's own CPU (from
// /proc) over a stretch of calls made back to back, with the arguments of
// each load user in turn. `make bench` gives the cluster's CPU per Inbox
// under load; this says which statement it goes to, without the noise of
// the other processes sharing the machine.
func statements(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("chatload statements", flag.ContinueOnError)
	each := fs.Duration("d", 3*time.Second, "how long each statement runs")
	users := fs.Int("users", 256, "how many load users' Inboxes the calls go through, in turn")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dbURL, stopDB, err := privateDatabase(ctx, "chatload-statements-", out)
	if err != nil {
		return err
	}
	defer stopDB()

	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	clients, err := load.ClientsWithInbox(ctx, conn, *users, load.FullInbox, func(string) (string, error) { return "", nil })
	if err != nil {
		return err
	}

	cfg := dbpool.DefaultConfig()
	cfg.Size, cfg.MaxOverflow = 1, 0
	pool, err := dbpool.New(dbURL, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer pool.Close()
	raw, err := rawPool(ctx, dbURL)
	if err != nil {
		return err
	}
	defer raw.Close()

	fmt.Fprintf(out, "PostgreSQL's CPU per call, one connection, %d users' Inboxes in turn, %s each\n", len(clients), *each)
	return pool.WithConn(ctx, func(db dbpool.DB) error {
		inboxes, err := loadInboxes(ctx, db, clients)
		if err != nil {
			return err
		}
		steps := []struct {
			name string
			call func(in inbox) error
		}{
			{"chatql viewer check", func(in inbox) error {
				_, _, err := chat.UserByID(ctx, db, in.viewer)
				return err
			}},
			{"chatql conversations with unread counts", func(in inbox) error {
				_, err := chat.InboxWithUnread(ctx, db, in.viewer, 20, "")
				return err
			}},
			{"chatql participants", func(in inbox) error {
				_, err := chat.ParticipantsByConversation(ctx, db, in.viewer, in.ids)
				return err
			}},
			{"chatql message pages", func(in inbox) error {
				_, err := chat.ConversationPages(ctx, db, in.viewer, in.convs, in.keys, in.known)
				return err
			}},
		}
		backend, err := backendPID(ctx, db)
		if err != nil {
			return err
		}
		var sum float64
		for _, s := range steps {
			us, n, err := perCall(backend, *each, inboxes, s.call)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			sum += us
			fmt.Fprintf(out, "  %-42s %7.1f µs  (%d calls)\n", s.name, us, n)
		}
		fmt.Fprintf(out, "  %-42s %7.1f µs\n", "chatql's Inbox, the four together", sum)
		return rawPerCall(ctx, raw, *each, inboxes, out)
	})
}

// inbox is one user's Inbox as the statements after the first take it.
type inbox struct {
	viewer string
	convs  []chat.Conversation
	ids    []string
	keys   []chat.PageKey
	known  map[string]chat.User
}

func loadInboxes(ctx context.Context, db dbpool.DB, clients []load.Client) ([]inbox, error) {
	out := make([]inbox, len(clients))
	for i, c := range clients {
		page, err := chat.InboxWithUnread(ctx, db, c.UserID, 20, "")
		if err != nil {
			return nil, err
		}
		in := inbox{viewer: c.UserID, convs: page.Conversations, known: map[string]chat.User{}}
		for _, conv := range page.Conversations {
			in.ids = append(in.ids, conv.ID)
			in.keys = append(in.keys, chat.PageKey{ConversationID: conv.ID, First: 10})
		}
		parts, err := chat.ParticipantsByConversation(ctx, db, c.UserID, in.ids)
		if err != nil {
			return nil, err
		}
		for _, users := range parts {
			for _, u := range users {
				in.known[u.ID] = u
			}
		}
		out[i] = in
	}
	return out, nil
}

func backendPID(ctx context.Context, db dbpool.DB) (int, error) {
	return dbpool.CollectOne(ctx, db, "SELECT pg_backend_pid()", nil, pgx.RowTo[int])
}

// perCall runs call over inboxes in turn for d, after one warm-up round,
// and returns the backend's CPU per call in microseconds.
func perCall(backend int, d time.Duration, inboxes []inbox, call func(inbox) error) (float64, int, error) {
	for _, in := range inboxes {
		if err := call(in); err != nil {
			return 0, 0, err
		}
	}
	before, err := load.ProcessCPU(backend)
	if err != nil {
		return 0, 0, err
	}
	n := 0
	for start := time.Now(); time.Since(start) < d; n++ {
		if err := call(inboxes[n%len(inboxes)]); err != nil {
			return 0, 0, err
		}
	}
	after, err := load.ProcessCPU(backend)
	if err != nil {
		return 0, 0, err
	}
	return float64((after - before).Microseconds()) / float64(n), n, nil
}

// rawPool is a plain pgxpool of one connection, as the raw ceiling's.
func rawPool(ctx context.Context, dbURL string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	pc.MinConns, pc.MaxConns = 1, 1
	return pgxpool.NewWithConfig(ctx, pc)
}

// rawPerCall is perCall for the raw ceiling's whole Inbox (load.FetchInbox).
func rawPerCall(ctx context.Context, raw *pgxpool.Pool, d time.Duration, inboxes []inbox, out io.Writer) error {
	var backend int
	if err := raw.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return err
	}
	us, n, err := perCall(backend, d, inboxes, func(in inbox) error {
		_, err := load.FetchInbox(ctx, raw, in.viewer, 20, 10)
		return err
	})
	if err != nil {
		return fmt.Errorf("raw: %w", err)
	}
	fmt.Fprintf(out, "  %-42s %7.1f µs  (%d calls)\n", "the raw ceiling's Inbox (its four statements)", us, n)
	return nil
}
