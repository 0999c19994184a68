package admission_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"chatql/admission"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable clock whose timers fire when a test moves it past
// them, in the test's goroutine; tests never sleep.
type clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer
}

type timer struct {
	at      time.Time
	f       func()
	stopped bool
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	for _, t := range c.timers {
		if !t.stopped && !t.at.After(c.now) {
			t.stopped = true
			due = append(due, t.f)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

// observer counts queued operations, so that a test knows one is waiting.
type observer struct{ queued chan struct{} }

func newObserver() *observer                                { return &observer{queued: make(chan struct{}, 100)} }
func (o *observer) Queued()                                 { o.queued <- struct{}{} }
func (o *observer) Admitted(time.Duration)                  {}
func (o *observer) Refused(admission.Reason, time.Duration) {}

// waitQueued waits until n more operations have started waiting.
func (o *observer) waitQueued(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for range n {
		select {
		case <-o.queued:
		case <-deadline:
			t.Fatal("operation never queued")
		}
	}
}

type result struct {
	key    string
	ticket *admission.Ticket
	err    error
}

// acquireAsync starts Acquire(key) in a goroutine; its result arrives on
// the channel.
func acquireAsync(ctx context.Context, c *admission.Controller, key string) chan result {
	ch := make(chan result, 1)
	go func() {
		t, err := c.Acquire(ctx, key)
		ch <- result{key, t, err}
	}()
	return ch
}

func mustAcquire(t *testing.T, c *admission.Controller, key string) *admission.Ticket {
	t.Helper()
	tk, err := c.Acquire(context.Background(), key)
	if err != nil {
		t.Fatalf("Acquire(%q): %v", key, err)
	}
	return tk
}

func receive(t *testing.T, ch chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no admission decision")
		return result{}
	}
}

func expectPending(t *testing.T, chs ...chan result) {
	t.Helper()
	for _, ch := range chs {
		select {
		case r := <-ch:
			t.Fatalf("%s decided (%v), want it still waiting", r.key, r.err)
		default:
		}
	}
}

func expectRefused(t *testing.T, err error, reason admission.Reason, is error) *admission.RefusedError {
	t.Helper()
	var refused *admission.RefusedError
	if !errors.As(err, &refused) || refused.Reason != reason || !errors.Is(err, is) {
		t.Fatalf("err = %v, want a refusal for %s matching %v", err, reason, is)
	}
	return refused
}

func newController(cfg admission.Config, opts ...admission.Option) (*admission.Controller, *clock, *observer) {
	clk, obs := newClock(), newObserver()
	return admission.New(cfg, append([]admission.Option{admission.WithClock(clk), admission.WithObserver(obs)}, opts...)...), clk, obs
}

// setServiceTime makes the recent service time about d: it runs enough
// operations of d each for the average to converge.
func setServiceTime(t *testing.T, c *admission.Controller, clk *clock, d time.Duration) {
	t.Helper()
	for range 100 {
		tk := mustAcquire(t, c, "warm-up")
		clk.advance(d)
		tk.Release()
	}
}

// TestQuietPrincipalAdmittedNext: one principal floods (its running slots
// full, three more waiting), the server is full, another principal
// arrives: when a slot frees, the quiet principal's operation is admitted
// next, then the flood's in their order.
func TestQuietPrincipalAdmittedNext(t *testing.T) {
	c, _, obs := newController(admission.Config{PerPrincipal: 2, QueuePerPrincipal: 8, MaxConcurrent: 2, MaxWait: time.Minute})
	ctx := context.Background()
	running := []*admission.Ticket{mustAcquire(t, c, "noisy"), mustAcquire(t, c, "noisy")}
	var flood []chan result
	for range 3 {
		flood = append(flood, acquireAsync(ctx, c, "noisy"))
		obs.waitQueued(t, 1)
	}
	quiet := acquireAsync(ctx, c, "quiet")
	obs.waitQueued(t, 1)
	expectPending(t, append(flood, quiet)...)

	running[0].Release()
	r := receive(t, quiet)
	if r.err != nil {
		t.Fatalf("quiet principal: %v", r.err)
	}
	expectPending(t, flood...)
	if st := c.Stats(); st.Running != 2 || st.Queued != 3 {
		t.Fatalf("stats %+v, want 2 running and 3 queued", st)
	}
	// The quiet principal has nothing waiting: the flood takes every slot
	// that frees, oldest first.
	r.ticket.Release()
	first := receive(t, flood[0])
	expectPending(t, flood[1:]...)
	running[1].Release()
	second := receive(t, flood[1])
	expectPending(t, flood[2])
	first.ticket.Release()
	second.ticket.Release()
	third := receive(t, flood[2])
	third.ticket.Release()
	if st := c.Stats(); st.Running != 0 || st.Queued != 0 || st.Principals != 0 || st.Admitted != 6 {
		t.Fatalf("stats %+v, want nothing left and 6 admitted", st)
	}
}

// TestRoundRobin: three principals wait; the slot that frees goes to
// each in turn, one operation at a time, not to the one with the most
// waiting.
func TestRoundRobin(t *testing.T) {
	c, _, obs := newController(admission.Config{PerPrincipal: 4, QueuePerPrincipal: 8, MaxConcurrent: 1, MaxWait: time.Minute})
	ctx := context.Background()
	holder := mustAcquire(t, c, "a")
	var waiting []chan result
	for _, key := range []string{"a", "a", "b", "b", "c"} {
		waiting = append(waiting, acquireAsync(ctx, c, key))
		obs.waitQueued(t, 1)
	}
	next := holder
	// a's first arrived first; then b, c, a's second, b's second.
	for _, i := range []int{0, 2, 4, 1, 3} {
		next.Release()
		r := receive(t, waiting[i])
		if r.err != nil {
			t.Fatal(r.err)
		}
		waiting[i] = nil
		for _, ch := range waiting {
			if ch != nil {
				expectPending(t, ch)
			}
		}
		next = r.ticket
	}
	next.Release()
}

// TestQueueFullRefusedAtOnce: past its queue, a principal's operation is
// refused without waiting, as the principal's share (429), with a
// Retry-After; another principal is not affected.
func TestQueueFullRefusedAtOnce(t *testing.T) {
	c, clk, obs := newController(admission.Config{PerPrincipal: 1, QueuePerPrincipal: 2, MaxConcurrent: 4, MaxWait: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tk := mustAcquire(t, c, "noisy")
	defer tk.Release()
	for range 2 {
		acquireAsync(ctx, c, "noisy")
		obs.waitQueued(t, 1)
	}
	_, err := c.Acquire(ctx, "noisy")
	refused := expectRefused(t, err, admission.ReasonQueueFull, admission.ErrPrincipalBusy)
	if refused.Waited != 0 || refused.Hold != 0 || refused.RetryAfter != time.Second {
		t.Fatalf("first refusal %+v, want one at once with Retry-After 1s", refused)
	}
	// Back before its Retry-After: refused again, the answer held until
	// then; back after it: at once again.
	clk.advance(400 * time.Millisecond)
	_, err = c.Acquire(ctx, "noisy")
	if refused := expectRefused(t, err, admission.ReasonQueueFull, admission.ErrPrincipalBusy); refused.Hold != 600*time.Millisecond {
		t.Fatalf("early retry held %v, want the 600ms left", refused.Hold)
	}
	clk.advance(600 * time.Millisecond)
	_, err = c.Acquire(ctx, "noisy")
	if refused := expectRefused(t, err, admission.ReasonQueueFull, admission.ErrPrincipalBusy); refused.Hold != 0 {
		t.Fatalf("retry on time held %v", refused.Hold)
	}
	other := mustAcquire(t, c, "quiet")
	other.Release()
	if st := c.Stats(); st.RefusedQueueFull != 3 || st.Queued != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestPredictedWaitRefusedAtOnce: an operation whose place in the queue
// times the recent service time exceeds its wait budget (MaxWait less the
// service time) is refused on arrival: 429 when its principal's share
// decides, 503 when the server's does; Retry-After is the excess.
func TestPredictedWaitRefusedAtOnce(t *testing.T) {
	// The budget is 1.4 s - 400 ms = 1 s.
	c, clk, obs := newController(admission.Config{PerPrincipal: 1, QueuePerPrincipal: 100, MaxConcurrent: 1, MaxWait: 1400 * time.Millisecond})
	setServiceTime(t, c, clk, 400*time.Millisecond)
	if st := c.Stats(); st.ServiceTimeMs < 399 || st.ServiceTimeMs > 400 {
		t.Fatalf("service time %v ms, want about 400", st.ServiceTimeMs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tk := mustAcquire(t, c, "noisy")
	defer tk.Release()
	// Alone, noisy is admitted at its own rate: one per 400 ms.
	acquireAsync(ctx, c, "noisy") // 400 ms
	obs.waitQueued(t, 1)
	acquireAsync(ctx, c, "noisy") // 800 ms
	obs.waitQueued(t, 1)
	_, err := c.Acquire(ctx, "noisy") // 1.2 s
	refused := expectRefused(t, err, admission.ReasonPrincipalBusy, admission.ErrPrincipalBusy)
	// The excess is 200 ms; Retry-After counts whole seconds.
	if refused.RetryAfter != time.Second {
		t.Fatalf("retry after %v, want 1s", refused.RetryAfter)
	}

	// Another principal shares the one slot with noisy: its fair share
	// is half, so its first operation waits 800 ms; a third principal's
	// would wait 1.2 s, and the server is what makes it wait.
	acquireAsync(ctx, c, "quiet")
	obs.waitQueued(t, 1)
	_, err = c.Acquire(ctx, "third")
	expectRefused(t, err, admission.ReasonServerBusy, admission.ErrServerBusy)
	// A server-wide refusal is never held, even for a principal that
	// comes back before its Retry-After with an operation still waiting:
	// the server is refusing many principals, and holding every answer
	// would hold a connection per arrival.
	for range 2 {
		_, err = c.Acquire(ctx, "quiet") // its second: 1.6 s
		if refused := expectRefused(t, err, admission.ReasonServerBusy, admission.ErrServerBusy); refused.Hold != 0 {
			t.Fatalf("server-wide refusal held %v", refused.Hold)
		}
		clk.advance(100 * time.Millisecond)
	}
}

// TestBurstOfManyPrincipalsQueued: a burst from many principals, each
// with a few operations, waits as long as the whole queue takes to drain,
// not as long as if every principal had as many waiting as the longest:
// ten principals with three waiting each, two slots of 100 ms: the last
// of 31 waits 1.55 s, within the 2 s budget.
func TestBurstOfManyPrincipalsQueued(t *testing.T) {
	c, clk, obs := newController(admission.Config{PerPrincipal: 2, QueuePerPrincipal: 8, MaxConcurrent: 2, MaxWait: 2100 * time.Millisecond})
	setServiceTime(t, c, clk, 100*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tk := range []*admission.Ticket{mustAcquire(t, c, "running"), mustAcquire(t, c, "running")} {
		defer tk.Release()
	}
	for i := range 30 {
		acquireAsync(ctx, c, fmt.Sprint("p", i%10))
		obs.waitQueued(t, 1)
	}
	last := acquireAsync(ctx, c, "p0") // its fourth
	obs.waitQueued(t, 1)
	expectPending(t, last)
	if st := c.Stats(); st.Queued != 31 || st.RefusedServerBusy != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestQueuedRefusedAtBound: an operation still waiting at its budget
// (MaxWait less the service time, so that it would still answer within
// MaxWait) is refused then: 429 when its principal was at its limit, 503
// when the server was.
func TestQueuedRefusedAtBound(t *testing.T) {
	c, clk, obs := newController(admission.Config{PerPrincipal: 1, QueuePerPrincipal: 4, MaxConcurrent: 1, MaxWait: 2200 * time.Millisecond})
	setServiceTime(t, c, clk, 200*time.Millisecond)
	ctx := context.Background()
	tk := mustAcquire(t, c, "noisy")
	defer tk.Release()
	noisy := acquireAsync(ctx, c, "noisy")
	obs.waitQueued(t, 1)
	clk.advance(time.Second)
	quiet := acquireAsync(ctx, c, "quiet")
	obs.waitQueued(t, 1)
	// The budget is 2.2 s less the slowest service time, 200 ms, and a
	// twentieth of 2.2 s, 110 ms: 1.89 s.
	clk.advance(870 * time.Millisecond)
	expectPending(t, noisy, quiet)
	clk.advance(20 * time.Millisecond)
	refused := expectRefused(t, receive(t, noisy).err, admission.ReasonPrincipalBusy, admission.ErrPrincipalBusy)
	if refused.Waited != 1890*time.Millisecond {
		t.Fatalf("waited %v, want the budget", refused.Waited)
	}
	expectPending(t, quiet)
	clk.advance(time.Second)
	expectRefused(t, receive(t, quiet).err, admission.ReasonServerBusy, admission.ErrServerBusy)
	if st := c.Stats(); st.Expired != 2 || st.Queued != 0 || st.Principals != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestWaitBudgetCoversServiceSpread: when service times vary, the budget
// leaves room for a slow one, not only for the average: operations that
// take 100 and 300 ms in turn average 200 ms, so an operation waits at
// most 2 s - 300 ms - 100 ms (a twentieth of 2 s); the average alone would
// allow 1.8 s.
func TestWaitBudgetCoversServiceSpread(t *testing.T) {
	c, clk, obs := newController(admission.Config{PerPrincipal: 1, QueuePerPrincipal: 4, MaxConcurrent: 1, MaxWait: 2 * time.Second})
	for i := range 200 {
		tk := mustAcquire(t, c, "warm-up")
		clk.advance(time.Duration(100+200*(i%2)) * time.Millisecond)
		tk.Release()
	}
	tk := mustAcquire(t, c, "a")
	defer tk.Release()
	waiting := acquireAsync(context.Background(), c, "a")
	obs.waitQueued(t, 1)
	clk.advance(1580 * time.Millisecond)
	expectPending(t, waiting)
	clk.advance(20 * time.Millisecond)
	refused := expectRefused(t, receive(t, waiting).err, admission.ReasonPrincipalBusy, admission.ErrPrincipalBusy)
	if refused.Waited != 1600*time.Millisecond {
		t.Fatalf("waited %v, want 1.6 s", refused.Waited)
	}
}

// TestCancelledWhileWaiting: a caller that gives up leaves the queue; the
// slot it would have had goes to the next.
func TestCancelledWhileWaiting(t *testing.T) {
	c, _, obs := newController(admission.Config{PerPrincipal: 1, QueuePerPrincipal: 4, MaxConcurrent: 1, MaxWait: time.Minute})
	tk := mustAcquire(t, c, "a")
	ctx, cancel := context.WithCancel(context.Background())
	gone := acquireAsync(ctx, c, "b")
	obs.waitQueued(t, 1)
	stays := acquireAsync(context.Background(), c, "c")
	obs.waitQueued(t, 1)
	cancel()
	if r := receive(t, gone); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", r.err)
	}
	tk.Release()
	r := receive(t, stays)
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.ticket.Release()
	r.ticket.Release() // idempotent
	if st := c.Stats(); st.Running != 0 || st.Queued != 0 || st.Principals != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSubscriptionCap: a principal's open subscriptions are capped; one
// closing makes room.
func TestSubscriptionCap(t *testing.T) {
	c, _, _ := newController(admission.Config{PerPrincipal: 1, SubscriptionsPerPrincipal: 2})
	first, err := c.OpenSubscription("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.OpenSubscription("a"); err != nil {
		t.Fatal(err)
	}
	_, err = c.OpenSubscription("a")
	expectRefused(t, err, admission.ReasonSubscriptions, admission.ErrPrincipalBusy)
	if _, err := c.OpenSubscription("b"); err != nil {
		t.Fatal(err)
	}
	first()
	first()
	if _, err := c.OpenSubscription("a"); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Subscriptions != 3 || st.RefusedSubscriptions != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestOff: PerPrincipal 0 admits everything at once.
func TestOff(t *testing.T) {
	c := admission.New(admission.Config{})
	for range 100 {
		tk, err := c.Acquire(context.Background(), "a")
		if err != nil {
			t.Fatal(err)
		}
		defer tk.Release()
	}
	if st := c.Stats(); st.Enabled || st.Running != 0 {
		t.Fatalf("stats %+v", st)
	}
}
