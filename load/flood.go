package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FloodRun measures fairness under one user's flood: Quiet sends Query
// QuietRate times a second (each on its own schedule, whether or not the
// previous answered), while Flooders clients, all signed in as Noisy, send
// it back to back. With HonourRetryAfter a flooder refused with 429 or 503
// sleeps the Retry-After it was given; without, it tries again at once.
// Flooders 0 measures the quiet user alone.
type FloodRun struct {
	BaseURL          string
	Quiet, Noisy     Client
	QuietRate        float64
	Flooders         int
	HonourRetryAfter bool
	Duration         time.Duration
	Query            string
	// ServerPID, when set, is the server's process: the CPU time it spent
	// is read from /proc.
	ServerPID int
}

// FloodResult is what a FloodRun measured.
type FloodResult struct {
	Elapsed time.Duration
	// Quiet holds the quiet user's latencies, sorted; QuietFailed counts
	// its requests that were not answered with data.
	Quiet       []time.Duration
	QuietFailed int
	// Served and Refused count the flood's answers with data and its 429
	// and 503 refusals; FloodFailed the rest.
	Served, Refused, FloodFailed int
	// CPU is the server's CPU time over the run (0 without ServerPID).
	CPU time.Duration
}

// TotalServed is the requests per second answered with data, the quiet
// user's and the flood's.
func (r FloodResult) TotalServed() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Served+len(r.Quiet)) / r.Elapsed.Seconds()
}

// Run executes the flood.
func (f FloodRun) Run(ctx context.Context) (FloodResult, error) {
	transport := &http.Transport{MaxIdleConns: f.Flooders + 64, MaxIdleConnsPerHost: f.Flooders + 64, IdleConnTimeout: time.Minute}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 2 * time.Minute}
	body, _ := json.Marshal(map[string]any{"query": f.Query})
	url := f.BaseURL + "/query"

	var res FloodResult
	var mu sync.Mutex
	cpuBefore := processCPU(f.ServerPID)
	start := time.Now()
	deadline := start.Add(f.Duration)
	var wg sync.WaitGroup
	for range f.Flooders {
		wg.Go(func() {
			var served, refused, failed int
			for time.Now().Before(deadline) && ctx.Err() == nil {
				status, ok, retry := postStatus(ctx, client, url, f.Noisy.Token, body)
				switch {
				case ok:
					served++
				case status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
					refused++
					if f.HonourRetryAfter && retry > 0 {
						select {
						case <-time.After(min(retry, time.Until(deadline))):
						case <-ctx.Done():
						}
					}
				default:
					failed++
				}
			}
			mu.Lock()
			res.Served += served
			res.Refused += refused
			res.FloodFailed += failed
			mu.Unlock()
		})
	}
	interval := time.Duration(float64(time.Second) / f.QuietRate)
	for next := start; next.Before(deadline) && ctx.Err() == nil; next = next.Add(interval) {
		time.Sleep(time.Until(next))
		wg.Go(func() {
			t0 := time.Now()
			_, ok, _ := postStatus(ctx, client, url, f.Quiet.Token, body)
			lat := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			if ok {
				res.Quiet = append(res.Quiet, lat)
			} else {
				res.QuietFailed++
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.CPU = processCPU(f.ServerPID) - cpuBefore
	slices.Sort(res.Quiet)
	return res, ctx.Err()
}

// postStatus sends one request: its status, whether it was answered with
// data and no error, and its Retry-After.
func postStatus(ctx context.Context, c *http.Client, url, token string, body []byte) (status int, ok bool, retryAfter time.Duration) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, false, 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, false, 0
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, false, 0
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		retryAfter = time.Duration(s) * time.Second
	}
	return resp.StatusCode, resp.StatusCode == http.StatusOK && !bytes.Contains(raw, []byte(`"errors"`)), retryAfter
}

// processCPU is the user and system CPU time pid has used (Linux /proc,
// in clock ticks of 1/100 s); 0 when it cannot be read.
func processCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing parenthesis (utime and stime are fields 14 and 15).
	fields := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// PercentileOf is the p-th percentile (0..1) of sorted latencies.
func PercentileOf(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}
