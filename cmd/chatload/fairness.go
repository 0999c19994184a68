package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"chatql/graph"
	"chatql/load"
)

// Fairness scenarios (issue 14): how a quiet user fares while another
// floods, and what open-loop overload gets served.
const (
	flooders  = 200
	quietRate = 5 // requests per second
	// overload is the open-loop arrival rate as a multiple of the peak.
	overload = 10
)

// fairness runs the scenarios: the quiet user alone, then beside 200
// clients of one other user that honour Retry-After, then beside 200 that
// ignore it; then open-loop arrivals from every client at overload times
// peak (the best closed-loop throughput measured before, or the flood's
// when there was none).
func fairness(ctx context.Context, o options, baseURL string, clients []load.Client, peak float64, out io.Writer) error {
	if len(clients) < 2 {
		return fmt.Errorf("need 2 clients, have %d", len(clients))
	}
	noisy, quiet := clients[0], clients[1]
	maxWait := 2 * time.Second
	if v := os.Getenv("ADMISSION_MAX_WAIT"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			maxWait = d
		}
	}
	fmt.Fprintf(out, "\nfairness: a quiet user's Inbox at %d req/s, alone and while one other user floods with %d clients; %s each\n", quietRate, flooders, o.flood)
	fmt.Fprintln(out, "scenario                     quiet p50 ms  quiet p99 ms  quiet failed  flood served/s  flood refused/s  total served/s  server CPU s")
	var floodPeak float64
	for _, sc := range []struct {
		name     string
		flooders int
		honour   bool
	}{
		{"quiet alone", 0, false},
		{"flood honouring Retry-After", flooders, true},
		{"flood ignoring Retry-After", flooders, false},
	} {
		r, err := load.FloodRun{
			BaseURL: baseURL, Quiet: quiet, Noisy: noisy, QuietRate: quietRate,
			Flooders: sc.flooders, HonourRetryAfter: sc.honour, Duration: o.flood,
			Query: graph.InboxQuery, ServerPID: o.serverPID,
		}.Run(ctx)
		if err != nil {
			return err
		}
		secs := r.Elapsed.Seconds()
		total := (float64(r.Served+len(r.Quiet)) / secs)
		floodPeak = max(floodPeak, total)
		fmt.Fprintf(out, "%-28s %12s  %12s  %12d  %14.1f  %15.1f  %14.1f  %12.2f\n", sc.name,
			fmtMs(load.PercentileOf(r.Quiet, 0.5)), fmtMs(load.PercentileOf(r.Quiet, 0.99)), r.QuietFailed,
			float64(r.Served)/secs, float64(r.Refused)/secs, total, r.CPU.Seconds())
	}
	if peak == 0 {
		peak = floodPeak
	}
	rate := overload * peak
	r, err := load.OpenLoopRun{BaseURL: baseURL, Clients: clients, Rate: rate, Duration: o.flood, Query: graph.InboxQuery, MaxWait: maxWait, ServerPID: o.serverPID}.Run(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nopen loop: %.0f arrivals/s (%dx the peak of %.1f req/s) from %d users for %s\n", rate, overload, peak, len(clients), o.flood)
	fmt.Fprintf(out, "sent %d, served %d (goodput %.1f req/s, %.0f%% of the peak), refused %d, failed %d; served p50 %s ms, p99 %s ms, max %s ms; served slower than %s: %d\n",
		r.Sent, len(r.Served), r.Goodput(), 100*r.Goodput()/peak, r.Refused, r.Failed,
		fmtMs(load.PercentileOf(r.Served, 0.5)), fmtMs(load.PercentileOf(r.Served, 0.99)), fmtMs(load.PercentileOf(r.Served, 1)), maxWait, r.OverMaxWait)
	fmt.Fprintf(out, "at the server (request written to first byte): served p50 %s ms, p99 %s ms, max %s ms; over %s: %d; CPU: server %.2f s, load generator %.2f s\n",
		fmtMs(load.PercentileOf(r.AtServer, 0.5)), fmtMs(load.PercentileOf(r.AtServer, 0.99)), fmtMs(load.PercentileOf(r.AtServer, 1)), maxWait, r.ServerOverMaxWait, r.ServerCPU.Seconds(), r.GeneratorCPU.Seconds())
	return nil
}
