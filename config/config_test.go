package config

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"chatql/dbpool"
	"chatql/document"
)

const testSecret = "0123456789abcdef0123456789abcdef"

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestDefaults(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Pool
	if p.Size != 5 || p.MaxOverflow != 10 || p.Timeout != 30*time.Second || p.Recycle != time.Hour ||
		!p.PrePing || p.Echo || p.ApplicationName != "chatql" {
		t.Errorf("pool defaults: %+v", p)
	}
	if c.DatabaseURL != "" || !c.Migrate || c.ListenAddr != ":8080" || c.LogLevel != slog.LevelInfo || c.LogFormat != "text" || c.DataDir != ".data" {
		t.Errorf("defaults: %+v", c)
	}
}

func TestSupabaseBlock(t *testing.T) {
	c, err := Load(env(map[string]string{
		"DB_POOL_SIZE": "3", "DB_MAX_OVERFLOW": "2", "DB_POOL_TIMEOUT": "30",
		"DB_POOL_RECYCLE": "1800", "DB_ECHO": "false", "PORT": "9000", "JWT_SECRET": testSecret,
		"DATABASE_URL": "postgresql://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:5432/postgres",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Pool.Size != 3 || c.Pool.MaxOverflow != 2 || c.Pool.MaxConnections() != 5 || c.Pool.Recycle != 30*time.Minute || c.ListenAddr != ":9000" {
		t.Errorf("supabase block: %+v", c)
	}
}

func TestDurations(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30": 30 * time.Second, "2.5": 2500 * time.Millisecond, "500ms": 500 * time.Millisecond, "1m": time.Minute,
	} {
		c, err := Load(env(map[string]string{"DB_POOL_TIMEOUT": in}))
		if err != nil || c.Pool.Timeout != want {
			t.Errorf("DB_POOL_TIMEOUT=%s: %v %v, want %v", in, c.Pool.Timeout, err, want)
		}
	}
	c, err := Load(env(map[string]string{"DB_POOL_RECYCLE": "-1"}))
	if err != nil || c.Pool.Recycle != 0 {
		t.Errorf("DB_POOL_RECYCLE=-1: %v %v, want disabled", c.Pool.Recycle, err)
	}
}

func TestKeywordValueDSN(t *testing.T) {
	if _, err := Load(env(map[string]string{"DATABASE_URL": "host=127.0.0.1 port=5432 dbname=chat user=app", "JWT_SECRET": testSecret})); err != nil {
		t.Fatal(err)
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	_, err := Load(env(map[string]string{
		"DB_POOL_SIZE": "abc", "DB_MAX_OVERFLOW": "-3", "DB_POOL_TIMEOUT": "0", "DB_ECHO": "maybe",
		"DB_POOL_RECYCLE": "0", "LOG_LEVEL": "loud", "PORT": "70000",
		"DATABASE_URL": "postgres://u:hunter2@host:notaport/db",
	}))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want *Error", err)
	}
	var vars []string
	for _, p := range ce.Problems {
		vars = append(vars, p.Var)
	}
	want := "DB_POOL_SIZE DB_MAX_OVERFLOW DB_POOL_TIMEOUT DB_POOL_RECYCLE DB_ECHO LOG_LEVEL PORT JWT_SECRET DATABASE_URL"
	if got := strings.Join(vars, " "); got != want {
		t.Errorf("problems for %q, want %q", got, want)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || strings.Contains(msg, "hunter2") {
		t.Errorf("message must be one line without the password: %q", msg)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:pw@h/db":          `"postgres://u:xxxxx@h/db"`,
		"postgres://u:pw@h:bad/db":      `"postgres://u:xxxxx@h:bad/db"`,
		"postgres://h/db":               `"postgres://h/db"`,
		"host=h password=pw dbname=x y": "(value not shown: it contains a password)",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestJWTSecret(t *testing.T) {
	_, err := Load(env(map[string]string{"JWT_SECRET": "short"}))
	if err == nil || !strings.Contains(err.Error(), "JWT_SECRET=(5 characters, not shown)") {
		t.Errorf("short secret: %v", err)
	}
	_, err = Load(env(map[string]string{"DATABASE_URL": "postgres://h/db"}))
	if err == nil || !strings.Contains(err.Error(), "JWT_SECRET") {
		t.Errorf("DATABASE_URL without JWT_SECRET: %v", err)
	}
	c, err := Load(env(map[string]string{"GRAPHQL_DB_STATS": "false", "AUTH_AUTO_PROVISION": "false", "JWT_TTL": "1h"}))
	if err != nil || c.DBStats == nil || *c.DBStats || c.AutoProvision || c.JWTTTL != time.Hour {
		t.Errorf("auth and graphql settings: %+v %v", c, err)
	}
}

func TestQueryExecMode(t *testing.T) {
	for in, want := range map[string]pgx.QueryExecMode{
		"": pgx.QueryExecModeCacheStatement, "exec": pgx.QueryExecModeExec, "simple_protocol": pgx.QueryExecModeSimpleProtocol,
	} {
		c, err := Load(env(map[string]string{"DB_QUERY_EXEC_MODE": in}))
		if err != nil || c.Pool.QueryExecMode != want {
			t.Errorf("DB_QUERY_EXEC_MODE=%q: %v %v", in, c.Pool.QueryExecMode, err)
		}
	}
	if _, err := Load(env(map[string]string{"DB_QUERY_EXEC_MODE": "prepared"})); err == nil || !strings.Contains(err.Error(), "DB_QUERY_EXEC_MODE") {
		t.Errorf("bad mode accepted: %v", err)
	}
}

// TestPooler: DB_POOLER names what DATABASE_URL leads to (none by
// default); behind a transaction pooler DB_QUERY_EXEC_MODE defaults to
// exec, and a mode set explicitly is kept; an unknown pooler is a problem.
func TestPooler(t *testing.T) {
	for _, tc := range []struct {
		pooler, execMode string
		want             dbpool.Pooler
		wantMode         pgx.QueryExecMode
	}{
		{"", "", dbpool.PoolerNone, pgx.QueryExecModeCacheStatement},
		{"none", "", dbpool.PoolerNone, pgx.QueryExecModeCacheStatement},
		{"session", "", dbpool.PoolerSession, pgx.QueryExecModeCacheStatement},
		{"Transaction", "", dbpool.PoolerTransaction, pgx.QueryExecModeExec},
		{"transaction", "simple_protocol", dbpool.PoolerTransaction, pgx.QueryExecModeSimpleProtocol},
		{"transaction", "cache_statement", dbpool.PoolerTransaction, pgx.QueryExecModeCacheStatement},
	} {
		c, err := Load(env(map[string]string{"DB_POOLER": tc.pooler, "DB_QUERY_EXEC_MODE": tc.execMode, "REALTIME": "off"}))
		if err != nil || c.Pool.Pooler != tc.want || c.Pool.QueryExecMode != tc.wantMode {
			t.Errorf("DB_POOLER=%q DB_QUERY_EXEC_MODE=%q: pooler %v, mode %v, %v; want %v, %v",
				tc.pooler, tc.execMode, c.Pool.Pooler, c.Pool.QueryExecMode, err, tc.want, tc.wantMode)
		}
	}
	_, err := Load(env(map[string]string{"DB_POOLER": "pgbouncer"}))
	var cfgErr *Error
	if !errors.As(err, &cfgErr) || len(cfgErr.Problems) != 1 || cfgErr.Problems[0].Var != "DB_POOLER" ||
		!strings.Contains(err.Error(), "none, session, transaction") {
		t.Errorf("DB_POOLER=pgbouncer: err = %v, want one DB_POOLER problem listing the values", err)
	}
}

// TestDatabaseDirectURL: the listener's URL is kept as given; a malformed
// one is reported like DATABASE_URL, password hidden.
func TestDatabaseDirectURL(t *testing.T) {
	direct := "postgresql://postgres:pw@db.ref.supabase.co:5432/postgres"
	c, err := Load(env(map[string]string{
		"DATABASE_URL":        "postgresql://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres",
		"DATABASE_DIRECT_URL": " " + direct + " ",
		"JWT_SECRET":          testSecret,
	}))
	if err != nil || c.DatabaseDirectURL != direct {
		t.Fatalf("direct URL %q, %v; want %q", c.DatabaseDirectURL, err, direct)
	}
	_, err = Load(env(map[string]string{"DATABASE_DIRECT_URL": "postgres://u:hunter2@host:notaport/db"}))
	if err == nil || !strings.Contains(err.Error(), "DATABASE_DIRECT_URL=") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("malformed direct URL: %v", err)
	}
}

func TestLoadDotEnv(t *testing.T) {
	dir := t.TempDir()
	if err := LoadDotEnv(filepath.Join(dir, "missing.env")); err != nil {
		t.Fatalf("a missing .env is not an error: %v", err)
	}
	path := filepath.Join(dir, ".env")
	if err := os.WriteFile(path, []byte("CHATQL_TEST_FROM_FILE=file\nCHATQL_TEST_SET=file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CHATQL_TEST_SET", "env")
	t.Setenv("CHATQL_TEST_FROM_FILE", "") // registers the cleanup
	os.Unsetenv("CHATQL_TEST_FROM_FILE")
	if err := LoadDotEnv(path); err != nil {
		t.Fatal(err)
	}
	if got := os.Getenv("CHATQL_TEST_FROM_FILE"); got != "file" {
		t.Errorf("variable only in .env = %q, want file", got)
	}
	if got := os.Getenv("CHATQL_TEST_SET"); got != "env" {
		t.Errorf("variable in both = %q, want the environment's (env)", got)
	}
	bad := filepath.Join(dir, "bad.env")
	if err := os.WriteFile(bad, []byte("NOT A VALID LINE\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := LoadDotEnv(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("malformed .env: err = %v, want one naming the file", err)
	}
}

func TestDirectURL(t *testing.T) {
	if got := (Config{}).DirectURL("postgres://pool"); got != "postgres://pool" {
		t.Errorf("without DATABASE_DIRECT_URL: %q", got)
	}
	if got := (Config{DatabaseDirectURL: "postgres://direct"}).DirectURL("postgres://pool"); got != "postgres://direct" {
		t.Errorf("with DATABASE_DIRECT_URL: %q", got)
	}
}

// TestRealtimeBudget: the realtime listener's connection comes out of the
// budget when it shares DATABASE_URL's endpoint, not otherwise; a budget
// that leaves the pool nothing is refused, saying what to change.
func TestRealtimeBudget(t *testing.T) {
	base := map[string]string{"DATABASE_URL": "postgres://db/chatql", "JWT_SECRET": testSecret, "DB_POOL_SIZE": "3", "DB_MAX_OVERFLOW": "2"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		env      map[string]string
		realtime bool
		reserved int
	}{
		{"shared endpoint", base, true, 1},
		{"direct URL for the listener", with(map[string]string{"DATABASE_DIRECT_URL": "postgres://direct/chatql"}), true, 0},
		{"realtime off", with(map[string]string{"REALTIME": "off"}), false, 0},
		{"1 + 0, realtime off", with(map[string]string{"REALTIME": "off", "DB_POOL_SIZE": "1", "DB_MAX_OVERFLOW": "0"}), false, 0},
		{"1 + 0, direct URL", with(map[string]string{"DATABASE_DIRECT_URL": "postgres://direct/chatql", "DB_POOL_SIZE": "1", "DB_MAX_OVERFLOW": "0"}), true, 0},
		{"2 + 0, shared", with(map[string]string{"DB_POOL_SIZE": "2", "DB_MAX_OVERFLOW": "0"}), true, 1},
	} {
		c, err := Load(env(tc.env))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if c.Realtime != tc.realtime || c.Pool.Reserved != tc.reserved {
			t.Errorf("%s: realtime %v, reserved %d; want %v, %d", tc.name, c.Realtime, c.Pool.Reserved, tc.realtime, tc.reserved)
		}
	}
	_, err := Load(env(with(map[string]string{"DB_POOL_SIZE": "1", "DB_MAX_OVERFLOW": "0"})))
	var cfgErr *Error
	if !errors.As(err, &cfgErr) || len(cfgErr.Problems) != 1 || cfgErr.Problems[0].Var != "DB_POOL_SIZE" ||
		!strings.Contains(err.Error(), "REALTIME=off") || !strings.Contains(err.Error(), "DATABASE_DIRECT_URL") {
		t.Errorf("1 + 0 with the listener sharing the endpoint: err = %v, want one DB_POOL_SIZE problem naming the ways out", err)
	}
}

// TestRealtimeNeedsSession: LISTEN through a transaction-mode pooler would
// hear nothing, so that combination is refused unless the listener has a
// direct URL or realtime is off.
func TestRealtimeNeedsSession(t *testing.T) {
	base := map[string]string{"DATABASE_URL": "postgres://pooler:6543/chatql", "JWT_SECRET": testSecret, "DB_POOLER": "transaction"}
	_, err := Load(env(base))
	var cfgErr *Error
	if !errors.As(err, &cfgErr) || len(cfgErr.Problems) != 1 || cfgErr.Problems[0].Var != "DATABASE_DIRECT_URL" {
		t.Errorf("transaction pooler, realtime on, no direct URL: err = %v, want one DATABASE_DIRECT_URL problem", err)
	}
	for name, extra := range map[string][2]string{
		"direct URL":   {"DATABASE_DIRECT_URL", "postgres://db:5432/chatql"},
		"realtime off": {"REALTIME", "off"},
	} {
		vars := map[string]string{extra[0]: extra[1]}
		for k, v := range base {
			vars[k] = v
		}
		if _, err := Load(env(vars)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestMaxStatements: DB_MAX_STATEMENTS defaults to the pool's default
// budget, takes any positive integer, and refuses 0, negatives and
// non-integers, each as one DB_MAX_STATEMENTS problem.
func TestMaxStatements(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil || c.Pool.MaxStatements != dbpool.DefaultMaxStatements || dbpool.DefaultMaxStatements != 50 {
		t.Errorf("default: %d, %v; want 50", c.Pool.MaxStatements, err)
	}
	for in, want := range map[string]int{"1": 1, "200": 200, " 7 ": 7} {
		c, err := Load(env(map[string]string{"DB_MAX_STATEMENTS": in}))
		if err != nil || c.Pool.MaxStatements != want {
			t.Errorf("DB_MAX_STATEMENTS=%q: %d, %v; want %d", in, c.Pool.MaxStatements, err, want)
		}
	}
	for _, in := range []string{"0", "-1", "ten", "2.5"} {
		_, err := Load(env(map[string]string{"DB_MAX_STATEMENTS": in}))
		var cfgErr *Error
		if !errors.As(err, &cfgErr) || len(cfgErr.Problems) != 1 || cfgErr.Problems[0].Var != "DB_MAX_STATEMENTS" ||
			!strings.Contains(err.Error(), "an integer >= 1") {
			t.Errorf("DB_MAX_STATEMENTS=%q: err = %v, want one DB_MAX_STATEMENTS problem asking for an integer >= 1", in, err)
		}
	}
}

// TestDocumentLimits: QUERY_MAX_TOKENS, QUERY_MAX_FIELDS, QUERY_MAX_DEPTH
// and QUERY_CACHE_BYTES default to the document package's defaults, take
// positive integers, and refuse anything else as one problem each naming
// the variable.
func TestDocumentLimits(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.DocumentLimits != (document.Limits{}).WithDefaults() || c.QueryCacheBytes != document.DefaultCacheBytes {
		t.Errorf("defaults: %+v, %d bytes", c.DocumentLimits, c.QueryCacheBytes)
	}
	c, err = Load(env(map[string]string{"QUERY_MAX_TOKENS": "2000", "QUERY_MAX_FIELDS": "100", "QUERY_MAX_DEPTH": "10", "QUERY_CACHE_BYTES": "1048576"}))
	if err != nil || c.DocumentLimits != (document.Limits{Tokens: 2000, Fields: 100, Depth: 10}) || c.QueryCacheBytes != 1<<20 {
		t.Errorf("set: %+v, %d bytes, %v", c.DocumentLimits, c.QueryCacheBytes, err)
	}
	for _, name := range []string{"QUERY_MAX_TOKENS", "QUERY_MAX_FIELDS", "QUERY_MAX_DEPTH", "QUERY_CACHE_BYTES"} {
		for _, in := range []string{"0", "-5", "lots", "1.5"} {
			_, err := Load(env(map[string]string{name: in}))
			var cfgErr *Error
			if !errors.As(err, &cfgErr) || len(cfgErr.Problems) != 1 || cfgErr.Problems[0].Var != name ||
				!strings.Contains(cfgErr.Problems[0].Want, "integer >= 1") {
				t.Errorf("%s=%q: err = %v, want one %s problem asking for an integer >= 1", name, in, err, name)
			}
		}
	}
}

// TestSignInLimits: the sign-in and sign-up limits default to 10 failures
// per email and address and 100 per email per 15 minutes, 20 sign-ups per
// address; 0 turns one off; bad values, and a per-email limit below the
// per-address one, are problems naming their variable.
func TestSignInLimits(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.SignInMaxFailures != 10 || c.SignInMaxFailuresPerEmail != 100 || c.SignInWindow != 15*time.Minute ||
		c.SignUpMaxPerAddress != 20 || !c.TrustedProxies.Empty() {
		t.Errorf("defaults: failures %d, per email %d, window %v, sign-ups %d, trusted %q",
			c.SignInMaxFailures, c.SignInMaxFailuresPerEmail, c.SignInWindow, c.SignUpMaxPerAddress, c.TrustedProxies)
	}
	c, err = Load(env(map[string]string{
		"SIGNIN_MAX_FAILURES": "5", "SIGNIN_MAX_FAILURES_PER_EMAIL": "0", "SIGNIN_WINDOW": "1h",
		"SIGNUP_MAX_PER_ADDRESS": "0", "TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.SignInMaxFailures != 5 || c.SignInMaxFailuresPerEmail != 0 || c.SignInWindow != time.Hour ||
		c.SignUpMaxPerAddress != 0 || c.TrustedProxies.String() != "10.0.0.0/8,127.0.0.1/32" {
		t.Errorf("set: failures %d, per email %d, window %v, sign-ups %d, trusted %q",
			c.SignInMaxFailures, c.SignInMaxFailuresPerEmail, c.SignInWindow, c.SignUpMaxPerAddress, c.TrustedProxies)
	}
	for _, tc := range []struct {
		vars map[string]string
		name string
	}{
		{map[string]string{"SIGNIN_MAX_FAILURES": "-1"}, "SIGNIN_MAX_FAILURES"},
		{map[string]string{"SIGNIN_MAX_FAILURES_PER_EMAIL": "many"}, "SIGNIN_MAX_FAILURES_PER_EMAIL"},
		{map[string]string{"SIGNIN_MAX_FAILURES": "20", "SIGNIN_MAX_FAILURES_PER_EMAIL": "10"}, "SIGNIN_MAX_FAILURES_PER_EMAIL"},
		{map[string]string{"SIGNIN_WINDOW": "0"}, "SIGNIN_WINDOW"},
		{map[string]string{"SIGNIN_WINDOW": "soon"}, "SIGNIN_WINDOW"},
		{map[string]string{"SIGNUP_MAX_PER_ADDRESS": "1.5"}, "SIGNUP_MAX_PER_ADDRESS"},
		{map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8,proxy.internal"}, "TRUSTED_PROXIES"},
	} {
		_, err := Load(env(tc.vars))
		var cfgErr *Error
		if !errors.As(err, &cfgErr) || len(cfgErr.Problems) != 1 || cfgErr.Problems[0].Var != tc.name {
			t.Errorf("%v: err = %v, want one %s problem", tc.vars, err, tc.name)
		}
	}
}

func TestSigningKeys(t *testing.T) {
	c, err := Load(env(map[string]string{"SUPABASE_URL": "https://abcd.supabase.co/"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthIssuer != "https://abcd.supabase.co/auth/v1" || c.JWKSURL != "https://abcd.supabase.co/auth/v1/.well-known/jwks.json" {
		t.Errorf("SUPABASE_URL: issuer %q, JWKS %q", c.AuthIssuer, c.JWKSURL)
	}
	if c.JWKSRefresh != 10*time.Minute || c.JWKSMinRefresh != 30*time.Second || !c.AllowAnonymous {
		t.Errorf("defaults: refresh %v, min %v, anonymous %v", c.JWKSRefresh, c.JWKSMinRefresh, c.AllowAnonymous)
	}

	c, err = Load(env(map[string]string{
		"AUTH_JWKS_URL": "http://127.0.0.1:54321/auth/v1/.well-known/jwks.json", "AUTH_ISSUER": "http://127.0.0.1:54321/auth/v1",
		"AUTH_JWKS_REFRESH": "5m", "AUTH_JWKS_MIN_REFRESH": "10", "AUTH_ALLOW_ANONYMOUS": "false",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthIssuer != "http://127.0.0.1:54321/auth/v1" || c.JWKSURL != "http://127.0.0.1:54321/auth/v1/.well-known/jwks.json" ||
		c.JWKSRefresh != 5*time.Minute || c.JWKSMinRefresh != 10*time.Second || c.AllowAnonymous {
		t.Errorf("explicit: %+v", c)
	}

	c, err = Load(env(nil))
	if err != nil || c.AuthIssuer != "" || c.JWKSURL != "" {
		t.Errorf("legacy: issuer %q, JWKS %q, %v", c.AuthIssuer, c.JWKSURL, err)
	}

	for name, vars := range map[string]map[string]string{
		"http off loopback":       {"SUPABASE_URL": "http://abcd.supabase.co"},
		"JWKS over http":          {"AUTH_JWKS_URL": "http://keys.example.com/jwks.json", "AUTH_ISSUER": "https://keys.example.com"},
		"JWKS without issuer":     {"AUTH_JWKS_URL": "https://keys.example.com/jwks.json"},
		"project URL with a path": {"SUPABASE_URL": "https://abcd.supabase.co/auth/v1"},
		"not a URL":               {"SUPABASE_URL": "abcd.supabase.co"},
		"refresh not a duration":  {"SUPABASE_URL": "https://abcd.supabase.co", "AUTH_JWKS_REFRESH": "soon"},
		"anonymous not a bool":    {"AUTH_ALLOW_ANONYMOUS": "maybe"},
	} {
		_, err := Load(env(vars))
		var cfgErr *Error
		if !errors.As(err, &cfgErr) {
			t.Errorf("%s: err = %v, want a configuration error", name, err)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}

// TestAdmission: the defaults, explicit values, 0 turning admission off,
// and bad values reported by name.
func TestAdmission(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Admission; a.PerPrincipal != 4 || a.QueuePerPrincipal != 256 || a.MaxConcurrent != 0 || a.MaxWait != 2*time.Second || a.SubscriptionsPerPrincipal != 20 {
		t.Errorf("admission defaults: %+v", a)
	}
	c, err = Load(env(map[string]string{"ADMISSION_PER_USER": "0", "ADMISSION_MAX_CONCURRENT": "12", "ADMISSION_MAX_WAIT": "500ms", "SUBSCRIPTIONS_PER_USER": "0"}))
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Admission; a.Enabled() || a.MaxConcurrent != 12 || a.MaxWait != 500*time.Millisecond || a.SubscriptionsPerPrincipal != 0 {
		t.Errorf("admission: %+v", a)
	}
	_, err = Load(env(map[string]string{"ADMISSION_PER_USER": "-1", "ADMISSION_MAX_WAIT": "0"}))
	var cfgErr *Error
	if !errors.As(err, &cfgErr) || len(cfgErr.Problems) != 2 {
		t.Fatalf("bad admission values: %v", err)
	}
}
