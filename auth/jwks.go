package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// JWKS defaults (JWKSConfig's zero values).
const (
	// DefaultJWKSRefresh is how often the key set is fetched again, so that
	// a key added or revoked in the dashboard is picked up.
	DefaultJWKSRefresh = 10 * time.Minute
	// DefaultJWKSMinRefresh is the shortest time between two fetches that
	// tokens with an unknown kid (or the retries of a set never loaded)
	// trigger: a flood of made-up kids costs one fetch per interval.
	DefaultJWKSMinRefresh = 30 * time.Second
	// DefaultJWKSFetchTimeout bounds one fetch, connecting included.
	DefaultJWKSFetchTimeout = 5 * time.Second
	// DefaultJWKSMaxBytes caps a fetched key set; a real one is a few KiB.
	DefaultJWKSMaxBytes = 1 << 20
)

// ErrNoSigningKeys is wrapped (with ErrUnauthenticated) by the refusal of
// an asymmetrically signed token while the configured key set has never
// loaded.
var ErrNoSigningKeys = errors.New("no signing keys")

// asymmetricAlgs are the algorithms verified with a key from the JWKS.
// Supabase signs with ES256 (the default) or RS256; the rest of each
// family and EdDSA cost nothing to allow, since keyFits ties each to its
// key type.
var asymmetricAlgs = []string{"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}

// JWKSConfig configures a JWKS. Zero durations and sizes take the
// defaults above.
type JWKSConfig struct {
	// URL is the key set's address: https, or http on loopback only (see
	// CheckJWKSURL).
	URL                string
	RefreshInterval    time.Duration
	MinRefreshInterval time.Duration
	FetchTimeout       time.Duration
	MaxBytes           int64
	// Logger gets a line for each failed fetch; nil discards them.
	Logger *slog.Logger
}

// JWKS holds the public keys of a JSON Web Key Set fetched over HTTP, kept
// fresh in the background: every RefreshInterval, and when a token names a
// kid the set does not hold (at most once per MinRefreshInterval; the
// request that finds the limiter spent is refused at once, and the one
// that refreshes waits at most FetchTimeout). A failed fetch keeps the
// keys of the last good one; a fetch that succeeds replaces them all, so
// a revoked key stops verifying. NewJWKS never waits for the network: a
// set that cannot be fetched at start is retried every
// MinRefreshInterval until it loads.
//
// Fetching, caching and parsing the keys are keyfunc's and jwkset's; this
// type adds the limits, the retries, the counts and keyFits. It is safe
// for concurrent use.
type JWKS struct {
	cfg    JWKSConfig
	kf     atomic.Pointer[keyfunc.Keyfunc]
	client *http.Client

	fetches, failures atomic.Int64

	// loaded is closed once the set is first seen holding a key.
	loaded chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// JWKSStats are a JWKS's counts, for metrics and readiness.
type JWKSStats struct {
	// Fetches is how many times the set was requested, Failures how many
	// of those (or of their responses) failed.
	Fetches, Failures int64
	// Keys is how many keys are held now.
	Keys int
}

// NewJWKS starts fetching cfg.URL in the background until ctx ends or
// Close is called. It returns an error only for a configuration it
// refuses (a URL that is not https off loopback, say).
func NewJWKS(ctx context.Context, cfg JWKSConfig) (*JWKS, error) {
	if err := CheckJWKSURL(cfg.URL); err != nil {
		return nil, err
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = DefaultJWKSRefresh
	}
	if cfg.MinRefreshInterval <= 0 {
		cfg.MinRefreshInterval = DefaultJWKSMinRefresh
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = DefaultJWKSFetchTimeout
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultJWKSMaxBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	j := &JWKS{cfg: cfg, done: make(chan struct{}), loaded: make(chan struct{})}
	j.client = &http.Client{
		Timeout:   cfg.FetchTimeout,
		Transport: &limitedTransport{base: http.DefaultTransport, max: cfg.MaxBytes, fetches: &j.fetches},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			return CheckJWKSURL(req.URL.String())
		},
	}
	ctx, j.cancel = context.WithCancel(ctx)
	go j.run(ctx)
	return j, nil
}

// Close stops the background fetches and waits for the retry loop (a
// fetch in flight is cancelled). It is safe to call more than once.
func (j *JWKS) Close() {
	j.cancel()
	<-j.done
}

// run builds the keyfunc (whose first fetch would otherwise hold up the
// caller), then retries until the set has loaded.
func (j *JWKS) run(ctx context.Context) {
	defer close(j.done)
	noErrorOnFirstFetch := true
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{j.cfg.URL}, keyfunc.Override{
		Client:                    j.client,
		HTTPTimeout:               j.cfg.FetchTimeout,
		NoErrorReturnFirstHTTPReq: &noErrorOnFirstFetch,
		RefreshInterval:           j.cfg.RefreshInterval,
		RefreshErrorHandlerFunc:   j.failed,
		// An unknown kid refreshes at most once per MinRefreshInterval,
		// and its request waits for the limiter (then the fetch, under the
		// same deadline) at most FetchTimeout: a wait that would be
		// longer fails at once.
		RefreshUnknownKID: rate.NewLimiter(rate.Every(j.cfg.MinRefreshInterval), 1),
		RateLimitWaitMax:  j.cfg.FetchTimeout,
	})
	if err != nil {
		// Only a URL keyfunc cannot parse, which NewJWKS has refused.
		j.cfg.Logger.Error("JWKS not started", "url", j.cfg.URL, "err", err)
		return
	}
	j.kf.Store(&kf)
	tick := time.NewTicker(j.cfg.MinRefreshInterval)
	defer tick.Stop()
	for j.Stats().Keys == 0 {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// keyfunc has no refresh method; a kid no set holds makes it
		// refetch, through the limiter that tokens with unknown kids use,
		// so these retries never add to their fetches.
		_, _ = kf.Storage().KeyRead(ctx, "chatql-retry-unloaded-set")
	}
	close(j.loaded)
}

// Loaded is closed once the set is first seen holding a key: after the
// first fetch, or at the retry after the one that loaded it.
func (j *JWKS) Loaded() <-chan struct{} { return j.loaded }

// failed is keyfunc's refresh error handler for url: count and log.
func (j *JWKS) failed(url string) func(context.Context, error) {
	return func(ctx context.Context, err error) {
		j.failures.Add(1)
		j.cfg.Logger.Error("JWKS fetch failed; keeping the keys already loaded",
			"url", url, "err", err, "keys", j.Stats().Keys)
	}
}

// Stats returns the counts now.
func (j *JWKS) Stats() JWKSStats {
	s := JWKSStats{Fetches: j.fetches.Load(), Failures: j.failures.Load()}
	if kf := j.kf.Load(); kf != nil {
		if keys, err := (*kf).Storage().KeyReadAll(context.Background()); err == nil {
			s.Keys = len(keys)
		}
	}
	return s
}

// Ready returns ErrNoSigningKeys while no key is held.
func (j *JWKS) Ready() error {
	if j.Stats().Keys == 0 {
		return ErrNoSigningKeys
	}
	return nil
}

// key returns the public key to verify token with: the one its kid names,
// of the type its alg needs (and whose own alg, when the JWK names one, is
// the token's: keyfunc checks that).
func (j *JWKS) key(ctx context.Context, token *jwt.Token) (any, error) {
	kid, _ := token.Header["kid"].(string)
	if kid == "" {
		return nil, fmt.Errorf("%s token without a kid", token.Method.Alg())
	}
	kf := j.kf.Load()
	if kf == nil {
		return nil, ErrNoSigningKeys
	}
	key, err := (*kf).KeyfuncCtx(ctx)(token)
	if err != nil {
		if j.Stats().Keys == 0 {
			return nil, fmt.Errorf("kid %q: %w", kid, ErrNoSigningKeys)
		}
		return nil, fmt.Errorf("kid %q: %w", kid, err)
	}
	if err := keyFits(token.Method.Alg(), key); err != nil {
		return nil, fmt.Errorf("kid %q: %w", kid, err)
	}
	return key, nil
}

// keyFits refuses a key of another type than alg needs, so that no key is
// ever used with an algorithm it was not made for (an RSA key, or a
// symmetric "oct" key from the set, for an ES256 token; a P-384 key for
// ES256). golang-jwt checks the Go type too; this also checks the curve
// and the RSA size.
func keyFits(alg string, key any) error {
	var curve elliptic.Curve
	switch alg {
	case "ES256":
		curve = elliptic.P256()
	case "ES384":
		curve = elliptic.P384()
	case "ES512":
		curve = elliptic.P521()
	}
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		if curve != nil && k.Curve == curve {
			return nil
		}
	case *rsa.PublicKey:
		if strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS") {
			if k.N.BitLen() < 2048 {
				return fmt.Errorf("RSA key of %d bits, want at least 2048", k.N.BitLen())
			}
			return nil
		}
	case ed25519.PublicKey:
		if alg == "EdDSA" {
			return nil
		}
	}
	return fmt.Errorf("a %T key cannot verify %s", key, alg)
}

// CheckJWKSURL accepts an absolute https URL, or an http one whose host is
// loopback (127.0.0.0/8, ::1, localhost: a local Supabase CLI or a test):
// keys fetched over plain http anywhere else could be swapped in transit.
func CheckJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("JWKS URL %q is not an absolute URL", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("JWKS URL %q is plain http: use https (http is allowed only on loopback: 127.0.0.0/8, ::1, localhost)", raw)
	}
	return fmt.Errorf("JWKS URL %q: scheme %q, want https", raw, u.Scheme)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// limitedTransport counts requests and refuses a response body over max
// bytes: jwkset decodes the whole body, and a hostile or broken endpoint
// must not make it read without end.
type limitedTransport struct {
	base    http.RoundTripper
	max     int64
	fetches *atomic.Int64
}

func (t *limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.fetches.Add(1)
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > t.max {
		resp.Body.Close()
		return nil, fmt.Errorf("JWKS response of %d bytes is over the %d-byte limit", resp.ContentLength, t.max)
	}
	resp.Body = &limitedBody{rc: resp.Body, left: t.max, max: t.max}
	return resp, nil
}

// limitedBody fails a read past its limit instead of truncating, so that
// an oversized set is an error rather than a cut-off document.
type limitedBody struct {
	rc        io.ReadCloser
	left, max int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, b.tooLarge()
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, b.tooLarge()
	}
	return n, err
}

func (b *limitedBody) tooLarge() error {
	return fmt.Errorf("JWKS response is over the %d-byte limit", b.max)
}

func (b *limitedBody) Close() error { return b.rc.Close() }
