package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"chatql/realtime"
)

// hubCollector reads the realtime hub's counts at scrape time, like
// poolCollector does the pool's.
type hubCollector struct {
	hub *realtime.Hub
}

var (
	descSubscribers   = prometheus.NewDesc("chatql_realtime_subscribers", "Open messageAdded subscriptions in this process.", nil, nil)
	descListening     = prometheus.NewDesc("chatql_realtime_listening", "1 while the listening connection (outside the pool) is up, else 0.", nil, nil)
	descNotifications = prometheus.NewDesc("chatql_realtime_notifications_total", "New messages announced to this process's subscribers (each once).", nil, nil)
	descDropped       = prometheus.NewDesc("chatql_realtime_dropped_total", "Subscriptions closed because their client fell too far behind.", nil, nil)
	descReconnects    = prometheus.NewDesc("chatql_realtime_reconnects_total", "Times the listening connection was re-established after failing.", nil, nil)
)

func (hubCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSubscribers, descListening, descNotifications, descDropped, descReconnects} {
		ch <- d
	}
}

func (c hubCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.hub.Stats()
	listening := 0.0
	if s.Listening {
		listening = 1
	}
	ch <- prometheus.MustNewConstMetric(descSubscribers, prometheus.GaugeValue, float64(s.Subscribers))
	ch <- prometheus.MustNewConstMetric(descListening, prometheus.GaugeValue, listening)
	ch <- prometheus.MustNewConstMetric(descNotifications, prometheus.CounterValue, float64(s.Notifications))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(s.Dropped))
	ch <- prometheus.MustNewConstMetric(descReconnects, prometheus.CounterValue, float64(s.Reconnects))
}

// WatchHub registers the collector that reads hub's counts at scrape.
func (m *Metrics) WatchHub(hub *realtime.Hub) {
	m.registry.MustRegister(hubCollector{hub: hub})
}

// WatchStreams registers chatql_websockets_open and chatql_sse_streams_open,
// read from websockets and sse at scrape.
func (m *Metrics) WatchStreams(websockets, sse func() int) {
	m.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "chatql_websockets_open",
			Help: "Open websocket connections (GraphQL subscriptions, either protocol).",
		}, func() float64 { return float64(websockets()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "chatql_sse_streams_open",
			Help: "GraphQL subscriptions in progress over server-sent events.",
		}, func() float64 { return float64(sse()) }),
	)
}
