package admission

import "time"

// Counts are totals since the Controller was created.
type Counts struct {
	// Admitted counts operations admitted, at once or after waiting.
	Admitted int64 `json:"admitted"`
	// Queued counts operations that had to wait (admitted or not).
	Queued int64 `json:"queued"`
	// Refused counts refusals by reason.
	RefusedQueueFull     int64 `json:"refusedQueueFull"`
	RefusedPrincipalBusy int64 `json:"refusedPrincipalBusy"`
	RefusedServerBusy    int64 `json:"refusedServerBusy"`
	RefusedSubscriptions int64 `json:"refusedSubscriptions"`
	// Expired counts the refusals of operations that waited MaxWait
	// (included in RefusedPrincipalBusy or RefusedServerBusy).
	Expired int64 `json:"expired"`
}

func (c *Counts) refused(r Reason) {
	switch r {
	case ReasonQueueFull:
		c.RefusedQueueFull++
	case ReasonPrincipalBusy:
		c.RefusedPrincipalBusy++
	case ReasonServerBusy:
		c.RefusedServerBusy++
	case ReasonSubscriptions:
		c.RefusedSubscriptions++
	}
}

// Stats is a snapshot of the Controller: its limits, what runs and waits
// now, and the totals. /health/admission serves it as JSON.
type Stats struct {
	Enabled                   bool    `json:"enabled"`
	PerPrincipal              int     `json:"perPrincipal"`
	QueuePerPrincipal         int     `json:"queuePerPrincipal"`
	MaxConcurrent             int     `json:"maxConcurrent"`
	MaxWaitMs                 float64 `json:"maxWaitMs"`
	SubscriptionsPerPrincipal int     `json:"subscriptionsPerPrincipal"`
	// Running and Queued are operations holding a slot and waiting for
	// one; Principals those with either, Waiting those with the latter.
	Running    int `json:"running"`
	Queued     int `json:"queued"`
	Principals int `json:"principals"`
	Waiting    int `json:"waitingPrincipals"`
	// Subscriptions is the number of subscriptions open.
	Subscriptions int `json:"subscriptions"`
	// ServiceTimeMs is the recent service time the wait predictions use;
	// SlowestServiceMs the slowest of the last ones, which the wait
	// budget leaves room for.
	ServiceTimeMs    float64 `json:"serviceTimeMs"`
	SlowestServiceMs float64 `json:"slowestServiceMs"`
	Counts
}

// Stats returns a snapshot.
func (c *Controller) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	subs := 0
	for _, n := range c.subscriptions {
		subs += n
	}
	return Stats{
		Enabled:                   c.cfg.Enabled(),
		PerPrincipal:              c.cfg.PerPrincipal,
		QueuePerPrincipal:         c.cfg.QueuePerPrincipal,
		MaxConcurrent:             c.cfg.MaxConcurrent,
		MaxWaitMs:                 ms(c.cfg.MaxWait),
		SubscriptionsPerPrincipal: c.cfg.SubscriptionsPerPrincipal,
		Running:                   c.running,
		Queued:                    c.queued,
		Principals:                len(c.principals),
		Waiting:                   len(c.ring),
		Subscriptions:             subs,
		ServiceTimeMs:             ms(c.service),
		SlowestServiceMs:          ms(c.slowest),
		Counts:                    c.counts,
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
