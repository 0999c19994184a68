package dbpool

import (
	"container/list"
	"sync"
	"time"
)

// waiters tracks when each acquire in progress started, so that Stats can
// say how long the oldest has been waiting: a queue that moves slowly shows
// there before any acquire times out. It is safe for concurrent use.
type waiters struct {
	mu sync.Mutex
	// since holds start times in the order acquires began, which is also
	// ascending time order because they are taken under mu.
	since list.List
}

// add records an acquire starting now, and returns its start time and the
// handle done takes.
func (w *waiters) add() (time.Time, *list.Element) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	return now, w.since.PushBack(now)
}

// done forgets an acquire that add recorded.
func (w *waiters) done(e *list.Element) {
	w.mu.Lock()
	w.since.Remove(e)
	w.mu.Unlock()
}

// oldest is how long the longest-waiting acquire in progress has waited,
// or 0 when none is.
func (w *waiters) oldest() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	front := w.since.Front()
	if front == nil {
		return 0
	}
	return time.Since(front.Value.(time.Time))
}
