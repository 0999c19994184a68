// Package ratelimit counts events per key in fixed windows, in memory:
// "at most Limit events per Window for each key", with the time until a
// refused key may try again.
//
// A key's window opens at its first event and lasts Window; when it has
// passed, the key starts afresh. A key can therefore see up to twice Limit
// events in a span of one Window straddling two windows, but never more
// than Limit in any window it is counted in, and the long-run rate is
// Limit per Window.
//
// State is per process and lost on restart: replicas of a deployment each
// count their own events, so N replicas behind a load balancer allow up to
// N times Limit. Memory is bounded: expired keys are forgotten as time
// passes, and at most MaxKeys keys are kept; when that many are live, the
// key whose window opened first is forgotten to make room (its window is
// the closest to ending anyway). Refusing new keys instead would let a
// flood of keys shut everyone else out.
//
// A Limiter is safe for concurrent use.
package ratelimit

import (
	"container/list"
	"sync"
	"time"
)

// DefaultMaxKeys is the number of keys a Limiter keeps unless told
// otherwise: about 100 bytes each plus the key, so some ten megabytes.
const DefaultMaxKeys = 100_000

// Config configures a Limiter.
type Config struct {
	// Limit is how many events a key may have per Window; 0 or less means
	// no limit (Allow always succeeds and nothing is kept).
	Limit int
	// Window is how long a key's count lasts from its first event.
	Window time.Duration
	// MaxKeys bounds the keys kept; 0 means DefaultMaxKeys.
	MaxKeys int
	// Now is the clock; nil means time.Now. Tests inject their own.
	Now func() time.Time
}

// Limiter counts events per key; see the package documentation.
type Limiter struct {
	limit   int
	window  time.Duration
	maxKeys int
	now     func() time.Time

	mu   sync.Mutex
	keys map[string]*list.Element // of *entry
	// order holds the entries by the start of their window, oldest at the
	// front: a window opens at its key's first event, which is now, so
	// appending keeps the order.
	order *list.List
}

type entry struct {
	key   string
	start time.Time
	count int
}

// New returns a Limiter for cfg.
func New(cfg Config) *Limiter {
	l := &Limiter{
		limit: cfg.Limit, window: cfg.Window, maxKeys: cfg.MaxKeys, now: cfg.Now,
		keys: map[string]*list.Element{}, order: list.New(),
	}
	if l.maxKeys <= 0 {
		l.maxKeys = DefaultMaxKeys
	}
	if l.now == nil {
		l.now = time.Now
	}
	return l
}

// Allow counts an event for key if key is under its limit and reports
// true; otherwise it counts nothing and reports false with how long until
// key's window ends (always more than zero).
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	if l.limit <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.expire(now)
	if el, found := l.keys[key]; found {
		e := el.Value.(*entry)
		if e.count >= l.limit {
			return false, max(e.start.Add(l.window).Sub(now), time.Nanosecond)
		}
		e.count++
		return true, 0
	}
	if l.order.Len() >= l.maxKeys {
		l.remove(l.order.Front())
	}
	l.keys[key] = l.order.PushBack(&entry{key: key, start: now, count: 1})
	return true, 0
}

// Undo takes back one event Allow counted for key, for an attempt that in
// the end did not count (it was refused elsewhere before doing anything).
// It does nothing for a key with no events.
func (l *Limiter) Undo(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	el, found := l.keys[key]
	if !found {
		return
	}
	if e := el.Value.(*entry); e.count > 1 {
		e.count--
	} else {
		l.remove(el)
	}
}

// Reset forgets key's events.
func (l *Limiter) Reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, found := l.keys[key]; found {
		l.remove(el)
	}
}

// Len is the number of keys kept.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.order.Len()
}

// expire forgets the keys whose window has ended, oldest first: they are
// at the front. A clock that steps back leaves them until it catches up.
func (l *Limiter) expire(now time.Time) {
	for el := l.order.Front(); el != nil; el = l.order.Front() {
		if now.Before(el.Value.(*entry).start.Add(l.window)) {
			return
		}
		l.remove(el)
	}
}

func (l *Limiter) remove(el *list.Element) {
	delete(l.keys, el.Value.(*entry).key)
	l.order.Remove(el)
}
