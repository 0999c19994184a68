package admission

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"
)

// Defaults: see Config. DefaultPerPrincipal is one less than the five
// connections of the Supabase block chatql is sized for, so that one
// principal's flood leaves a connection free for the next principal's
// operation: with 6, a quiet user's Inbox waited behind the flood in the
// pool's queue (over 11 runs, p50 2.3-2.9x its unloaded latency, p99 up
// to 10.9x); with 4, 1.4-1.7x and 2.8-7.7x over 4, and one user's flood
// still drew 0.96-1.18x the peak.
const (
	DefaultPerPrincipal              = 4
	DefaultQueuePerPrincipal         = 256
	DefaultMaxWait                   = 2 * time.Second
	DefaultSubscriptionsPerPrincipal = 20
)

// initialServiceTime is the service time assumed before any operation has
// finished: roughly an Inbox query on a quiet server.
const initialServiceTime = 10 * time.Millisecond

// recentServices is how many of the last service times the predictions
// and the wait budget look at: enough that their average is steady (with
// the last ten, a 256-client load that waited half its budget had one
// request in twenty refused on a spike of the average) and that an
// overloaded server's slow tail is in them, few enough to follow a change
// within a fraction of a second.
const recentServices = 64

// subscriptionRetryAfter is the Retry-After of a subscription over the
// cap: subscriptions end when their clients leave, not on a schedule.
const subscriptionRetryAfter = 10 * time.Second

// DefaultMaxConcurrent is the global limit for a pool that lends at most
// poolMax connections: every connection busy plus one operation per core
// doing the CPU work that needs none (parsing, encoding the response).
func DefaultMaxConcurrent(poolMax int) int {
	return poolMax + runtime.GOMAXPROCS(0)
}

// Config sets the limits; see the package documentation.
type Config struct {
	// PerPrincipal is how many operations one principal runs at once
	// (ADMISSION_PER_USER); 0 turns admission off: every operation runs
	// at once, as without this package.
	PerPrincipal int
	// QueuePerPrincipal is how many more may wait (ADMISSION_QUEUE_PER_USER).
	QueuePerPrincipal int
	// MaxConcurrent is how many operations run at once in all
	// (ADMISSION_MAX_CONCURRENT).
	MaxConcurrent int
	// MaxWait bounds the time an operation waits to be admitted
	// (ADMISSION_MAX_WAIT).
	MaxWait time.Duration
	// SubscriptionsPerPrincipal caps a principal's open subscriptions
	// (SUBSCRIPTIONS_PER_USER); 0 means no cap.
	SubscriptionsPerPrincipal int
}

// Enabled reports whether operations are admitted at all.
func (c Config) Enabled() bool { return c.PerPrincipal > 0 }

// Clock is time as the Controller sees it; tests inject their own.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d, unless stop is
	// called first; stop reports whether it prevented the call.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// Reason says why an operation was refused; it is the metrics label.
type Reason string

const (
	// ReasonQueueFull: the principal's queue was full.
	ReasonQueueFull Reason = "queue_full"
	// ReasonPrincipalBusy: the principal's own share would make it wait
	// too long, or did.
	ReasonPrincipalBusy Reason = "principal_busy"
	// ReasonServerBusy: the whole server would make it wait too long, or
	// did.
	ReasonServerBusy Reason = "server_busy"
	// ReasonSubscriptions: the principal has its cap of subscriptions open.
	ReasonSubscriptions Reason = "subscriptions"
)

// Errors a refusal matches (errors.Is): ErrPrincipalBusy when the
// principal's own share is full (RATE_LIMITED, 429), ErrServerBusy when
// the server is (OVERLOADED, 503).
var (
	ErrPrincipalBusy = errors.New("too many operations of this client at once")
	ErrServerBusy    = errors.New("the server is overloaded")
)

// RefusedError is an operation admission refused.
type RefusedError struct {
	Reason Reason
	// RetryAfter is when trying again is worth it: about when the queue
	// will have drained enough to admit within MaxWait.
	RetryAfter time.Duration
	// Waited is how long it waited before the refusal (0: at once).
	Waited time.Duration
	// Hold is how long the caller should wait before answering, at most
	// MaxWait: the principal was refused before and came back before its
	// Retry-After. Holding the answer costs a timer, not CPU, and slows a
	// client that retries at once to the pace it was asked to keep.
	Hold time.Duration
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("admission refused (%s): %v", e.Reason, e.Unwrap())
}

// Unwrap is ErrServerBusy or ErrPrincipalBusy.
func (e *RefusedError) Unwrap() error {
	if e.Reason == ReasonServerBusy {
		return ErrServerBusy
	}
	return ErrPrincipalBusy
}

// Observer is told every decision, for metrics. It is called without the
// Controller's lock held, and must not block.
type Observer interface {
	// Queued is called when an operation starts waiting.
	Queued()
	// Admitted is called when an operation is admitted, with how long it
	// waited (0 when it ran at once).
	Admitted(wait time.Duration)
	// Refused is called for every refusal; waited is 0 for one at arrival.
	Refused(reason Reason, waited time.Duration)
}

// Controller admits operations; see the package documentation.
type Controller struct {
	cfg      Config
	clock    Clock
	observer Observer

	mu sync.Mutex
	// principals holds those with operations running or waiting.
	principals map[string]*principal
	// ring holds the principals with waiting operations, in round-robin
	// order; next is the index of the one served next.
	ring    []*principal
	next    int
	running int
	queued  int
	// recent holds the last service times (a ring: recentNext is the
	// oldest, recentCount how many are set, recentSum their sum);
	// service is their average and slowest the longest of them.
	recent        [recentServices]time.Duration
	recentNext    int
	recentCount   int
	recentSum     time.Duration
	service       time.Duration
	slowest       time.Duration
	subscriptions map[string]int
	counts        Counts
}

type principal struct {
	key     string
	running int
	queue   []*waiter // oldest first
	// retryAt is when the principal's last refusal told it to come back.
	retryAt time.Time
}

// waiter is a queued operation; ready receives nil when it is admitted or
// its refusal. Its fields are guarded by the Controller's mu.
type waiter struct {
	p       *principal
	arrived time.Time
	ready   chan error
	stop    func() bool
	queued  bool // still in p.queue
	// admitted is when it was given its slot: its service time counts
	// from then, the wait to be scheduled included.
	admitted time.Time
}

// Option adjusts a Controller.
type Option func(*Controller)

// WithClock makes the Controller read time from clock.
func WithClock(clock Clock) Option { return func(c *Controller) { c.clock = clock } }

// WithObserver reports decisions to o.
func WithObserver(o Observer) Option { return func(c *Controller) { c.observer = o } }

// New returns a Controller with cfg's limits; zero values take the
// defaults, except PerPrincipal 0 (admission off) and
// SubscriptionsPerPrincipal 0 (no cap).
func New(cfg Config, opts ...Option) *Controller {
	if cfg.QueuePerPrincipal < 0 {
		cfg.QueuePerPrincipal = 0
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent(0)
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	c := &Controller{
		cfg:           cfg,
		clock:         realClock{},
		principals:    map[string]*principal{},
		subscriptions: map[string]int{},
		service:       initialServiceTime,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Config returns the limits in force.
func (c *Controller) Config() Config { return c.cfg }

// Ticket is an admitted operation's slot.
type Ticket struct {
	c       *Controller
	p       *principal
	started time.Time
	once    sync.Once
}

// Release gives the slot back and lets the next operation in. It is
// idempotent, and a no-op on a nil Ticket (admission off).
func (t *Ticket) Release() {
	if t == nil || t.c == nil {
		return
	}
	t.once.Do(func() { t.c.release(t) })
}

// Acquire admits an operation of principal key: at once, after waiting its
// turn (at most MaxWait), or not at all (a *RefusedError, or ctx's error
// when ctx ends while it waits). The caller must Release the ticket.
func (c *Controller) Acquire(ctx context.Context, key string) (*Ticket, error) {
	if !c.cfg.Enabled() {
		return nil, nil
	}
	c.mu.Lock()
	now := c.clock.Now()
	p := c.principal(key)
	if len(p.queue) == 0 && p.running < c.cfg.PerPrincipal && c.running < c.cfg.MaxConcurrent {
		t := c.start(p, now)
		c.counts.Admitted++
		c.mu.Unlock()
		c.observeAdmitted(0)
		return t, nil
	}
	wait, serverBound := c.predict(p, len(p.queue))
	budget := c.waitBudget()
	var refused *RefusedError
	switch {
	case len(p.queue) >= c.cfg.QueuePerPrincipal:
		refused = &RefusedError{Reason: ReasonQueueFull, RetryAfter: wait - budget}
	case wait > budget && serverBound:
		refused = &RefusedError{Reason: ReasonServerBusy, RetryAfter: wait - budget}
	case wait > budget:
		refused = &RefusedError{Reason: ReasonPrincipalBusy, RetryAfter: wait - budget}
	}
	if refused != nil {
		refused.RetryAfter = max(refused.RetryAfter, time.Second)
		// Only a principal over its own share is held: a server-wide
		// refusal goes to many principals, each sending a little, and
		// holding all their answers would hold a connection per arrival.
		if refused.Reason != ReasonServerBusy {
			if early := p.retryAt.Sub(now); early > 0 {
				refused.Hold = min(early, c.cfg.MaxWait)
			} else {
				p.retryAt = now.Add(refused.RetryAfter)
			}
		}
		c.counts.refused(refused.Reason)
		c.forget(p)
		c.mu.Unlock()
		c.observeRefused(refused.Reason, 0)
		return nil, refused
	}
	w := &waiter{p: p, arrived: now, ready: make(chan error, 1), queued: true}
	if len(p.queue) == 0 {
		c.ring = append(c.ring, p)
	}
	p.queue = append(p.queue, w)
	c.queued++
	c.counts.Queued++
	w.stop = c.clock.AfterFunc(budget, func() { c.expire(w) })
	c.mu.Unlock()
	if c.observer != nil {
		c.observer.Queued()
	}

	select {
	case err := <-w.ready:
		if err != nil {
			return nil, err
		}
		return &Ticket{c: c, p: p, started: w.admitted}, nil
	case <-ctx.Done():
		if c.cancel(w) {
			return nil, context.Cause(ctx)
		}
		// Admitted (or refused) meanwhile: take the outcome and give the
		// slot straight back.
		if err := <-w.ready; err == nil {
			(&Ticket{c: c, p: p, started: w.admitted}).Release()
		}
		return nil, context.Cause(ctx)
	}
}

// principal returns key's state, creating it. c.mu is held.
func (c *Controller) principal(key string) *principal {
	p, ok := c.principals[key]
	if !ok {
		p = &principal{key: key}
		c.principals[key] = p
	}
	return p
}

// forget drops p's state when it has nothing running or waiting, so that
// memory follows the active principals only. c.mu is held.
func (c *Controller) forget(p *principal) {
	if p.running == 0 && len(p.queue) == 0 {
		delete(c.principals, p.key)
	}
}

// start takes a slot for p. c.mu is held.
func (c *Controller) start(p *principal, now time.Time) *Ticket {
	p.running++
	c.running++
	return &Ticket{c: c, p: p, started: now}
}

// waitBudget is how long an operation may wait for its slot: MaxWait
// less the slowest of the last service times, so that an operation
// admitted at the end of its wait still answers within MaxWait of its
// arrival (a client counts its whole round trip, not the wait alone), and
// less a twentieth of MaxWait for what happens outside the slot (reading
// the request's headers before admission, the network, a client's own
// delay in sending on a busy machine): less the average alone, one answer
// in 200 under a 10x overload took longer; less the slowest alone, one in
// 1,500, by a millisecond or two; less a fiftieth as well, 2 in 6,400 by
// up to 18 ms once the server held more waiting requests than it had when
// the Inbox was slower. At least half of MaxWait, so that a slow spell
// does not turn every wait into a refusal.
// c.mu is held.
func (c *Controller) waitBudget() time.Duration {
	return max(c.cfg.MaxWait-max(c.service, c.slowest)-c.cfg.MaxWait/20, c.cfg.MaxWait/2)
}

// predict is how long an operation at place pos of p's queue would wait,
// and whether the server's limit rather than p's own decides it. p's own
// limit admits PerPrincipal of its operations per service time; the
// global one MaxConcurrent of everyone's, and round-robin lets every other
// waiting principal have at most pos+1 turns before this operation, so
// at most that many operations each, and never more than are waiting in
// all, go first. Counting every principal as if it had pos+1 waiting
// refused half of a burst of 2,000 subscription starts from 256 users
// that the server admitted within a second. O(1): the counts are kept.
// c.mu is held.
func (c *Controller) predict(p *principal, pos int) (wait time.Duration, serverBound bool) {
	own := float64(pos+1) / float64(c.cfg.PerPrincipal)
	others := len(c.ring)
	if len(p.queue) > 0 {
		others-- // p is in the ring
	}
	ahead := min(c.queued-len(p.queue)+pos+1, (others+1)*(pos+1))
	global := float64(ahead) / float64(c.cfg.MaxConcurrent)
	if global > own {
		return time.Duration(global * float64(c.service)), true
	}
	return time.Duration(own * float64(c.service)), false
}

func (c *Controller) release(t *Ticket) {
	c.mu.Lock()
	now := c.clock.Now()
	held := now.Sub(t.started)
	c.recentSum += held - c.recent[c.recentNext]
	c.recent[c.recentNext] = held
	c.recentNext = (c.recentNext + 1) % recentServices
	c.recentCount = min(c.recentCount+1, recentServices)
	c.service = c.recentSum / time.Duration(c.recentCount)
	c.slowest = slices.Max(c.recent[:])
	t.p.running--
	c.running--
	admitted := c.dispatch(now)
	c.forget(t.p)
	c.mu.Unlock()
	for _, wait := range admitted {
		c.observeAdmitted(wait)
	}
}

// dispatch admits waiting operations while the global limit allows,
// taking the principals in turn, and returns how long each waited. c.mu is
// held.
func (c *Controller) dispatch(now time.Time) []time.Duration {
	var waits []time.Duration
	for c.running < c.cfg.MaxConcurrent {
		p := c.nextEligible()
		if p == nil {
			break
		}
		w := p.queue[0]
		p.queue[0] = nil
		p.queue = p.queue[1:]
		c.dequeued(w)
		w.stop()
		p.running++
		c.running++
		c.counts.Admitted++
		w.admitted = now
		w.ready <- nil
		waits = append(waits, now.Sub(w.arrived))
	}
	return waits
}

// nextEligible is the principal admitted next, or nil: of those in the
// ring below their own limit, the one with the fewest operations running,
// the first in ring order from next among equals; the ring moves past it.
// Plain round-robin would hand a slot freed by a flood back to the flood
// as often as not; preferring the principal with the least running gives
// it to the quiet one. c.mu is held.
func (c *Controller) nextEligible() *principal {
	n := len(c.ring)
	best := -1
	for i := range n {
		idx := (c.next + i) % n
		p := c.ring[idx]
		if p.running < c.cfg.PerPrincipal && (best < 0 || p.running < c.ring[best].running) {
			best = idx
		}
	}
	if best < 0 {
		return nil
	}
	c.next = best + 1
	return c.ring[best]
}

// dequeued accounts for w leaving its queue, and its principal leaving the
// ring when that was its last waiter. c.mu is held.
func (c *Controller) dequeued(w *waiter) {
	w.queued = false
	c.queued--
	p := w.p
	if len(p.queue) > 0 {
		return
	}
	for i, q := range c.ring {
		if q == p {
			c.ring = append(c.ring[:i], c.ring[i+1:]...)
			if i < c.next {
				c.next--
			}
			break
		}
	}
	if len(c.ring) == 0 {
		c.next = 0
	} else {
		c.next %= len(c.ring)
	}
}

// remove takes w out of its principal's queue. c.mu is held.
func (c *Controller) remove(w *waiter) {
	p := w.p
	for i, q := range p.queue {
		if q == w {
			p.queue = append(p.queue[:i], p.queue[i+1:]...)
			break
		}
	}
	c.dequeued(w)
	c.forget(p)
}

// expire refuses w if it is still waiting after MaxWait.
func (c *Controller) expire(w *waiter) {
	c.mu.Lock()
	if !w.queued {
		c.mu.Unlock()
		return
	}
	p := w.p
	reason := ReasonServerBusy
	if p.running >= c.cfg.PerPrincipal {
		reason = ReasonPrincipalBusy
	}
	wait, _ := c.predict(p, len(p.queue)-1)
	c.remove(w)
	c.counts.refused(reason)
	c.counts.Expired++
	waited := c.clock.Now().Sub(w.arrived)
	c.mu.Unlock()
	w.ready <- &RefusedError{Reason: reason, RetryAfter: wait, Waited: waited}
	c.observeRefused(reason, waited)
}

// cancel takes w out of the queue when its caller gave up; false when it
// was admitted or refused first.
func (c *Controller) cancel(w *waiter) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !w.queued {
		return false
	}
	w.stop()
	c.remove(w)
	return true
}

// OpenSubscription counts a subscription of principal key until the
// returned close (idempotent), or refuses it with ReasonSubscriptions when
// the principal has SubscriptionsPerPrincipal open.
func (c *Controller) OpenSubscription(key string) (closeFn func(), err error) {
	if c.cfg.SubscriptionsPerPrincipal <= 0 {
		return func() {}, nil
	}
	c.mu.Lock()
	if c.subscriptions[key] >= c.cfg.SubscriptionsPerPrincipal {
		c.counts.refused(ReasonSubscriptions)
		c.mu.Unlock()
		c.observeRefused(ReasonSubscriptions, 0)
		return nil, &RefusedError{Reason: ReasonSubscriptions, RetryAfter: subscriptionRetryAfter}
	}
	c.subscriptions[key]++
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.subscriptions[key]--; c.subscriptions[key] <= 0 {
				delete(c.subscriptions, key)
			}
		})
	}, nil
}

func (c *Controller) observeAdmitted(wait time.Duration) {
	if c.observer != nil {
		c.observer.Admitted(wait)
	}
}

func (c *Controller) observeRefused(reason Reason, waited time.Duration) {
	if c.observer != nil {
		c.observer.Refused(reason, waited)
	}
}
