// Package config reads chatql's settings from the environment. It reports
// every bad variable at once, each with the value given and what is
// accepted, so that a misconfigured deployment fails before it listens and
// is fixed in one round.
package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"chatql/admission"
	"chatql/auth"
	"chatql/dbpool"
	"chatql/document"
	"chatql/web"
)

// Config is the whole of chatql's configuration.
type Config struct {
	// DatabaseURL is the Postgres URL or keyword/value DSN; empty means
	// "start the private local Postgres in DataDir".
	DatabaseURL string
	// DatabaseDirectURL is where the realtime listener connects when set:
	// a direct (session) connection, for when DATABASE_URL goes through a
	// transaction-mode pooler, which cannot keep a LISTEN. Empty means
	// DATABASE_URL.
	DatabaseDirectURL string
	// Pool is the pool's share of the budget; Pool.Reserved is 1 when the
	// realtime listener connects to the same endpoint.
	Pool dbpool.Config
	// Realtime runs the realtime listener and serves messageAdded
	// (REALTIME, on by default).
	Realtime bool
	// Migrate applies pending migrations at startup.
	Migrate bool
	// ListenAddr is the host:port the HTTP server listens on.
	ListenAddr string
	// DataDir holds the local Postgres cluster and dev-mode secrets.
	DataDir         string
	ShutdownTimeout time.Duration
	// HTTPReadTimeout is how long a client has to send a whole request,
	// body included; a body that does not arrive in time gets 408.
	HTTPReadTimeout time.Duration
	LogLevel        slog.Level
	LogFormat       string // "text" or "json"

	// MetricsToken, when set, is required as a bearer token by /metrics
	// and /health/db-pool.
	MetricsToken string

	// JWTSecret signs and verifies access tokens (HS256). Empty is allowed
	// only with the local database: dev mode then keeps a generated one.
	JWTSecret string
	// JWTTTL is how long tokens from signIn and signUp are valid.
	JWTTTL time.Duration
	// AutoProvision creates the user row on a Supabase user's first request.
	AutoProvision bool
	// AuthIssuer is the exact iss of Supabase (external) tokens:
	// AUTH_ISSUER, else SUPABASE_URL + "/auth/v1". Empty keeps the legacy
	// rule: any issuer ending in /auth/v1, HS256 only.
	AuthIssuer string
	// JWKSURL is where the public keys of asymmetrically signed tokens
	// are fetched: AUTH_JWKS_URL, else SUPABASE_URL +
	// "/auth/v1/.well-known/jwks.json". Empty accepts HS256 tokens only.
	JWKSURL string
	// JWKSRefresh is how often the key set is fetched again.
	JWKSRefresh time.Duration
	// JWKSMinRefresh is the shortest time between two fetches triggered
	// by tokens with an unknown kid.
	JWKSMinRefresh time.Duration
	// AllowAnonymous accepts Supabase anonymous sign-ins (is_anonymous).
	AllowAnonymous bool
	// Introspection allows GraphQL schema introspection.
	Introspection bool
	// Playground serves GraphiQL at /; off for production deployments
	// that want no page at all.
	Playground bool
	// DBStats adds extensions.db to every GraphQL response. nil means the
	// default: on in dev mode (local database), off otherwise.
	DBStats *bool
	// CORSOrigins are the browser origins of other sites allowed to use
	// the API (CORS for HTTP, the Origin check for websockets): origins
	// such as https://app.example.com, with * allowed in the host, or "*"
	// for any. Empty, the default, means same-origin only.
	CORSOrigins []string

	// SignInMaxFailures is how many failed sign-ins one email may have
	// from one client address per SignInWindow; SignInMaxFailuresPerEmail
	// from all addresses together. SignUpMaxPerAddress is how many
	// sign-ups one address may attempt per hour. 0 means no limit.
	SignInMaxFailures         int
	SignInMaxFailuresPerEmail int
	SignInWindow              time.Duration
	SignUpMaxPerAddress       int
	// TrustedProxies are the proxies whose X-Forwarded-For or Forwarded
	// header names the client (TRUSTED_PROXIES); none by default.
	TrustedProxies web.TrustedProxies
	// DocumentLimits bound every GraphQL document before it is validated
	// (QUERY_MAX_TOKENS, QUERY_MAX_FIELDS, QUERY_MAX_DEPTH).
	DocumentLimits document.Limits
	// QueryCacheBytes bounds the parsed-document and persisted-query cache
	// (QUERY_CACHE_BYTES).
	QueryCacheBytes int
	// Admission is the per-principal admission (ADMISSION_PER_USER,
	// ADMISSION_QUEUE_PER_USER, ADMISSION_MAX_CONCURRENT,
	// ADMISSION_MAX_WAIT, SUBSCRIPTIONS_PER_USER). MaxConcurrent 0 means
	// the default for the pool (admission.DefaultMaxConcurrent), decided
	// where the pool is known.
	Admission admission.Config
}

// MinJWTSecretLength is the shortest JWT_SECRET accepted: HS256 is only as
// strong as its key.
const MinJWTSecretLength = 32

// Problem is one bad variable.
type Problem struct {
	Var, Value, Want string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s=%s (want %s)", p.Var, p.Value, p.Want)
}

// Error lists every bad variable; its message is one line.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "bad configuration: " + strings.Join(parts, "; ")
}

// Load reads the configuration through getenv (os.Getenv in production). A
// returned error is an *Error naming every bad variable.
func Load(getenv func(string) string) (Config, error) {
	r := reader{getenv: getenv}
	pooler := r.pooler("DB_POOLER")
	c := Config{
		DatabaseURL:       strings.TrimSpace(getenv("DATABASE_URL")),
		DatabaseDirectURL: strings.TrimSpace(getenv("DATABASE_DIRECT_URL")),
		Pool: dbpool.Config{
			Size:             r.int("DB_POOL_SIZE", 5, 1),
			MaxOverflow:      r.int("DB_MAX_OVERFLOW", 10, 0),
			Timeout:          r.seconds("DB_POOL_TIMEOUT", 30*time.Second, false),
			Recycle:          r.seconds("DB_POOL_RECYCLE", time.Hour, true),
			PrePing:          r.bool("DB_POOL_PRE_PING", true),
			Echo:             r.bool("DB_ECHO", false),
			EchoParameters:   r.bool("DB_ECHO_PARAMETERS", false),
			ApplicationName:  r.string("DB_APPLICATION_NAME", "chatql"),
			QueryExecMode:    r.execMode("DB_QUERY_EXEC_MODE", pooler),
			SlowAcquire:      r.secondsOrOff("DB_SLOW_ACQUIRE", time.Second),
			StatementTimeout: r.secondsOrOff("DB_STATEMENT_TIMEOUT", 30*time.Second),
			Pooler:           pooler,
			LeakThreshold:    r.secondsOrOff("DB_LEAK_THRESHOLD", 30*time.Second),
			MaxStatements:    r.int("DB_MAX_STATEMENTS", dbpool.DefaultMaxStatements, 1),
		},
		Realtime:        r.bool("REALTIME", true),
		Migrate:         r.bool("DB_MIGRATE", true),
		DataDir:         r.string("DATA_DIR", ".data"),
		ShutdownTimeout: r.seconds("SHUTDOWN_TIMEOUT", 20*time.Second, false),
		HTTPReadTimeout: r.seconds("HTTP_READ_TIMEOUT", 30*time.Second, false),
		LogLevel:        r.level("LOG_LEVEL"),
		LogFormat:       r.oneOf("LOG_FORMAT", "text", "text", "json"),
		JWTSecret:       r.string("JWT_SECRET", ""),
		MetricsToken:    r.string("METRICS_TOKEN", ""),
		JWTTTL:          r.seconds("JWT_TTL", 24*time.Hour, false),
		AutoProvision:   r.bool("AUTH_AUTO_PROVISION", true),
		JWKSRefresh:     r.seconds("AUTH_JWKS_REFRESH", 10*time.Minute, false),
		JWKSMinRefresh:  r.seconds("AUTH_JWKS_MIN_REFRESH", 30*time.Second, false),
		AllowAnonymous:  r.bool("AUTH_ALLOW_ANONYMOUS", true),
		Introspection:   r.bool("GRAPHQL_INTROSPECTION", true),
		Playground:      r.bool("PLAYGROUND", true),
		DocumentLimits: document.Limits{
			Tokens: r.int("QUERY_MAX_TOKENS", document.DefaultMaxTokens, 1),
			Fields: r.int("QUERY_MAX_FIELDS", document.DefaultMaxFields, 1),
			Depth:  r.int("QUERY_MAX_DEPTH", document.DefaultMaxDepth, 1),
		},
		QueryCacheBytes: r.int("QUERY_CACHE_BYTES", document.DefaultCacheBytes, 1),

		SignInMaxFailures:         r.int("SIGNIN_MAX_FAILURES", 10, 0),
		SignInMaxFailuresPerEmail: r.int("SIGNIN_MAX_FAILURES_PER_EMAIL", 100, 0),
		SignInWindow:              r.seconds("SIGNIN_WINDOW", 15*time.Minute, false),
		SignUpMaxPerAddress:       r.int("SIGNUP_MAX_PER_ADDRESS", 20, 0),
		TrustedProxies:            r.trustedProxies("TRUSTED_PROXIES"),
		Admission: admission.Config{
			PerPrincipal:              r.int("ADMISSION_PER_USER", admission.DefaultPerPrincipal, 0),
			QueuePerPrincipal:         r.int("ADMISSION_QUEUE_PER_USER", admission.DefaultQueuePerPrincipal, 0),
			MaxConcurrent:             r.int("ADMISSION_MAX_CONCURRENT", 0, 0),
			MaxWait:                   r.seconds("ADMISSION_MAX_WAIT", admission.DefaultMaxWait, false),
			SubscriptionsPerPrincipal: r.int("SUBSCRIPTIONS_PER_USER", admission.DefaultSubscriptionsPerPrincipal, 0),
		},
	}
	if c.SignInMaxFailures > 0 && c.SignInMaxFailuresPerEmail > 0 && c.SignInMaxFailuresPerEmail < c.SignInMaxFailures {
		// The per-email count includes every address's: below the
		// per-address limit it would be the only one.
		r.problem("SIGNIN_MAX_FAILURES_PER_EMAIL", strconv.Itoa(c.SignInMaxFailuresPerEmail),
			fmt.Sprintf("at least SIGNIN_MAX_FAILURES (%d), or 0 for no per-email limit", c.SignInMaxFailures))
	}
	if _, set := r.lookup("GRAPHQL_DB_STATS"); set {
		v := r.bool("GRAPHQL_DB_STATS", false)
		c.DBStats = &v
	}
	if c.JWTSecret != "" && len(c.JWTSecret) < MinJWTSecretLength {
		r.problem("JWT_SECRET", fmt.Sprintf("(%d characters, not shown)", len(c.JWTSecret)), fmt.Sprintf("at least %d characters", MinJWTSecretLength))
	}
	c.AuthIssuer, c.JWKSURL = r.issuer()
	c.ListenAddr = r.listenAddr()
	c.CORSOrigins = r.origins("CORS_ORIGINS")
	if c.DatabaseURL != "" {
		if c.JWTSecret == "" {
			r.problem("JWT_SECRET", `""`, fmt.Sprintf("a secret of at least %d characters (required with DATABASE_URL; Supabase: the project's JWT secret)", MinJWTSecretLength))
		}
		if _, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil {
			r.problem("DATABASE_URL", redact(c.DatabaseURL), "a postgres:// URL or a keyword/value DSN such as host=... dbname=...")
		}
	}
	if c.DatabaseDirectURL != "" {
		if _, err := pgx.ParseConfig(c.DatabaseDirectURL); err != nil {
			r.problem("DATABASE_DIRECT_URL", redact(c.DatabaseDirectURL), "a postgres:// URL or a keyword/value DSN, connecting directly (not through a transaction pooler)")
		}
	}
	// The listener's connection comes out of the same budget when it
	// shares the endpoint: the pool must keep at least one.
	if c.Realtime && c.DatabaseDirectURL == "" && c.Pool.Pooler == dbpool.PoolerTransaction {
		r.problem("DATABASE_DIRECT_URL", `""`, "a direct (or session-mode) URL for the realtime listener: LISTEN does not survive a transaction-mode pooler (DB_POOLER=transaction); or set REALTIME=off")
	}
	if c.Realtime && c.DatabaseDirectURL == "" {
		c.Pool.Reserved = 1
		if c.Pool.MaxConnections() < 2 {
			r.problem("DB_POOL_SIZE", fmt.Sprintf("%d with DB_MAX_OVERFLOW=%d", c.Pool.Size, c.Pool.MaxOverflow),
				"a budget of at least 2: the realtime listener holds one of these connections, leaving the pool none; raise DB_MAX_OVERFLOW, set DATABASE_DIRECT_URL for the listener, or set REALTIME=off")
		}
	}
	if len(r.problems) > 0 {
		return Config{}, &Error{Problems: r.problems}
	}
	return c, nil
}

// reader collects problems while reading variables, so all are reported.
type reader struct {
	getenv   func(string) string
	problems []Problem
}

func (r *reader) problem(name, value, want string) {
	r.problems = append(r.problems, Problem{Var: name, Value: value, Want: want})
}

func (r *reader) lookup(name string) (string, bool) {
	v := strings.TrimSpace(r.getenv(name))
	return v, v != ""
}

func (r *reader) string(name, def string) string {
	if v, ok := r.lookup(name); ok {
		return v
	}
	return def
}

func (r *reader) int(name string, def, min int) int {
	v, ok := r.lookup(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min {
		r.problem(name, strconv.Quote(v), fmt.Sprintf("an integer >= %d", min))
		return def
	}
	return n
}

// seconds accepts a number of seconds ("30", "2.5") or a Go duration
// ("500ms", "1m"). With disable, "-1" means off and is returned as 0.
func (r *reader) seconds(name string, def time.Duration, disable bool) time.Duration {
	v, ok := r.lookup(name)
	if !ok {
		return def
	}
	want := "a positive number of seconds (30, 2.5) or a Go duration (500ms)"
	if disable {
		want += ", or -1 to disable"
		if v == "-1" {
			return 0
		}
	}
	d, err := parseSeconds(v)
	if err != nil || d <= 0 {
		r.problem(name, strconv.Quote(v), want)
		return def
	}
	return d
}

// secondsOrOff is seconds where "0" turns the feature off (returned as 0).
func (r *reader) secondsOrOff(name string, def time.Duration) time.Duration {
	if v, ok := r.lookup(name); ok && v == "0" {
		return 0
	}
	v, ok := r.lookup(name)
	if !ok {
		return def
	}
	d, err := parseSeconds(v)
	if err != nil || d <= 0 {
		r.problem(name, strconv.Quote(v), "a positive number of seconds (30, 2.5) or a Go duration (500ms), or 0 to turn it off")
		return def
	}
	return d
}

func parseSeconds(v string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f > float64(1<<62)/float64(time.Second) {
			return 0, fmt.Errorf("too large")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	return time.ParseDuration(v)
}

func (r *reader) bool(name string, def bool) bool {
	v, ok := r.lookup(name)
	if !ok {
		return def
	}
	switch strings.ToLower(v) {
	case "1", "t", "true", "yes", "y", "on":
		return true
	case "0", "f", "false", "no", "n", "off":
		return false
	}
	r.problem(name, strconv.Quote(v), "true or false")
	return def
}

func (r *reader) oneOf(name, def string, allowed ...string) string {
	v, ok := r.lookup(name)
	if !ok {
		return def
	}
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	r.problem(name, strconv.Quote(v), "one of "+strings.Join(allowed, ", "))
	return def
}

// execMode reads DB_QUERY_EXEC_MODE. Its default is exec behind a
// transaction-mode pooler, where cached prepared statements break.
func (r *reader) execMode(name string, pooler dbpool.Pooler) pgx.QueryExecMode {
	def := "cache_statement"
	if pooler == dbpool.PoolerTransaction {
		def = "exec"
	}
	mode, _ := dbpool.QueryExecMode(r.oneOf(name, def, "cache_statement", "exec", "simple_protocol", "cache_describe"))
	return mode
}

// pooler reads DB_POOLER: what DATABASE_URL connects to.
func (r *reader) pooler(name string) dbpool.Pooler {
	p, _ := dbpool.ParsePooler(r.oneOf(name, "none", "none", "session", "transaction"))
	return p
}

func (r *reader) level(name string) slog.Level {
	switch r.oneOf(name, "info", "debug", "info", "warn", "error") {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// origins reads a comma-separated list of origins: "*", or
// http(s)://host[:port] with * allowed in the host, lower-cased and without
// a trailing slash.
func (r *reader) origins(name string) []string {
	v, ok := r.lookup(name)
	if !ok {
		return nil
	}
	var out []string
	for _, o := range strings.Split(v, ",") {
		o = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(o), "/"))
		if o == "" {
			continue
		}
		if !validOrigin(o) {
			r.problem(name, strconv.Quote(v), "comma-separated origins such as https://app.example.com,http://localhost:5173 (* allowed in the host), or *")
			return nil
		}
		out = append(out, o)
	}
	return out
}

func validOrigin(o string) bool {
	if o == "*" {
		return true
	}
	scheme, host, ok := strings.Cut(o, "://")
	if !ok || (scheme != "http" && scheme != "https") || host == "" || strings.ContainsAny(host, "/?#@ ") {
		return false
	}
	// The websocket check matches patterns with path.Match.
	_, err := path.Match(o, "")
	return err == nil
}

// trustedProxies reads a comma-separated list of CIDRs and addresses.
func (r *reader) trustedProxies(name string) web.TrustedProxies {
	v, ok := r.lookup(name)
	if !ok {
		return web.TrustedProxies{}
	}
	t, err := web.ParseTrustedProxies(v)
	if err != nil {
		r.problem(name, strconv.Quote(v), "comma-separated CIDRs or IP addresses of your proxies, such as 10.0.0.0/8,127.0.0.1 ("+err.Error()+")")
		return web.TrustedProxies{}
	}
	return t
}

// issuer reads SUPABASE_URL, AUTH_ISSUER and AUTH_JWKS_URL: the issuer of
// external tokens and the key set that verifies the asymmetric ones. The
// explicit variables win over what SUPABASE_URL implies; a key set needs
// an issuer, since its tokens are then told from others by iss alone.
func (r *reader) issuer() (issuer, jwksURL string) {
	if base, ok := r.lookup("SUPABASE_URL"); ok {
		base = strings.TrimSuffix(base, "/")
		u, err := url.Parse(base)
		switch {
		case err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil:
			r.problem("SUPABASE_URL", strconv.Quote(base), "the project URL, such as https://abcd.supabase.co (no path)")
		case auth.CheckJWKSURL(base) != nil:
			r.problem("SUPABASE_URL", strconv.Quote(base), "an https URL (http only on loopback: 127.0.0.0/8, ::1, localhost)")
		default:
			issuer, jwksURL = base+"/auth/v1", base+"/auth/v1/.well-known/jwks.json"
		}
	}
	if v, ok := r.lookup("AUTH_ISSUER"); ok {
		issuer = v
	}
	if v, ok := r.lookup("AUTH_JWKS_URL"); ok {
		jwksURL = v
		if err := auth.CheckJWKSURL(v); err != nil {
			r.problem("AUTH_JWKS_URL", strconv.Quote(v), "an https URL (http only on loopback: 127.0.0.0/8, ::1, localhost)")
		} else if issuer == "" {
			r.problem("AUTH_ISSUER", `""`, "the iss claim of the tokens AUTH_JWKS_URL's keys sign (Supabase: https://<project>.supabase.co/auth/v1), or set SUPABASE_URL")
		}
	}
	return issuer, jwksURL
}

// listenAddr is LISTEN_ADDR when set, else all interfaces on PORT.
func (r *reader) listenAddr() string {
	if v, ok := r.lookup("LISTEN_ADDR"); ok {
		host, port, err := net.SplitHostPort(v)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
			r.problem("LISTEN_ADDR", strconv.Quote(v), "host:port, e.g. 127.0.0.1:8080 or :8080")
			return ""
		}
		return net.JoinHostPort(host, port)
	}
	port := r.int("PORT", 8080, 0)
	if port > 65535 {
		r.problem("PORT", strconv.Itoa(port), "a port number 0-65535")
	}
	return net.JoinHostPort("", strconv.Itoa(port))
}

// redact hides a password in a database URL or DSN before it is printed.
// It works on malformed input too, since that is when it is printed.
func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return strconv.Quote(u.Redacted())
	}
	if scheme, rest, ok := strings.Cut(dsn, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			user, _, hasPassword := strings.Cut(rest[:at], ":")
			if hasPassword {
				rest = user + ":xxxxx" + rest[at:]
			}
		}
		return strconv.Quote(scheme + "://" + rest)
	}
	if strings.Contains(dsn, "password") {
		return "(value not shown: it contains a password)"
	}
	return strconv.Quote(dsn)
}
