// Command chatql is a GraphQL API server for chat applications on
// PostgreSQL, built so that it never exhausts its database connection
// budget.
//
//	chatql           serve (the default)
//	chatql migrate   apply pending migrations and exit
//
// Configuration comes from the environment, and from a .env file in the
// working directory when there is one (real environment variables win).
// Without DATABASE_URL, chatql starts a private PostgreSQL in .data/.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/playground"
	"github.com/joho/godotenv"

	"chatql/auth"
	"chatql/config"
	"chatql/dbpool"
	"chatql/demo"
	"chatql/graph"
	"chatql/health"
	"chatql/localpg"
	"chatql/metrics"
	"chatql/migrations"
	"chatql/realtime"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitConfig = 2 // bad configuration or usage: nothing was started
)

// defaultGCPercent is the garbage collector's target unless GOGC is set.
// Executing a GraphQL operation allocates a lot of short-lived memory (about
// 2 MB for an inbox) over a small live heap, so Go's default of 100 spends a
// large share of the CPU collecting; 400 trades a few tens of megabytes of
// heap for markedly more throughput (see the README's Performance section).
const defaultGCPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := loadDotEnv(".env"); err != nil {
		fmt.Fprintln(os.Stderr, "chatql:", err)
		os.Exit(exitConfig)
	}
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr))
}

// loadDotEnv loads path into the environment if it exists, without
// overriding variables that are already set.
func loadDotEnv(path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := godotenv.Load(path); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// run is the whole program: it returns the exit code. Tests call it with
// their own environment; it returns when ctx is cancelled (a signal).
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := config.Load(getenv)
	if err != nil {
		fmt.Fprintln(stderr, "chatql:", err)
		return exitConfig
	}
	logger := newLogger(cfg, stderr)

	command := "serve"
	if len(args) > 0 {
		command = args[0]
	}
	switch command {
	case "serve":
		err = serve(ctx, cfg, logger)
	case "migrate":
		err = migrate(ctx, cfg, logger)
	default:
		fmt.Fprintf(stderr, "chatql: unknown command %q (want serve or migrate)\n", command)
		return exitConfig
	}
	if err != nil {
		if errors.Is(err, localpg.ErrNotInstalled) {
			fmt.Fprintln(stderr, "chatql:", localpg.ErrNotInstalled)
		} else {
			logger.Error("chatql stopped", "err", err)
		}
		return exitFailed
	}
	return exitOK
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// database is the database chatql runs on: DATABASE_URL, or the private
// local cluster, which close stops.
type database struct {
	url     string
	local   *localpg.Cluster
	devMode bool
}

// migrationURL is where migrations run: DATABASE_DIRECT_URL when set, since
// they hold a session-level advisory lock, which a transaction-mode pooler
// would hand to other clients between statements.
func (d *database) migrationURL(cfg config.Config) string {
	if cfg.DatabaseDirectURL != "" {
		return cfg.DatabaseDirectURL
	}
	return d.url
}

func (d *database) close(logger *slog.Logger) {
	if d.local == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.local.Stop(ctx); err != nil {
		logger.Error("stop local postgres", "err", err)
	}
}

// openDatabase returns DATABASE_URL, or starts the local cluster in
// DATA_DIR/postgres and returns the URL of its "chatql" database.
func openDatabase(ctx context.Context, cfg config.Config, logger *slog.Logger) (*database, error) {
	if cfg.DatabaseURL != "" {
		return &database{url: cfg.DatabaseURL}, nil
	}
	dir, err := filepath.Abs(filepath.Join(cfg.DataDir, "postgres"))
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	cluster, err := localpg.Open(ctx, localpg.Options{Dir: dir, Logger: logger})
	if err != nil {
		return nil, err
	}
	if err := cluster.Start(ctx); err != nil {
		return nil, err
	}
	db := &database{url: cluster.URL("chatql"), local: cluster, devMode: true}
	if err := cluster.EnsureDatabase(ctx, "chatql"); err != nil {
		db.close(logger)
		return nil, err
	}
	return db, nil
}

func migrate(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	db, err := openDatabase(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer db.close(logger)
	version, err := migrations.Up(ctx, db.migrationURL(cfg), logger)
	if err != nil {
		return err
	}
	logger.Info("database migrated", "version", version)
	return nil
}

func serve(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	db, err := openDatabase(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer db.close(logger)

	if cfg.Migrate {
		version, err := migrations.Up(ctx, db.migrationURL(cfg), logger)
		if err != nil {
			return err
		}
		logger.Info("database schema up to date", "version", version)
	}

	m := metrics.New()
	pool, err := dbpool.New(db.url, cfg.Pool, logger, dbpool.WithObserver(m), dbpool.WithBorrowSite(graph.BorrowSite))
	if err != nil {
		return err
	}
	// By the time the pool closes the HTTP server has drained.
	defer closePool(pool, logger)
	pingCtx, cancel := context.WithTimeout(ctx, cfg.Pool.Timeout)
	err = pool.Ping(pingCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	logger.Info("connection pool ready",
		"pool_size", cfg.Pool.Size, "max_overflow", cfg.Pool.MaxOverflow,
		"timeout", cfg.Pool.Timeout, "recycle", cfg.Pool.Recycle, "pre_ping", cfg.Pool.PrePing)

	// The realtime listener: one connection of its own, outside the pool.
	// It stops after the websockets end and before the pool closes.
	listenURL := db.url
	if cfg.DatabaseDirectURL != "" {
		listenURL = cfg.DatabaseDirectURL
	}
	hub, err := realtime.New(realtime.Options{URL: listenURL, ApplicationName: cfg.Pool.ApplicationName + "-listener", Logger: logger})
	if err != nil {
		return err
	}
	hubCtx, stopHub := context.WithCancel(context.WithoutCancel(ctx))
	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		hub.Run(hubCtx)
	}()
	defer func() {
		stopHub()
		<-hubDone
	}()

	streams := graph.NewStreams()
	api := apiConfig{pool: pool, logger: logger, cfg: cfg, devMode: db.devMode, metrics: m, hub: hub, streams: streams}
	if api.tokens, err = newTokens(cfg, db.devMode); err != nil {
		return err
	}
	if db.devMode {
		seeded, err := demo.Seed(ctx, pool)
		if err != nil {
			return err
		}
		if seeded {
			logger.Info("demo data seeded", "users", len(demo.Users), "password", demo.Password)
		}
		if api.demoHeader, err = demoHeader(ctx, pool, api.tokens); err != nil {
			return err
		}
		logger.Info("demo Authorization header (signed in as "+demo.Users[0].Email+")", "header", "Authorization: "+api.demoHeader)
	}

	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	// Websockets are hijacked connections that Shutdown does not wait for
	// or end: once HTTP has drained they are closed with "going away" and
	// waited for; anything left then ends with baseCtx, whose cancelling
	// stops every subscription.
	baseCtx, endWebsockets := context.WithCancel(context.WithoutCancel(ctx))
	defer endWebsockets()
	srv := &http.Server{
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		Handler:           newHandler(api),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// A response may wait up to the pool timeout for a connection first.
		WriteTimeout: cfg.Pool.Timeout + 30*time.Second,
		IdleTimeout:  120 * time.Second,
		ErrorLog:     slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	logger.Info("chatql listening", "addr", ln.Addr().String(),
		"playground", "http://"+playgroundHost(ln.Addr())+"/")

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}

	logger.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Shutdown stops accepting at once and waits for requests in flight,
	// which is not what subscriptions need: meanwhile websockets are told
	// to go away (Shutdown neither waits for nor ends hijacked
	// connections) and SSE streams are completed (Shutdown would wait its
	// whole timeout for them).
	drained := make(chan error, 1)
	go func() { drained <- srv.Shutdown(shutdownCtx) }()
	if ws, sse := streams.Websockets(), streams.SSE(); ws+sse > 0 {
		logger.Info("ending subscriptions", "websockets", ws, "sse_streams", sse)
	}
	if err := streams.Shutdown(shutdownCtx); err != nil {
		logger.Warn("subscriptions still open at shutdown timeout; dropping them",
			"websockets", streams.Websockets(), "sse_streams", streams.SSE())
	}
	stopHub()
	<-hubDone
	if err := <-drained; err != nil {
		// In-flight requests outlived the timeout: cut them off so that
		// their connections come back and the pool can close.
		logger.Warn("requests still in flight at shutdown timeout; closing them", "err", err)
		srv.Close()
	}
	endWebsockets()
	logger.Info("http server stopped")
	return nil
}

// closePool closes the pool, waiting a bounded time for borrowed
// connections: a connection leaked by a bug must not keep the process from
// exiting (its socket closes with the process).
func closePool(pool *dbpool.Pool, logger *slog.Logger) {
	closed := make(chan struct{})
	go func() {
		pool.Close()
		close(closed)
	}()
	select {
	case <-closed:
		logger.Info("connection pool closed")
	case <-time.After(10 * time.Second):
		logger.Error("connections still checked out at exit; exiting anyway", "checked_out", pool.Stats().CheckedOut)
	}
}

// apiConfig is what the HTTP surface is built from.
type apiConfig struct {
	pool    *dbpool.Pool
	tokens  *auth.Tokens
	logger  *slog.Logger
	cfg     config.Config
	devMode bool
	// demoHeader is the Authorization value the dev-mode playground sends.
	demoHeader string
	// metrics records into the registry /metrics serves; nil: a new one.
	metrics *metrics.Metrics
	// hub feeds messageAdded subscriptions; nil refuses them.
	hub *realtime.Hub
	// streams, when set, registers websockets and SSE streams for shutdown.
	streams *graph.Streams
	// fieldMiddleware wraps every resolver; only tests set it.
	fieldMiddleware graphql.FieldMiddleware
}

// newHandler builds the whole HTTP surface; tests use it as the server does.
func newHandler(api apiConfig) http.Handler {
	dbStats := api.devMode
	if api.cfg.DBStats != nil {
		dbStats = *api.cfg.DBStats
	}
	mux := http.NewServeMux()
	m := api.metrics
	if m == nil {
		m = metrics.New()
	}
	m.WatchPool(api.pool)
	if api.hub != nil {
		m.WatchHub(api.hub)
	}
	if api.streams == nil {
		api.streams = graph.NewStreams()
	}
	m.WatchStreams(api.streams.Websockets, api.streams.SSE)
	guard := func(h http.Handler) http.Handler { return metrics.RequireToken(api.cfg.MetricsToken, h) }
	health.Register(mux, api.pool, api.logger, guard)
	mux.Handle("GET /metrics", guard(m.Handler()))
	mux.Handle("/query", graph.NewHandler(graph.Options{
		OnOperation:     m.Operation,
		Pool:            api.pool,
		Tokens:          api.tokens,
		Hub:             api.hub,
		Logger:          api.logger,
		AutoProvision:   api.cfg.AutoProvision,
		Introspection:   api.cfg.Introspection,
		DBStats:         dbStats,
		FieldMiddleware: api.fieldMiddleware,
		AllowedOrigins:  api.cfg.CORSOrigins,
		Streams:         api.streams,
	}))
	mux.Handle("GET /{$}", playgroundHandler(api.demoHeader))
	return mux
}

// playgroundHandler serves GraphiQL on /query. A visit without a query
// opens the inbox example; in dev mode the demo header is filled in.
func playgroundHandler(demoHeader string) http.Handler {
	opts := []playground.GraphiqlConfigOption{playground.WithGraphiqlPersistStateInURL(true)}
	if demoHeader != "" {
		opts = append(opts, playground.WithGraphiqlUiHeaders(map[string]string{"Authorization": demoHeader}))
	}
	page := playground.Handler("chatql", "/query", opts...)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery == "" {
			http.Redirect(w, r, "/?query="+url.QueryEscape(graph.InboxQuery), http.StatusFound)
			return
		}
		page(w, r)
	})
}

// newTokens builds the token issuer from JWT_SECRET; in dev mode without
// one, from a secret generated once and kept in DATA_DIR.
func newTokens(cfg config.Config, devMode bool) (*auth.Tokens, error) {
	secret := cfg.JWTSecret
	if secret == "" {
		if !devMode {
			return nil, errors.New("JWT_SECRET is not set")
		}
		var err error
		if secret, err = devSecret(filepath.Join(cfg.DataDir, "jwt-secret")); err != nil {
			return nil, err
		}
	}
	return auth.NewTokens([]byte(secret), cfg.JWTTTL)
}

// devSecret reads the secret at path, creating it on first use.
func devSecret(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(b) >= config.MinJWTSecretLength {
		return string(b), nil
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generate dev JWT secret: %w", err)
	}
	secret := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(secret), 0o600); err != nil {
		return "", fmt.Errorf("store dev JWT secret: %w", err)
	}
	return secret, nil
}

// demoHeader signs in the first demo user for the playground.
func demoHeader(ctx context.Context, pool *dbpool.Pool, tokens *auth.Tokens) (string, error) {
	id, err := demo.UserID(ctx, pool, demo.Users[0].Email)
	if err != nil {
		return "", err
	}
	token, _, err := tokens.Issue(id)
	if err != nil {
		return "", fmt.Errorf("issue demo token: %w", err)
	}
	return "Bearer " + token, nil
}

// playgroundHost turns a listen address into something a browser can open.
func playgroundHost(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || tcp.IP.IsUnspecified() {
		if ok {
			return fmt.Sprintf("localhost:%d", tcp.Port)
		}
		return addr.String()
	}
	return tcp.String()
}
