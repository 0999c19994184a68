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

// Fairness scenarios: how a quiet user fares while another floods, and
// what open-loop overload gets served; with admission and without.
const (
	flooders  = 200
	quietRate = 5 // requests per second
	// overload is the open-loop arrival rate as a multiple of the peak.
	overload = 10
)

// fairnessResult is what the scenarios measured on one target.
type fairnessResult struct {
	mode                        string
	alone, honouring, ignoring  load.FloodResult
	openLoop                    load.OpenLoopResult
	openLoopRate, openLoopShare float64
}

// fairness runs the scenarios on every target: the quiet user alone, then
// beside 200 clients of one other user that honour Retry-After, then
// beside 200 that ignore it; then open-loop arrivals from every client at
// overload times peak (the best closed-loop throughput measured without
// admission). It ends with the figures set as goals: the quiet user's
// latency under the flood as a multiple of its latency alone, the total
// served under the flood and the open loop's goodput as shares of the
// peak, and the answers slower than ADMISSION_MAX_WAIT.
func fairness(ctx context.Context, o options, targets []target, clients []load.Client, peak float64, out io.Writer) error {
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
	rate := overload * peak
	fmt.Fprintf(out, "\nfairness: a quiet user's Inbox at %d req/s, alone and while one other user floods with %d clients; then open-loop arrivals at %.0f/s (%dx the peak of %.1f req/s) from %d users; %s each\n",
		quietRate, flooders, rate, overload, peak, len(clients), o.flood)
	fmt.Fprintln(out, "server   scenario                     quiet p50 ms  quiet p99 ms  quiet failed  flood served/s  flood refused/s  total served/s  server CPU s")
	var all []fairnessResult
	for _, t := range targets {
		res := fairnessResult{mode: t.mode, openLoopRate: rate}
		for _, sc := range []struct {
			name     string
			flooders int
			honour   bool
			into     *load.FloodResult
		}{
			{"quiet alone", 0, false, &res.alone},
			{"flood honouring Retry-After", flooders, true, &res.honouring},
			{"flood ignoring Retry-After", flooders, false, &res.ignoring},
		} {
			r, err := load.FloodRun{
				BaseURL: t.baseURL, Quiet: quiet, Noisy: noisy, QuietRate: quietRate,
				Flooders: sc.flooders, HonourRetryAfter: sc.honour, Duration: o.flood,
				Query: graph.InboxQuery, ServerPID: t.pid,
			}.Run(ctx)
			if err != nil {
				return err
			}
			*sc.into = r
			secs := r.Elapsed.Seconds()
			fmt.Fprintf(out, "%-8s %-28s %12s  %12s  %12d  %14.1f  %15.1f  %14.1f  %12.2f\n", t.mode, sc.name,
				fmtMs(load.PercentileOf(r.Quiet, 0.5)), fmtMs(load.PercentileOf(r.Quiet, 0.99)), r.QuietFailed,
				float64(r.Served)/secs, float64(r.Refused)/secs, r.TotalServed(), r.CPU.Seconds())
		}
		r, err := load.OpenLoopRun{
			BaseURL: t.baseURL, Clients: clients, Rate: rate, Duration: o.flood,
			Query: graph.InboxQuery, MaxWait: maxWait, ServerPID: t.pid,
		}.Run(ctx)
		if err != nil {
			return err
		}
		res.openLoop = r
		all = append(all, res)
		fmt.Fprintf(out, "%-8s open loop: sent %d, served %d, within %s %.1f/s (the goodput), refused %d, failed %d, not sent (every connection busy to the end) %d\n",
			t.mode, r.Sent-r.Unsent, len(r.Served), maxWait, r.Goodput(), r.Refused, r.Failed, r.Unsent)
		fmt.Fprintf(out, "%-8s   served p50 %s ms, p99 %s ms, max %s ms, slower than %s: %d; at the server (written to answered) p99 %s ms, max %s ms, over %s: %d; CPU: server %.2f s, load generator %.2f s\n",
			t.mode, fmtMs(load.PercentileOf(r.Served, 0.5)), fmtMs(load.PercentileOf(r.Served, 0.99)), fmtMs(load.PercentileOf(r.Served, 1)), maxWait, r.OverMaxWait,
			fmtMs(load.PercentileOf(r.AtServer, 0.99)), fmtMs(load.PercentileOf(r.AtServer, 1)), maxWait, r.ServerOverMaxWait,
			r.ServerCPU.Seconds(), r.GeneratorCPU.Seconds())
		fmt.Fprintf(out, "%-8s   the generator's own lag (due to written) p50 %s ms, p99 %s ms, max %s ms\n",
			t.mode, fmtMs(load.PercentileOf(r.Lag, 0.5)), fmtMs(load.PercentileOf(r.Lag, 0.99)), fmtMs(load.PercentileOf(r.Lag, 1)))
	}
	fmt.Fprintf(out, "\nagainst the goals (peak without admission %.1f req/s):\n", peak)
	for _, r := range all {
		fmt.Fprintf(out, "%-8s quiet user under the flood (honouring / ignoring Retry-After) vs alone: p50 %.1fx / %.1fx (goal <= 4), p99 %.1fx / %.1fx (goal <= 10)\n", r.mode,
			ratio(r.honouring.Quiet, r.alone.Quiet, 0.5), ratio(r.ignoring.Quiet, r.alone.Quiet, 0.5),
			ratio(r.honouring.Quiet, r.alone.Quiet, 0.99), ratio(r.ignoring.Quiet, r.alone.Quiet, 0.99))
		fmt.Fprintf(out, "%-8s total served under the flood / peak: %.2f / %.2f (goal >= 0.9); open loop goodput / peak %.2f (goal >= 0.9), served slower than %s at the server: %d (goal 0; from when due, the generator's lag included: %d)\n", r.mode,
			r.honouring.TotalServed()/peak, r.ignoring.TotalServed()/peak, r.openLoop.Goodput()/peak, maxWait, r.openLoop.ServerOverMaxWait, r.openLoop.OverMaxWait)
	}
	return nil
}

// ratio is the p-th percentile of a over that of b.
func ratio(a, b []time.Duration, p float64) float64 {
	d := load.PercentileOf(b, p)
	if d <= 0 {
		return 0
	}
	return float64(load.PercentileOf(a, p)) / float64(d)
}
