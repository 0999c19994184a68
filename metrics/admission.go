package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"chatql/admission"
)

// admissionMetrics are the admission controller's instruments. The
// counters are recorded as decisions happen (Metrics implements
// admission.Observer); the gauges read the controller at scrape time.
// No label names a principal: reason comes from a fixed set.
type admissionMetrics struct {
	admitted prometheus.Counter
	queued   prometheus.Counter
	refused  *prometheus.CounterVec
	wait     prometheus.Histogram
}

func newAdmissionMetrics() admissionMetrics {
	return admissionMetrics{
		admitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatql_admission_admitted_total",
			Help: "Operations admitted, at once or after waiting their turn.",
		}),
		queued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatql_admission_queued_total",
			Help: "Operations that had to wait for a slot (admitted or refused later).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatql_admission_refused_total",
			Help: "Operations refused by admission, by reason: queue_full, principal_busy (429 RATE_LIMITED), server_busy (503 OVERLOADED), subscriptions (429).",
		}, []string{"reason"}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "chatql_admission_wait_seconds",
			Help:    "Time an operation waited for admission: admitted ones (0 when at once) and those refused after waiting.",
			Buckets: waitBuckets,
		}),
	}
}

// Queued implements admission.Observer.
func (m *Metrics) Queued() { m.admission.queued.Inc() }

// Admitted implements admission.Observer.
func (m *Metrics) Admitted(wait time.Duration) {
	m.admission.admitted.Inc()
	m.admission.wait.Observe(wait.Seconds())
}

// Refused implements admission.Observer.
func (m *Metrics) Refused(reason admission.Reason, waited time.Duration) {
	m.admission.refused.WithLabelValues(string(reason)).Inc()
	if waited > 0 {
		m.admission.wait.Observe(waited.Seconds())
	}
}

// WatchAdmission registers the admission instruments and the gauges that
// read c at scrape: operations running, operations waiting, principals
// waiting.
func (m *Metrics) WatchAdmission(c *admission.Controller) {
	a := m.admission
	for _, r := range []admission.Reason{admission.ReasonQueueFull, admission.ReasonPrincipalBusy, admission.ReasonServerBusy, admission.ReasonSubscriptions} {
		a.refused.WithLabelValues(string(r)) // present at 0 from the start
	}
	m.registry.MustRegister(a.admitted, a.queued, a.refused, a.wait,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "chatql_admission_running",
			Help: "Operations holding an admission slot.",
		}, func() float64 { return float64(c.Stats().Running) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "chatql_admission_queue_length",
			Help: "Operations waiting for an admission slot.",
		}, func() float64 { return float64(c.Stats().Queued) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "chatql_admission_waiting_principals",
			Help: "Principals (users or client addresses) with operations waiting.",
		}, func() float64 { return float64(c.Stats().Waiting) }),
	)
}
