// Command chatload measures a chatql server under load.
//
//	chatload [flags]          drive a running chatql (--url) with the Inbox query
//	chatload bench [flags]    start a private PostgreSQL and a chatql with the
//	                          Supabase settings, seed them, and run the whole
//	                          matrix: chatql and the ceilings at each
//	                          concurrency (what `make bench` runs)
//	chatload peers [flags]    the same private PostgreSQL and data set with
//	                          chatql and PostGraphile 4 side by side (what
//	                          `make bench-peers` runs)
//	chatload statements [flags]
//	                          the same private PostgreSQL and data set, and
//	                          PostgreSQL's CPU per call of each of the
//	                          Inbox's statements, one connection, no load
//	chatload ceiling-server   the HTTP ceiling's server (started by the above)
//
// It prints one table: requests/s, latency percentiles, errors by HTTP status
// and extensions.code, the most server connections seen in pg_stat_activity
// (sampled every 50 ms), the server's pool before and after, and the ratio of
// chatql's throughput to the ceiling's from the same invocation. Then it
// holds --subscribers websockets open on messageAdded and reports delivery
// latency and the server's memory and goroutines.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/auth"
	"chatql/dbpool"
	"chatql/graph"
	"chatql/load"
	"chatql/migrations"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := os.Args[1:]
	var err error
	if len(args) > 0 && args[0] == "bench" {
		err = bench(ctx, args[1:], os.Stdout)
	} else if len(args) > 0 && args[0] == "peers" {
		err = peers(ctx, args[1:], os.Stdout)
	} else if len(args) > 0 && args[0] == "statements" {
		err = statements(ctx, args[1:], os.Stdout)
	} else if len(args) > 0 && args[0] == "ceiling-server" {
		err = ceilingServer(ctx)
	} else {
		err = runCommand(ctx, args, os.Stdout)
	}
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatload:", err)
		os.Exit(1)
	}
}

// options are the flags both commands share.
type options struct {
	concurrency []int
	duration    time.Duration
	writeRatio  float64
	ceiling     bool
	jwtSecret   string
	subscribers int
	// flood is the duration of each fairness scenario (0: skip them).
	flood time.Duration
}

// target is a chatql server being measured: its mode in the results, where
// it listens, its DB_APPLICATION_NAME (to count its connections) and, when
// it runs here (bench), its process, whose CPU time is reported.
type target struct {
	mode, baseURL, app string
	pid                int
	stop               func()
}

func (o *options) register(fs *flag.FlagSet) {
	fs.Func("c", "concurrency levels, comma-separated (default 16,64,256)", func(s string) error {
		o.concurrency = nil
		for _, part := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(part))
			if err != nil || n < 1 {
				return fmt.Errorf("bad concurrency %q", part)
			}
			o.concurrency = append(o.concurrency, n)
		}
		return nil
	})
	fs.DurationVar(&o.duration, "d", 20*time.Second, "duration of each run")
	fs.Float64Var(&o.writeRatio, "write-ratio", 0, "fraction of requests that are sendMessage instead of Inbox")
	fs.BoolVar(&o.ceiling, "ceiling", true, "also run the raw-SQL ceiling at each concurrency")
	fs.IntVar(&o.subscribers, "subscribers", 2000, "then hold this many messageAdded websockets open and measure delivery (0: skip)")
	fs.DurationVar(&o.flood, "flood", 10*time.Second, "then run the fairness scenarios (one user flooding with 200 clients while another sends 5 req/s; open-loop arrivals at 10x the peak) for this long each (0: skip)")
	fs.StringVar(&o.jwtSecret, "jwt-secret", os.Getenv("JWT_SECRET"), "the server's JWT_SECRET, to sign clients in (default $JWT_SECRET)")
	o.concurrency = []int{16, 64, 256}
}

// runCommand drives a running server.
func runCommand(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("chatload", flag.ContinueOnError)
	var o options
	o.register(fs)
	baseURL := fs.String("url", "http://127.0.0.1:8080", "the chatql server")
	dbURL := fs.String("database-url", os.Getenv("DATABASE_URL"), "the server's database, to seed, sample pg_stat_activity and run the ceiling (default $DATABASE_URL)")
	app := fs.String("app", "chatql", "the server's DB_APPLICATION_NAME, to count its connections")
	seed := fs.Bool("seed", false, "seed the load data set first (1,000 users, 8,000 conversations, 400,000 messages) if the database has no users")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dbURL == "" || o.jwtSecret == "" {
		return errors.New("need --database-url and --jwt-secret (or DATABASE_URL and JWT_SECRET)")
	}
	if *seed {
		if err := seedDatabase(ctx, *dbURL, out); err != nil {
			return err
		}
	}
	return measure(ctx, o, []target{{mode: load.ModeChatQL, baseURL: *baseURL, app: *app}}, *dbURL, out)
}

func seedDatabase(ctx context.Context, dbURL string, out io.Writer) error {
	if _, err := migrations.Up(ctx, dbURL, slog.New(slog.DiscardHandler)); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	start := time.Now()
	_, err = load.Seed(ctx, conn, load.DefaultDataSet)
	if errors.Is(err, load.ErrNotEmpty) {
		fmt.Fprintln(out, "database already has users: not seeding")
		return nil
	}
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	ds := load.DefaultDataSet
	fmt.Fprintf(out, "seeded %d users, %d conversations, %d messages in %s\n", ds.Users, ds.Conversations, ds.Messages, time.Since(start).Round(time.Millisecond))
	return nil
}

// measure runs the matrix against the targets, the first being the one
// under test, and prints the table.
func measure(ctx context.Context, o options, targets []target, dbURL string, out io.Writer) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	clients, maxC, err := o.signedInClients(ctx, conn)
	if err != nil {
		return err
	}
	sampleConn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer sampleConn.Close(context.Background())

	var results []load.Result
	for _, t := range targets {
		warm := load.HTTPRun{BaseURL: t.baseURL, Clients: clients, Concurrency: min(16, maxC), Duration: 2 * time.Second, Query: graph.InboxQuery}
		if _, err := warm.Run(ctx); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	// CPU time is read from /proc when the database runs here.
	postmaster, _ := load.PostmasterPID(ctx, sampleConn)
	var poolCfg dbpool.Config
	for _, c := range o.concurrency {
		for _, t := range targets {
			done := load.CPUMeter{ServerPID: t.pid, PostmasterPID: postmaster}.Start()
			r, err := load.HTTPRun{
				Mode: t.mode, BaseURL: t.baseURL, Clients: clients, Concurrency: c, Duration: o.duration, WriteRatio: o.writeRatio,
				Query: graph.InboxQuery, Sample: load.BackendSampler(sampleConn, t.app),
			}.Run(ctx)
			if err != nil {
				return err
			}
			done(&r)
			results = append(results, r)
			fmt.Fprintf(out, "%-7s c=%-4d %8.1f req/s  p99 %s ms  backends %d  errors %d\n", t.mode, c, r.Throughput(), fmtMs(r.Percentile(0.99)), r.MaxBackends, r.ErrorCount())
			if r.PoolAfter != nil && t.mode == load.ModeChatQL {
				poolCfg.Size, poolCfg.MaxOverflow = r.PoolAfter.PoolSize, r.PoolAfter.MaxOverflow
			}
		}
	}
	if o.ceiling {
		cfg := dbpool.DefaultConfig()
		cfg.Size, cfg.MaxOverflow, cfg.Timeout = max(poolCfg.Size, 1), poolCfg.MaxOverflow, 30*time.Second
		cfg.ApplicationName = "chatload-ceiling"
		pool, err := dbpool.New(dbURL, cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			return err
		}
		defer pool.Close()
		for _, c := range o.concurrency {
			done := load.CPUMeter{PostmasterPID: postmaster}.Start()
			r, err := load.CeilingRun{
				Pool: pool, Clients: clients, Concurrency: c, Duration: o.duration, Conversations: 20, Messages: 10,
				Sample: load.BackendSampler(sampleConn, cfg.ApplicationName),
			}.Run(ctx)
			if err != nil {
				return err
			}
			done(&r)
			results = append(results, r)
			fmt.Fprintf(out, "ceiling c=%-4d %8.1f req/s  p99 %s ms  backends %d  errors %d\n", c, r.Throughput(), fmtMs(r.Percentile(0.99)), r.MaxBackends, r.ErrorCount())
		}
		more, err := honestCeilings(ctx, o, clients, dbURL, sampleConn, postmaster, cfg.MaxConnections(), out)
		if err != nil {
			return err
		}
		results = append(results, more...)
	}
	fmt.Fprintln(out)
	load.PrintTable(out, results)
	if o.flood > 0 {
		// The peak is the best closed-loop throughput without admission
		// when that was measured, else with it; served requests only.
		peaks := map[string]float64{}
		for _, r := range results {
			peaks[r.Mode] = max(peaks[r.Mode], float64(r.Requests()-r.ErrorCount())/r.Elapsed.Seconds())
		}
		peak := peaks[load.ModeNoAdmission]
		if peak == 0 {
			peak = peaks[load.ModeChatQL]
		}
		if peak == 0 {
			return errors.New("fairness: no request was served in the matrix, so there is no peak to measure against")
		}
		if err := fairness(ctx, o, targets, clients, peak, out); err != nil {
			return fmt.Errorf("fairness: %w", err)
		}
	}
	if o.subscribers > 0 {
		t := targets[0]
		r, err := load.SubscribeRun{
			BaseURL: t.baseURL, Clients: clients, Subscribers: o.subscribers,
			MetricsToken: os.Getenv("METRICS_TOKEN"),
			Sample:       load.BackendSampler(sampleConn, t.app, t.app+"-listener"),
		}.Run(ctx)
		if err != nil {
			return fmt.Errorf("subscribers: %w", err)
		}
		fmt.Fprintf(out, "\nrealtime: %d messageAdded subscribers (graphql-transport-ws), one message to each subscribed conversation\n", o.subscribers)
		load.PrintSubscribe(out, r)
	}
	return nil
}

// signedInClients picks as many load users with a full Inbox as the
// highest concurrency needs, each signed in with o.jwtSecret, and returns
// them with that concurrency.
func (o options) signedInClients(ctx context.Context, conn *pgx.Conn) ([]load.Client, int, error) {
	tokens, err := auth.NewTokens([]byte(o.jwtSecret), time.Hour)
	if err != nil {
		return nil, 0, err
	}
	maxC := 0
	for _, c := range o.concurrency {
		maxC = max(maxC, c)
	}
	clients, err := load.ClientsWithInbox(ctx, conn, maxC, load.FullInbox, func(id string) (string, error) {
		t, _, err := tokens.Issue(id)
		return t, err
	})
	return clients, maxC, err
}

// binaryPath is the absolute path of the chatql binary to measure, which
// must exist.
func binaryPath(path string) (string, error) {
	bin, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("chatql binary: %w (build it: go build -o bin/chatql .)", err)
	}
	return bin, nil
}

// newSecret is a random JWT_SECRET for the servers a bench starts.
func newSecret() string {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	return hex.EncodeToString(secret)
}

func fmtMs(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }
