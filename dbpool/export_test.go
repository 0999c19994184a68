package dbpool

import "time"

// SetSlowLogEvery changes how often at most p logs the slow-acquire
// warning, so tests need not wait out the real interval.
func SetSlowLogEvery(p *Pool, d time.Duration) { p.slowLogEvery = d }
