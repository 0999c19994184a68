// Command chatql is a GraphQL API server for chat applications on
// PostgreSQL, built so that it never exhausts its database connection
// budget.
//
//	chatql           serve (the default)
//	chatql migrate   apply pending migrations and exit
//
// Configuration comes from the environment, and from a .env file in the
// working directory when there is one (real environment variables win).
// Without DATABASE_URL, chatql runs in dev mode (dev.go): a private
// PostgreSQL in .data/ with demo data.
//
// This file is the wiring, in the order things start: configuration,
// database, pool, realtime listener, HTTP handler, server; shutdown runs
// it backwards.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/jackc/pgx/v5"

	"chatql/admission"
	"chatql/auth"
	"chatql/chat"
	"chatql/config"
	"chatql/dbpool"
	"chatql/document"
	"chatql/graph"
	"chatql/health"
	"chatql/localpg"
	"chatql/metrics"
	"chatql/migrations"
	"chatql/playground"
	"chatql/realtime"
	"chatql/web"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitConfig = 2 // bad configuration or usage: nothing was started
)

// defaultGCPercent is the garbage collector's target unless GOGC is set.
// Executing a GraphQL operation allocates a lot of short-lived memory over
// a small live heap, so Go's default of 100 spends a large share of the
// CPU collecting; 400 trades a few tens of megabytes of heap for markedly
// more throughput (docs/performance.md).
const defaultGCPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := config.LoadDotEnv(config.DotEnv); err != nil {
		fmt.Fprintln(os.Stderr, "chatql:", err)
		os.Exit(exitConfig)
	}
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr))
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

// database is where chatql runs: DATABASE_URL, or in dev mode the private
// local cluster, which close stops.
type database struct {
	url string
	// directURL is for migrations and the listener (config.DirectURL).
	directURL string
	local     *localpg.Cluster // dev mode only
}

func (d *database) devMode() bool { return d.local != nil }

// openDatabase returns DATABASE_URL, or starts the dev-mode cluster.
func openDatabase(ctx context.Context, cfg config.Config, logger *slog.Logger) (*database, error) {
	if cfg.DatabaseURL == "" {
		return openLocalDatabase(ctx, cfg, logger)
	}
	return &database{url: cfg.DatabaseURL, directURL: cfg.DirectURL(cfg.DatabaseURL)}, nil
}

func migrate(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	db, err := openDatabase(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer db.close(logger)
	version, err := migrations.Up(ctx, db.directURL, logger)
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
		version, err := migrations.Up(ctx, db.directURL, logger)
		if err != nil {
			return err
		}
		logger.Info("database schema up to date", "version", version)
	}

	// The realtime listener: one connection of its own, outside the pool
	// but inside the budget when it shares the endpoint (Pool.Reserved).
	var hub *realtime.Hub
	stopHub := func() {}
	if cfg.Realtime {
		if hub, err = newListener(db.directURL, cfg, logger); err != nil {
			return err
		}
	}
	logBudget(db, cfg, logger)

	m := metrics.New()
	pool, err := openPool(ctx, db.url, cfg, logger, m, hub)
	if err != nil {
		return err
	}
	// Deferred first, so it runs last: after the listener stops and the
	// HTTP server has drained.
	defer closePool(pool, logger)
	if hub != nil {
		stopHub = startListener(ctx, hub)
	}
	defer stopHub()

	api := apiConfig{pool: pool, logger: logger, cfg: cfg, devMode: db.devMode(), metrics: m, hub: hub, streams: web.NewStreams()}
	jwks, err := startJWKS(ctx, cfg, logger)
	if err != nil {
		return err
	}
	if jwks != nil {
		defer jwks.Close()
		api.tokenOptions = append(api.tokenOptions, auth.WithJWKS(jwks))
	}
	if cfg.AuthIssuer != "" {
		api.tokenOptions = append(api.tokenOptions, auth.WithIssuer(cfg.AuthIssuer))
	}
	if db.devMode() {
		err = api.setUpDevMode(ctx)
	} else {
		api.tokens, err = auth.NewTokens([]byte(cfg.JWTSecret), cfg.JWTTTL, api.tokenOptions...)
	}
	if err != nil {
		return err
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
		ReadTimeout:       cfg.HTTPReadTimeout,
		// A response may wait up to the pool timeout for a connection first.
		WriteTimeout: cfg.Pool.Timeout + 30*time.Second,
		IdleTimeout:  120 * time.Second,
		ErrorLog:     slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if cfg.Playground {
		logger.Info("chatql listening", "addr", ln.Addr().String(),
			"playground", "http://"+playgroundHost(ln.Addr())+"/")
	} else {
		logger.Info("chatql listening", "addr", ln.Addr().String())
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	shutdown(srv, api.streams, stopHub, cfg.ShutdownTimeout, logger)
	endWebsockets()
	logger.Info("http server stopped")
	return nil
}

// startJWKS starts fetching the signing keys of SUPABASE_URL or
// AUTH_JWKS_URL in the background, or returns nil when neither is set.
// It never waits for the network: /health/ready says "no signing keys"
// until the first fetch succeeds.
func startJWKS(ctx context.Context, cfg config.Config, logger *slog.Logger) (*auth.JWKS, error) {
	if cfg.JWKSURL == "" {
		if cfg.AuthIssuer == "" {
			logger.Info("Supabase tokens: HS256 with JWT_SECRET only, any issuer ending in /auth/v1 (set SUPABASE_URL for signing keys)")
		}
		return nil, nil
	}
	jwks, err := auth.NewJWKS(context.WithoutCancel(ctx), auth.JWKSConfig{
		URL:                cfg.JWKSURL,
		RefreshInterval:    cfg.JWKSRefresh,
		MinRefreshInterval: cfg.JWKSMinRefresh,
		Logger:             logger,
	})
	if err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	logger.Info("Supabase tokens: signing keys from the JWKS, HS256 with JWT_SECRET",
		"jwks_url", cfg.JWKSURL, "issuer", cfg.AuthIssuer, "refresh", cfg.JWKSRefresh)
	return jwks, nil
}

// logBudget states the connection arithmetic in one line per endpoint.
func logBudget(db *database, cfg config.Config, logger *slog.Logger) {
	size, overflow := cfg.Pool.Lendable()
	budget := fmt.Sprintf("budget %d to %s: pool up to %d (size %d + overflow %d)",
		cfg.Pool.MaxConnections(), endpoint(db.url), size+overflow, size, overflow)
	switch {
	case cfg.Pool.Reserved > 0:
		budget += fmt.Sprintf(" + listener %d", cfg.Pool.Reserved)
	case cfg.Realtime:
		budget += fmt.Sprintf("; listener 1 to %s", endpoint(db.directURL))
	default:
		budget += "; realtime off, no listener"
	}
	logger.Info(budget)
}

// endpoint is the host:port a database URL connects to, for logs.
func endpoint(url string) string {
	c, err := pgx.ParseConfig(url)
	if err != nil {
		return "(unparsable URL)"
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port)))
}

// openPool opens the bounded pool and checks that the database answers
// (pgxpool connects lazily). hub, when it shares the budget, shows in the
// pool's snapshot as the listener.
func openPool(ctx context.Context, url string, cfg config.Config, logger *slog.Logger, m *metrics.Metrics, hub *realtime.Hub) (*dbpool.Pool, error) {
	opts := []dbpool.Option{dbpool.WithObserver(m), dbpool.WithBorrowSite(graph.BorrowSite)}
	if hub != nil {
		opts = append(opts, dbpool.WithListener(func() bool { return hub.Stats().Listening }))
	}
	pool, err := dbpool.New(url, cfg.Pool, logger, opts...)
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, cfg.Pool.Timeout)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	logger.Info("connection pool ready",
		"pool_size", cfg.Pool.Size, "max_overflow", cfg.Pool.MaxOverflow,
		"timeout", cfg.Pool.Timeout, "recycle", cfg.Pool.Recycle, "pre_ping", cfg.Pool.PrePing,
		"pooler", cfg.Pool.Pooler.String(), "statement_timeout", cfg.Pool.StatementTimeout)
	if cfg.Pool.Echo && cfg.Pool.EchoParameters {
		logger.Warn("DB_ECHO_PARAMETERS is on: the SQL log shows statement arguments, password hashes and message bodies included")
	}
	return pool, nil
}

// newListener prepares the realtime hub on url; startListener runs it.
func newListener(url string, cfg config.Config, logger *slog.Logger) (*realtime.Hub, error) {
	return realtime.New(realtime.Options{
		URL: url, ApplicationName: cfg.Pool.ApplicationName + "-listener", Missed: chat.MessagesSince, Logger: logger,
	})
}

// startListener runs hub until the returned stop, which waits for it and
// may be called more than once.
func startListener(ctx context.Context, hub *realtime.Hub) (stop func()) {
	hubCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		hub.Run(hubCtx)
	}()
	return func() { cancel(); <-done }
}

// shutdown stops srv within timeout. http.Server.Shutdown stops accepting
// at once and waits for requests in flight, which is not what
// subscriptions need: meanwhile websockets are told to go away (Shutdown
// neither waits for nor ends hijacked connections) and SSE streams are
// completed (Shutdown would wait its whole timeout for them). The listener
// stops once no subscriber is left.
func shutdown(srv *http.Server, streams *web.Streams, stopHub func(), timeout time.Duration, logger *slog.Logger) {
	logger.Info("shutting down", "timeout", timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- srv.Shutdown(ctx) }()
	if ws, sse := streams.Websockets(), streams.SSE(); ws+sse > 0 {
		logger.Info("ending subscriptions", "websockets", ws, "sse_streams", sse)
	}
	if err := streams.Shutdown(ctx); err != nil {
		logger.Warn("subscriptions still open at shutdown timeout; dropping them",
			"websockets", streams.Websockets(), "sse_streams", streams.SSE())
	}
	stopHub()
	if err := <-drained; err != nil {
		// In-flight requests outlived the timeout: cut them off so that
		// their connections come back and the pool can close.
		logger.Warn("requests still in flight at shutdown timeout; closing them", "err", err)
		srv.Close()
	}
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
	pool   *dbpool.Pool
	tokens *auth.Tokens
	// tokenOptions configure the verifier (issuer, key set); tokens is
	// built with them.
	tokenOptions []auth.Option
	logger       *slog.Logger
	cfg          config.Config
	devMode      bool
	// demoHeader is the Authorization value the dev-mode playground sends.
	demoHeader string
	// metrics records into the registry /metrics serves.
	metrics *metrics.Metrics
	// hub feeds messageAdded subscriptions; nil refuses them.
	hub *realtime.Hub
	// streams registers websockets and SSE streams for shutdown.
	streams *web.Streams
	// fieldMiddleware wraps every resolver; only tests set it.
	fieldMiddleware graphql.FieldMiddleware
	// passwords is the bcrypt gate; nil means auth.DefaultPasswords. Only
	// tests set it.
	passwords *auth.Passwords
	// queryCache holds parsed documents and persisted queries; nil means
	// one of cfg.QueryCacheBytes (tests pass their own to watch it).
	queryCache *document.Cache
}

// newAdmission builds the admission controller of cfg, its global limit
// by default sized from the pool: every connection the pool lends busy,
// plus one operation per core.
func newAdmission(cfg admission.Config, pool *dbpool.Pool, m *metrics.Metrics) *admission.Controller {
	if cfg.MaxConcurrent == 0 {
		size, overflow := pool.Config().Lendable()
		cfg.MaxConcurrent = admission.DefaultMaxConcurrent(size + overflow)
	}
	c := admission.New(cfg, admission.WithObserver(m))
	m.WatchAdmission(c)
	return c
}

// newHandler builds the whole HTTP surface; tests use it as the server does.
func newHandler(api apiConfig) http.Handler {
	dbStats := api.devMode
	if api.cfg.DBStats != nil {
		dbStats = *api.cfg.DBStats
	}
	m := api.metrics
	m.WatchPool(api.pool)
	if api.hub != nil {
		m.WatchHub(api.hub)
	}
	m.WatchStreams(api.streams.Websockets, api.streams.SSE)
	mux := http.NewServeMux()
	guard := func(h http.Handler) http.Handler { return metrics.RequireToken(api.cfg.MetricsToken, h) }
	var ready []health.Check
	if jwks := api.tokens.JWKS(); jwks != nil {
		m.WatchJWKS(jwks.Stats)
		ready = append(ready, func() (string, bool) { return health.ReasonNoSigningKeys, jwks.Ready() == nil })
	}
	health.Register(mux, api.pool, api.logger, guard, ready...)
	admit := newAdmission(api.cfg.Admission, api.pool, m)
	health.RegisterAdmission(mux, admit, guard)
	mux.Handle("GET /metrics", guard(m.Handler()))
	if api.queryCache == nil {
		api.queryCache = document.NewCache(api.cfg.QueryCacheBytes)
	}
	mux.Handle("/query", graph.NewHandler(graph.Options{
		OnOperation:     m.Operation,
		Pool:            api.pool,
		Tokens:          api.tokens,
		Hub:             api.hub,
		Logger:          api.logger,
		AutoProvision:   api.cfg.AutoProvision,
		AllowAnonymous:  api.cfg.AllowAnonymous,
		Introspection:   api.cfg.Introspection,
		DBStats:         dbStats,
		FieldMiddleware: api.fieldMiddleware,
		AllowedOrigins:  api.cfg.CORSOrigins,
		Streams:         api.streams,
		Passwords:       api.passwords,
		SignInLimits: graph.SignInLimits{
			MaxFailures:          api.cfg.SignInMaxFailures,
			MaxFailuresPerEmail:  api.cfg.SignInMaxFailuresPerEmail,
			Window:               api.cfg.SignInWindow,
			MaxSignUpsPerAddress: api.cfg.SignUpMaxPerAddress,
		},
		TrustedProxies: api.cfg.TrustedProxies,
		DocumentLimits: api.cfg.DocumentLimits,
		DocumentCache:  api.queryCache,
		Admission:      admit,
	}))
	mux.Handle("GET /schema.graphql", graph.SchemaHandler(api.cfg.Introspection))
	if api.cfg.Playground {
		opts := playground.Options{Endpoint: "/query", Query: graph.InboxQuery}
		if api.demoHeader != "" {
			opts.Headers = map[string]string{"Authorization": api.demoHeader}
		}
		if err := playground.Register(mux, opts); err != nil {
			panic(err) // the embedded page does not execute: a bug in this build
		}
	}
	return mux
}
