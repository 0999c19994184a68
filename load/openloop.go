package load

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"
)

// OpenLoopRun sends Query at Rate requests a second for Duration, each
// arrival on schedule whatever the server does (an open loop: arrivals do
// not wait for answers), signed in round-robin as Clients.
//
// Requests go out over up to Connections keep-alive connections, each
// written as prepared bytes and read with http.ReadResponse: at ten times
// the server's peak, net/http's client spent a fifth of the machine's
// CPU, which the server being measured then lacked. For the same reason a
// connection keeps only a small read buffer, and bodies are read into
// buffers shared by all connections, only when they are to be checked:
// with 64 KB of each per connection, the kernel's zeroing of the pages
// first touched (half a gigabyte over 4,096 connections) was 40 % of the
// generator's CPU. An arrival that finds
// every connection busy waits for one; its latency counts from the time
// it was due. Arrivals still waiting for one when Duration ends are not
// sent (Unsent); answers still outstanding Drain after it are failures.
type OpenLoopRun struct {
	BaseURL  string
	Clients  []Client
	Rate     float64
	Duration time.Duration
	Query    string
	// Connections bounds the connections open at once (default 4096:
	// more than a server serving about 1,000 requests a second holds within
	// its admission bound of 2 s, so that the cap, rather than the server,
	// does not decide what waits).
	Connections int
	// Drain is how long answers may take after Duration (default 35 s,
	// past the default DB_POOL_TIMEOUT: without admission, that is when
	// the pool refuses what waited).
	Drain time.Duration
	// MaxWait is the server's ADMISSION_MAX_WAIT: served requests that
	// took longer are counted.
	MaxWait time.Duration
	// ServerPID, when set, is the server's process: the CPU time it spent
	// is read from /proc.
	ServerPID int
}

// OpenLoopResult is what an OpenLoopRun measured.
type OpenLoopResult struct {
	// Elapsed is the run's Duration: goodput counts the arrivals in it
	// that were served, however late their answers came.
	Elapsed time.Duration
	// Sent counts the arrivals scheduled, Unsent among them.
	Sent int
	// Served holds the latencies of the requests answered with data,
	// from the time each was due, sorted; Refused counts 429 and 503
	// answers, Failed the rest.
	Served  []time.Duration
	Refused int
	Failed  int
	// Unsent counts arrivals that found every connection busy until the
	// end of the run.
	Unsent int
	// OverMaxWait counts served requests that took longer than MaxWait.
	OverMaxWait int
	// AtServer holds, for the served requests, the time from the request
	// written to its answer's header read, sorted: the server's part of
	// the latency, without the wait for a free connection. ServerOverMaxWait
	// counts those over MaxWait.
	AtServer          []time.Duration
	ServerOverMaxWait int
	// Lag holds, for the served requests, the time from when each was due
	// to when it was written, sorted: the generator's own part (waiting
	// for a free connection, dialling, its goroutines waiting for a core
	// on a machine it shares with the server).
	Lag []time.Duration
	// ServerCPU is the server's CPU time over the run (0 without
	// ServerPID); GeneratorCPU this process's, which shares the machine.
	ServerCPU, GeneratorCPU time.Duration
}

// Goodput is the requests per second served within MaxWait: an answer
// later than that is one its user has likely given up on.
func (r OpenLoopResult) Goodput() float64 {
	return float64(len(r.Served)-r.OverMaxWait) / r.Elapsed.Seconds()
}

// scheduled is one arrival: whose, and when it was due.
type scheduled struct {
	request []byte
	due     time.Time
}

// Run executes the arrivals and waits for every answer.
func (o OpenLoopRun) Run(ctx context.Context) (OpenLoopResult, error) {
	u, err := url.Parse(o.BaseURL)
	if err != nil {
		return OpenLoopResult{}, fmt.Errorf("base URL: %w", err)
	}
	body, _ := json.Marshal(map[string]any{"query": o.Query})
	requests := make([][]byte, len(o.Clients))
	for i, c := range o.Clients {
		requests[i] = fmt.Appendf(nil, "POST /query HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s",
			u.Host, c.Token, len(body), body)
	}
	conns := o.Connections
	if conns <= 0 {
		conns = 4096
	}
	drain := o.Drain
	if drain <= 0 {
		drain = 35 * time.Second
	}
	total := int(o.Rate*o.Duration.Seconds()) + 1
	arrivals := make(chan scheduled, total)
	start := time.Now()
	end := start.Add(o.Duration)

	var res OpenLoopResult
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			w := openLoopConn{addr: u.Host}
			defer w.close()
			var served, atServer, lag []time.Duration
			var refused, failed, unsent int
			for a := range arrivals {
				if time.Now().After(end) {
					unsent++
					continue
				}
				status, ok, wrote, answered := w.do(ctx, a.request, end.Add(drain))
				switch {
				case ok:
					served = append(served, answered.Sub(a.due))
					atServer = append(atServer, answered.Sub(wrote))
					lag = append(lag, wrote.Sub(a.due))
				case status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
					refused++
				default:
					failed++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			res.Served = append(res.Served, served...)
			res.AtServer = append(res.AtServer, atServer...)
			res.Lag = append(res.Lag, lag...)
			res.Refused += refused
			res.Failed += failed
			res.Unsent += unsent
		})
	}

	cpuBefore, ownBefore := processCPU(o.ServerPID), processCPU(os.Getpid())
	for ctx.Err() == nil {
		elapsed := time.Since(start)
		if elapsed >= o.Duration {
			break
		}
		for due := int(elapsed.Seconds() * o.Rate); res.Sent < due; res.Sent++ {
			at := start.Add(time.Duration(float64(res.Sent) / o.Rate * float64(time.Second)))
			arrivals <- scheduled{request: requests[res.Sent%len(requests)], due: at}
		}
		time.Sleep(time.Millisecond)
	}
	close(arrivals)
	wg.Wait()
	res.Elapsed = o.Duration
	res.ServerCPU = processCPU(o.ServerPID) - cpuBefore
	res.GeneratorCPU = processCPU(os.Getpid()) - ownBefore
	slices.Sort(res.Served)
	slices.Sort(res.AtServer)
	slices.Sort(res.Lag)
	for _, d := range res.Served {
		if d > o.MaxWait {
			res.OverMaxWait++
		}
	}
	for _, d := range res.AtServer {
		if d > o.MaxWait {
			res.ServerOverMaxWait++
		}
	}
	return res, ctx.Err()
}

// openLoopConn is one keep-alive connection of an OpenLoopRun, dialled
// when first needed and again after an error.
type openLoopConn struct {
	addr string
	conn net.Conn
	br   *bufio.Reader
}

// bodies holds the buffers answers with data are read into, to check
// them for errors; refusals are discarded unread.
var bodies = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// do sends one prepared request and reads its answer by deadline: the
// status, whether it carried data and no error, when the request was
// written and when the answer's header was read.
func (c *openLoopConn) do(ctx context.Context, request []byte, deadline time.Time) (status int, ok bool, wrote, answered time.Time) {
	if c.conn == nil {
		d := net.Dialer{Deadline: deadline}
		conn, err := d.DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return 0, false, time.Time{}, time.Time{}
		}
		c.conn, c.br = conn, bufio.NewReader(conn)
		_ = conn.SetDeadline(deadline)
	}
	if _, err := c.conn.Write(request); err != nil {
		c.close()
		return 0, false, time.Time{}, time.Time{}
	}
	wrote = time.Now()
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.close()
		return 0, false, wrote, time.Time{}
	}
	answered = time.Now()
	if resp.StatusCode != http.StatusOK {
		_, err = io.Copy(io.Discard, resp.Body)
	} else {
		body := bodies.Get().(*bytes.Buffer)
		body.Reset()
		if _, err = io.Copy(body, resp.Body); err == nil {
			ok = !bytes.Contains(body.Bytes(), []byte(`"errors"`))
		}
		bodies.Put(body)
	}
	resp.Body.Close()
	if err != nil || resp.Close {
		c.close()
	}
	return resp.StatusCode, ok && err == nil, wrote, answered
}

func (c *openLoopConn) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.br = nil, nil
	}
}
