package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"chatql/auth"
)

// jwksCollector reads the signing key set's counts at scrape time.
type jwksCollector struct {
	stats func() auth.JWKSStats
}

var (
	descJWKSRefreshes = prometheus.NewDesc("chatql_auth_jwks_refreshes_total", "Fetches of the signing key set (JWKS): periodic, for an unknown kid, and retries before it first loads.", nil, nil)
	descJWKSFailures  = prometheus.NewDesc("chatql_auth_jwks_refresh_failures_total", "Fetches of the signing key set that failed (the keys already held are kept).", nil, nil)
	descJWKSKeys      = prometheus.NewDesc("chatql_auth_jwks_keys", "Signing keys held from the key set; 0 means asymmetrically signed tokens are refused.", nil, nil)
)

func (jwksCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descJWKSRefreshes, descJWKSFailures, descJWKSKeys} {
		ch <- d
	}
}

func (c jwksCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(descJWKSRefreshes, prometheus.CounterValue, float64(s.Fetches))
	ch <- prometheus.MustNewConstMetric(descJWKSFailures, prometheus.CounterValue, float64(s.Failures))
	ch <- prometheus.MustNewConstMetric(descJWKSKeys, prometheus.GaugeValue, float64(s.Keys))
}

// WatchJWKS registers the collector that reads the signing key set's
// counts (stats) at scrape.
func (m *Metrics) WatchJWKS(stats func() auth.JWKSStats) {
	m.registry.MustRegister(jwksCollector{stats: stats})
}
