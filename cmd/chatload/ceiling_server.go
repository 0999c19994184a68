package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"chatql/auth"
	"chatql/graph"
	"chatql/load"
)

// ceilingServer serves load.HTTPCeilingHandler until ctx ends: the HTTP
// ceiling, run as a process of its own so that its CPU time is its own.
// It is configured by the environment startCeilingServer sets.
func ceilingServer(ctx context.Context) error {
	size, err := strconv.Atoi(os.Getenv("CEILING_POOL_MAX"))
	if err != nil || size < 1 {
		return fmt.Errorf("CEILING_POOL_MAX: %q", os.Getenv("CEILING_POOL_MAX"))
	}
	cfg, err := pgxpool.ParseConfig(os.Getenv("DATABASE_URL"))
	if err != nil {
		return err
	}
	cfg.MaxConns = int32(size)
	cfg.ConnConfig.RuntimeParams["application_name"] = "chatload-http-ceiling"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	tokens, err := auth.NewTokens([]byte(os.Getenv("JWT_SECRET")), time.Hour)
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: os.Getenv("LISTEN_ADDR"), Handler: load.HTTPCeilingHandler(pool, tokens), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// startCeilingServer starts this program as the HTTP ceiling's server,
// with a pool of poolMax connections, and waits until it listens. stop
// ends it.
func startCeilingServer(ctx context.Context, dbURL, jwtSecret string, poolMax int) (baseURL string, pid int, stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return "", 0, nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return "", 0, nil, err
	}
	cmd := exec.CommandContext(ctx, self, "ceiling-server")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "JWT_SECRET="+jwtSecret, "LISTEN_ADDR="+addr,
		fmt.Sprintf("CEILING_POOL_MAX=%d", poolMax))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	if err := cmd.Start(); err != nil {
		return "", 0, nil, fmt.Errorf("start the HTTP ceiling: %w", err)
	}
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return "http://" + addr, cmd.Process.Pid, stop, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return "", 0, nil, fmt.Errorf("the HTTP ceiling did not start: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// honestCeilings runs the raw ceiling (load.FetchInbox on a plain pgxpool
// of poolMax connections, in this process) and the HTTP ceiling (the same
// behind a plain net/http handler in a process of its own) at each
// concurrency, with CPU time per request.
func honestCeilings(ctx context.Context, o options, clients []load.Client, dbURL string, sampleConn *pgx.Conn, postmaster, poolMax int, out io.Writer) ([]load.Result, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	const rawApp = "chatload-raw-ceiling"
	cfg.MaxConns = int32(poolMax)
	cfg.ConnConfig.RuntimeParams["application_name"] = rawApp
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	var results []load.Result
	for _, c := range o.concurrency {
		done := load.CPUMeter{ServerPID: os.Getpid(), PostmasterPID: postmaster}.Start()
		r, err := load.RawCeilingRun{
			Pool: pool, Clients: clients, Concurrency: c, Duration: o.duration, Conversations: 20, Messages: 10,
			Sample: load.BackendSampler(sampleConn, rawApp),
		}.Run(ctx)
		if err != nil {
			return nil, err
		}
		done(&r) // srv: this process, clients included
		results = append(results, r)
		fmt.Fprintf(out, "raw     c=%-4d %8.1f req/s  p99 %s ms  backends %d  errors %d\n", c, r.Throughput(), fmtMs(r.Percentile(0.99)), r.MaxBackends, r.ErrorCount())
	}
	pool.Close()

	baseURL, pid, stop, err := startCeilingServer(ctx, dbURL, o.jwtSecret, poolMax)
	if err != nil {
		return nil, err
	}
	defer stop()
	for _, c := range o.concurrency {
		done := load.CPUMeter{ServerPID: pid, PostmasterPID: postmaster}.Start()
		r, err := load.HTTPRun{
			Mode: load.ModeHTTP, BaseURL: baseURL, Clients: clients, Concurrency: c, Duration: o.duration,
			Query: graph.InboxQuery, Sample: load.BackendSampler(sampleConn, "chatload-http-ceiling"),
		}.Run(ctx)
		if err != nil {
			return nil, err
		}
		done(&r)
		results = append(results, r)
		fmt.Fprintf(out, "http    c=%-4d %8.1f req/s  p99 %s ms  backends %d  errors %d\n", c, r.Throughput(), fmtMs(r.Percentile(0.99)), r.MaxBackends, r.ErrorCount())
	}
	return results, nil
}
