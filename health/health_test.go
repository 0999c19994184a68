package health_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"chatql/dbpool"
	"chatql/health"
)

func TestLiveness(t *testing.T) {
	t.Parallel()
	_, srv := newServer(t, dbpool.DefaultConfig())
	var body map[string]string
	if code := get(t, srv.URL+"/health", &body); code != 200 || body["status"] != "ok" {
		t.Fatalf("/health = %d %v", code, body)
	}
}

// TestPoolEndpointUnderExhaustion: with every connection checked out and
// callers queueing, /health/db-pool still answers at once and says busy.
func TestPoolEndpointUnderExhaustion(t *testing.T) {
	t.Parallel()
	cfg := dbpool.DefaultConfig()
	cfg.Size, cfg.MaxOverflow, cfg.Timeout = 1, 1, 10*time.Second
	pool, srv := newServer(t, cfg)
	ctx := context.Background()

	holders := []*dbpool.Scope{pool.Scope(), pool.Scope()}
	for _, s := range holders {
		if _, err := s.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	var waiters sync.WaitGroup
	for range 3 {
		waiters.Add(1)
		go func() {
			defer waiters.Done()
			_ = pool.Ping(ctx)
		}()
	}
	waitFor(t, 5*time.Second, "three callers queueing", func() bool { return pool.Stats().Waiting == 3 })

	var worst time.Duration
	var snap dbpool.Stats
	for range 20 {
		start := time.Now()
		if code := get(t, srv.URL+"/health/db-pool", &snap); code != 200 {
			t.Fatalf("status %d", code)
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("slowest /health/db-pool of 20 while exhausted: %s", worst)
	// At once: a loaded machine may take a while, but a request that
	// queued for a connection would wait out the pool timeout (10 s).
	if worst > 5*time.Second {
		t.Errorf("/health/db-pool took %s while the pool was exhausted", worst)
	}
	if snap.Waiting < 1 || snap.Status != dbpool.StatusBusy || snap.CheckedOut != 2 || snap.MaxConnections != 2 {
		t.Errorf("snapshot while exhausted: %+v", snap)
	}

	for _, s := range holders {
		s.Release()
	}
	waiters.Wait()
	if code := get(t, srv.URL+"/health/db-pool", &snap); code != 200 || snap.Status != dbpool.StatusOK || snap.CheckedOut != 0 {
		t.Errorf("after release: %d %+v", code, snap)
	}
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	cfg := dbpool.DefaultConfig()
	// Below the probe's own 2 s, so that an exhausted pool is reported as
	// such; a second, so that opening the connection on a loaded machine
	// does not run into it.
	cfg.Size, cfg.MaxOverflow, cfg.Timeout = 1, 0, time.Second
	pool, srv := newServer(t, cfg)
	var body map[string]string
	if code := get(t, srv.URL+"/health/ready", &body); code != 200 {
		t.Fatalf("/health/ready = %d %v", code, body)
	}

	// Pool exhausted: the only connection is held.
	s := pool.Scope()
	if _, err := s.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if code := get(t, srv.URL+"/health/ready", &body); code != 503 || body["reason"] != health.ReasonPoolExhausted {
		t.Errorf("exhausted: /health/ready = %d %v", code, body)
	}
	s.Release()

	// Database unreachable.
	_, downSrv := serveHealth(t, "postgres://nobody@127.0.0.1:1/none", cfg)
	if code := get(t, downSrv.URL+"/health/ready", &body); code != 503 || body["reason"] != health.ReasonUnreachable {
		t.Errorf("unreachable: /health/ready = %d %v", code, body)
	}
}
