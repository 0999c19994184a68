package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/graph"
	"chatql/load"
)

// peers measures chatql beside PostGraphile 4 on one private database with
// the load data set: the same Inbox for the same users, the same pool
// size, one server after the other at each concurrency (make bench-peers).
func peers(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("chatload peers", flag.ContinueOnError)
	var o options
	o.register(fs)
	binary := fs.String("chatql", "bin/chatql", "the chatql binary to measure")
	cli := fs.String("postgraphile", "load/postgraphile/node_modules/.bin/postgraphile", "PostGraphile 4's command (npm ci in load/postgraphile)")
	poolSize := fs.Int("pool-size", 3, "DB_POOL_SIZE of chatql; PostGraphile's pool gets the same maximum (with the overflow)")
	overflow := fs.Int("max-overflow", 2, "DB_MAX_OVERFLOW of chatql")
	if err := fs.Parse(args); err != nil {
		return err
	}
	bin, err := binaryPath(*binary)
	if err != nil {
		return err
	}
	graphile, err := filepath.Abs(*cli)
	if err != nil {
		return err
	}
	if _, err := os.Stat(graphile); err != nil {
		return fmt.Errorf("PostGraphile: %w (install it: cd load/postgraphile && npm ci)", err)
	}
	dbURL, stopDB, err := privateDatabase(ctx, "chatload-peers-", out)
	if err != nil {
		return err
	}
	defer stopDB()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, load.PostGraphileSQL); err != nil {
		return fmt.Errorf("PostGraphile's functions: %w", err)
	}

	o.jwtSecret = newSecret()
	chatql, err := startServer(ctx, bin, "chatql-peers", []string{
		"DATABASE_URL=" + dbURL, "JWT_SECRET=" + o.jwtSecret,
		fmt.Sprintf("DB_POOL_SIZE=%d", *poolSize), fmt.Sprintf("DB_MAX_OVERFLOW=%d", *overflow),
		"LOG_LEVEL=warn", "GRAPHQL_DB_STATS=false",
	})
	if err != nil {
		return err
	}
	defer chatql.stop()
	chatql.mode = load.ModeChatQL
	pg, err := startPostGraphile(ctx, graphile, dbURL, "chatload-graphile", *poolSize+*overflow)
	if err != nil {
		return err
	}
	defer pg.stop()
	pg.mode = load.ModePostGraphile

	clients, maxC, err := o.signedInClients(ctx, conn)
	if err != nil {
		return err
	}
	runs := []struct {
		target
		query, path string
		variables   func(load.Client) map[string]any
	}{
		{chatql, graph.InboxQuery, "/query", nil},
		{pg, load.PostGraphileInbox, "/graphql", load.PostGraphileVariables},
	}
	fmt.Fprintf(out, "chatql (%s, DB_POOL_SIZE=%d DB_MAX_OVERFLOW=%d) and PostGraphile 4 (pool of %d) on one private PostgreSQL; %s per run\n",
		*binary, *poolSize, *overflow, *poolSize+*overflow, o.duration)
	for _, r := range runs {
		shape, err := inboxShape(ctx, r.baseURL+r.path, clients[0], r.query, r.variables)
		if err != nil {
			return fmt.Errorf("%s: %w", r.mode, err)
		}
		fmt.Fprintf(out, "%-8s one Inbox: %s\n", r.mode, shape)
		warm := load.HTTPRun{Mode: r.mode, BaseURL: r.baseURL, Clients: clients, Concurrency: min(16, maxC), Duration: 2 * time.Second,
			Query: r.query, Path: r.path, Variables: r.variables}
		if _, err := warm.Run(ctx); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	fmt.Fprintln(out)

	postmaster, err := load.PostmasterPID(ctx, conn)
	if err != nil {
		return err
	}
	var results []load.Result
	for _, c := range o.concurrency {
		for _, r := range runs {
			done := load.CPUMeter{ServerPID: r.pid, PostmasterPID: postmaster}.Start()
			res, err := load.HTTPRun{
				Mode: r.mode, BaseURL: r.baseURL, Clients: clients, Concurrency: c, Duration: o.duration,
				Query: r.query, Path: r.path, Variables: r.variables, Sample: load.BackendSampler(conn, r.app),
			}.Run(ctx)
			if err != nil {
				return err
			}
			done(&res)
			results = append(results, res)
			fmt.Fprintf(out, "%-8s c=%-4d %8.1f req/s  p99 %s ms  backends %d  errors %d\n", r.mode, c, res.Throughput(), fmtMs(res.Percentile(0.99)), res.MaxBackends, res.ErrorCount())
		}
	}
	fmt.Fprintln(out)
	load.PrintTable(out, results)
	return nil
}

// startPostGraphile starts PostGraphile's command on dbURL with a pool of
// poolMax connections named app, on a free address, and waits until it
// answers a query.
func startPostGraphile(ctx context.Context, cli, dbURL, app string, poolMax int) (target, error) {
	addr, err := freeAddr()
	if err != nil {
		return target{}, err
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return target{}, err
	}
	connString := dbURL + "&application_name=" + app
	if !strings.Contains(dbURL, "?") {
		connString = dbURL + "?application_name=" + app
	}
	cmd := exec.CommandContext(ctx, cli, "--connection", connString, "--schema", "public",
		"--host", host, "--port", port, "--max-pool-size", strconv.Itoa(poolMax),
		"--disable-default-mutations", "--disable-query-log")
	cmd.Env = append(os.Environ(), "NODE_ENV=production")
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	if err := cmd.Start(); err != nil {
		return target{}, fmt.Errorf("start PostGraphile: %w", err)
	}
	t := target{baseURL: "http://" + addr, app: app, pid: cmd.Process.Pid, stop: func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}}
	ready := func() (*http.Response, error) {
		return http.Post(t.baseURL+"/graphql", "application/json", strings.NewReader(`{"query":"{__typename}"}`))
	}
	if err := waitReady(ctx, "PostGraphile", ready, 60*time.Second); err != nil {
		t.stop()
		return target{}, err
	}
	return t, nil
}

// inboxShape sends one Inbox and describes what came back: its size and
// how many conversations, participants and messages it holds, so that the
// two servers are seen to answer with the same data.
func inboxShape(ctx context.Context, url string, c load.Client, query string, variables func(load.Client) map[string]any) (string, error) {
	request := map[string]any{"query": query}
	if variables != nil {
		request["variables"] = variables(c)
	}
	body, _ := json.Marshal(request)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	var r struct {
		Errors json.RawMessage `json:"errors"`
		Data   map[string]struct {
			Edges []struct {
				Node struct {
					Participants json.RawMessage `json:"participants"`
					Messages     struct {
						Nodes []json.RawMessage `json:"nodes"`
					} `json:"messages"`
				} `json:"node"`
			} `json:"edges"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || len(r.Errors) > 0 || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("the Inbox failed (HTTP %d): %.300s", resp.StatusCode, raw)
	}
	var conversations, participants, messages int
	for _, page := range r.Data {
		for _, e := range page.Edges {
			conversations++
			messages += len(e.Node.Messages.Nodes)
			participants += bytes.Count(e.Node.Participants, []byte(`"displayName"`))
		}
	}
	return fmt.Sprintf("%d bytes, %d conversations, %d participants, %d messages", len(raw), conversations, participants, messages), nil
}
