package ratelimit_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"chatql/ratelimit"
)

// clock is a settable clock for a Limiter; tests move it, never sleep.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// expectAllow fails unless Allow(key) answers ok (and, when refused,
// retryAfter).
func expectAllow(t *testing.T, l *ratelimit.Limiter, key string, ok bool, retryAfter time.Duration) {
	t.Helper()
	gotOK, gotRetry := l.Allow(key)
	if gotOK != ok || gotRetry != retryAfter {
		t.Fatalf("Allow(%q) = %v, %v; want %v, %v", key, gotOK, gotRetry, ok, retryAfter)
	}
}

// TestLimitPerWindow: Limit events pass, the next is refused until the
// window that opened with the first ends, with the time left; then the
// key starts afresh. Keys are independent.
func TestLimitPerWindow(t *testing.T) {
	c := newClock()
	l := ratelimit.New(ratelimit.Config{Limit: 3, Window: time.Minute, Now: c.Now})
	for range 3 {
		expectAllow(t, l, "a", true, 0)
		c.advance(10 * time.Second)
	}
	expectAllow(t, l, "a", false, 30*time.Second)
	expectAllow(t, l, "b", true, 0) // another key is not affected
	c.advance(29 * time.Second)
	expectAllow(t, l, "a", false, time.Second)
	c.advance(time.Second)
	expectAllow(t, l, "a", true, 0) // a new window
	expectAllow(t, l, "a", true, 0)
	expectAllow(t, l, "a", true, 0)
	expectAllow(t, l, "a", false, time.Minute)
}

// TestUndoAndReset: Undo gives one event back, Reset all of them; both
// are harmless on an unknown key.
func TestUndoAndReset(t *testing.T) {
	c := newClock()
	l := ratelimit.New(ratelimit.Config{Limit: 2, Window: time.Minute, Now: c.Now})
	l.Undo("nobody")
	l.Reset("nobody")
	expectAllow(t, l, "a", true, 0)
	expectAllow(t, l, "a", true, 0)
	expectAllow(t, l, "a", false, time.Minute)
	l.Undo("a")
	expectAllow(t, l, "a", true, 0)
	expectAllow(t, l, "a", false, time.Minute)
	l.Reset("a")
	if n := l.Len(); n != 0 {
		t.Errorf("Len after Reset = %d, want 0", n)
	}
	expectAllow(t, l, "a", true, 0)
	// Undoing the only event forgets the key.
	l.Undo("a")
	if n := l.Len(); n != 0 {
		t.Errorf("Len after undoing the only event = %d, want 0", n)
	}
}

// TestNoLimit: a Limit of 0 allows everything and keeps nothing.
func TestNoLimit(t *testing.T) {
	l := ratelimit.New(ratelimit.Config{Window: time.Minute})
	for range 1000 {
		expectAllow(t, l, "a", true, 0)
	}
	if n := l.Len(); n != 0 {
		t.Errorf("Len = %d, want 0", n)
	}
}

// TestExpiredKeysForgotten: keys whose window has ended are dropped on
// the next event, whichever key it is for.
func TestExpiredKeysForgotten(t *testing.T) {
	c := newClock()
	l := ratelimit.New(ratelimit.Config{Limit: 1, Window: time.Minute, Now: c.Now})
	for i := range 100 {
		l.Allow(fmt.Sprint("k", i))
		c.advance(100 * time.Millisecond)
	}
	if n := l.Len(); n != 100 {
		t.Fatalf("Len = %d, want 100", n)
	}
	c.advance(55*time.Second - 50*time.Millisecond) // k0 to k49 have ended
	l.Allow("other")
	if n := l.Len(); n != 51 {
		t.Errorf("Len = %d, want 51 (50 live + other)", n)
	}
	c.advance(time.Hour)
	l.Allow("other")
	if n := l.Len(); n != 1 {
		t.Errorf("Len = %d, want 1", n)
	}
}

// TestMaxKeysEvictsOldest: a full Limiter forgets the key whose window
// opened first, and keeps counting the others.
func TestMaxKeysEvictsOldest(t *testing.T) {
	c := newClock()
	l := ratelimit.New(ratelimit.Config{Limit: 1, Window: time.Hour, MaxKeys: 3, Now: c.Now})
	for _, k := range []string{"a", "b", "c"} {
		expectAllow(t, l, k, true, 0)
		c.advance(time.Second)
	}
	expectAllow(t, l, "d", true, 0) // evicts a
	if n := l.Len(); n != 3 {
		t.Fatalf("Len = %d, want 3", n)
	}
	expectAllow(t, l, "a", true, 0) // a forgotten: afresh (evicts b)
	expectAllow(t, l, "c", false, time.Hour-time.Second)
	expectAllow(t, l, "d", false, time.Hour)
	expectAllow(t, l, "b", true, 0) // b was evicted by a (and c is now)
}

// TestConcurrentAllow: concurrent callers never get more than Limit
// events through for one key (run with -race).
func TestConcurrentAllow(t *testing.T) {
	l := ratelimit.New(ratelimit.Config{Limit: 10, Window: time.Hour})
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 50 {
		wg.Go(func() {
			if ok, _ := l.Allow("k"); ok {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if allowed != 10 {
		t.Errorf("%d allowed, want 10", allowed)
	}
}
