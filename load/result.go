package load

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"chatql/dbpool"
)

// Result is what one run measured.
type Result struct {
	// Mode is "chatql" (GraphQL over HTTP) or "ceiling" (the same SQL
	// straight over a pool).
	Mode        string
	Concurrency int
	Elapsed     time.Duration
	// Latencies of every completed request, sorted.
	Latencies []time.Duration
	// Errors counts failed requests by kind, e.g. "HTTP 503 DB_POOL_TIMEOUT".
	Errors map[string]int
	// MaxBackends is the most server connections of the measured
	// application seen in pg_stat_activity, sampled every 50 ms.
	MaxBackends int
	// PoolBefore and PoolAfter are the server's /health/db-pool snapshots
	// (nil when it could not be read).
	PoolBefore, PoolAfter *dbpool.Stats
	// ServerCPU and PostgresCPU are the CPU time the run cost the server
	// process (chatql, or the HTTP ceiling's) and the whole database
	// cluster, from /proc; zero when not measured.
	ServerCPU, PostgresCPU time.Duration
}

// cpuPerRequest formats d divided by the run's requests, in ms.
func (r Result) cpuPerRequest(d time.Duration) string {
	if d <= 0 || r.Requests() == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000/float64(r.Requests()))
}

// Requests counts completed requests, failed ones included.
func (r Result) Requests() int { return len(r.Latencies) }

// ErrorCount counts failed requests.
func (r Result) ErrorCount() int {
	n := 0
	for _, c := range r.Errors {
		n += c
	}
	return n
}

// Throughput is requests per second.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests()) / r.Elapsed.Seconds()
}

// Percentile returns the latency below which a fraction p of requests fell.
func (r Result) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(p * float64(len(r.Latencies)-1))
	return r.Latencies[i]
}

// Max is the slowest request.
func (r Result) Max() time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	return r.Latencies[len(r.Latencies)-1]
}

func (r Result) errorSummary() string {
	if len(r.Errors) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
		parts = append(parts, fmt.Sprintf("%d %s", r.Errors[k], k))
	}
	return strings.Join(parts, ", ")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

// PrintTable writes one row per result, then the chatql/ceiling ratio for
// every concurrency measured both ways.
func PrintTable(w io.Writer, results []Result) {
	fmt.Fprintf(w, "%-8s %5s %9s %8s %8s %8s %8s %9s %8s %8s  %s\n", "mode", "conc", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "backends", "srv ms", "pg ms", "errors")
	for _, r := range results {
		backends := "-"
		if r.MaxBackends > 0 {
			backends = fmt.Sprint(r.MaxBackends)
		}
		fmt.Fprintf(w, "%-8s %5d %9.1f %8s %8s %8s %8s %9s %8s %8s  %s\n", r.Mode, r.Concurrency, r.Throughput(),
			ms(r.Percentile(0.50)), ms(r.Percentile(0.95)), ms(r.Percentile(0.99)), ms(r.Max()), backends,
			r.cpuPerRequest(r.ServerCPU), r.cpuPerRequest(r.PostgresCPU), r.errorSummary())
	}
	fmt.Fprintln(w, "(srv ms and pg ms: CPU time per request of the server process and of the whole PostgreSQL cluster)")
	ceilings := map[string]Result{}
	for _, r := range results {
		if r.Mode == ModeNoAdmission {
			fmt.Fprintln(w, "(adm-off: the same chatql binary with admission off, ADMISSION_PER_USER=0)")
			break
		}
	}
	for _, r := range results {
		if r.Mode == ModePostGraphile {
			fmt.Fprintln(w, "(graphile: PostGraphile 4 on the same database and pool size, one SQL statement per query; srv ms is its Node process)")
			break
		}
	}
	for _, r := range results {
		if r.Mode != ModeChatQL && r.Mode != ModeNoAdmission {
			ceilings[fmt.Sprint(r.Mode, r.Concurrency)] = r
		}
	}
	var p99At []Result
	for _, r := range results {
		for _, mode := range []string{ModeCeiling, ModeRaw, ModeHTTP, ModePostGraphile} {
			if c, ok := ceilings[fmt.Sprint(mode, r.Concurrency)]; ok && r.Mode == ModeChatQL && c.Throughput() > 0 {
				fmt.Fprintf(w, "chatql / %s at concurrency %d: %.2f\n", mode, r.Concurrency, r.Throughput()/c.Throughput())
			}
		}
		if r.Mode == ModeChatQL {
			p99At = append(p99At, r)
		}
	}
	if n := len(p99At); n > 1 && p99At[0].Percentile(0.99) > 0 {
		lo, hi := p99At[0], p99At[n-1]
		fmt.Fprintf(w, "p99 at concurrency %d / p99 at concurrency %d: %.1f\n", hi.Concurrency, lo.Concurrency,
			float64(hi.Percentile(0.99))/float64(lo.Percentile(0.99)))
	}
	for _, r := range results {
		if r.PoolAfter != nil {
			fmt.Fprintf(w, "pool at concurrency %d: before %s; after %s\n", r.Concurrency, poolLine(r.PoolBefore), poolLine(r.PoolAfter))
		}
	}
}

func poolLine(s *dbpool.Stats) string {
	if s == nil {
		return "-"
	}
	return fmt.Sprintf("status=%s checked_out=%d total=%d acquires=%d timeouts=%d invalid=%d avg_wait_ms=%.1f max_wait_ms=%.1f",
		s.Status, s.CheckedOut, s.Total, s.AcquireCount, s.Timeouts, s.Invalid, s.AvgAcquireWaitMs, s.MaxAcquireWaitMs)
}
