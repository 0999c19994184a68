// Package admission decides, before an operation costs anything, whether it
// runs now, waits its turn, or is refused at once; so that one client
// cannot take the service from everyone else, and a request that cannot
// be served in time is told so immediately instead of timing out late.
//
// Every operation belongs to a principal: the user of a valid token, else
// the client's address (the caller decides; this package only sees keys).
// The model:
//
//   - A principal runs at most PerPrincipal operations at once; beyond
//     that its operations wait in a queue of its own, at most
//     QueuePerPrincipal long.
//   - Behind the per-principal limits stands a global one, MaxConcurrent.
//     When a slot frees, it goes to the waiting principal with the fewest
//     operations running, round-robin among equals, one operation at a
//     time: a quiet principal's request is next, or waits for at most one
//     turn of every other waiting principal, never behind hundreds of a
//     noisy one's.
//   - An arriving operation that would have to wait is refused at once
//     when its predicted wait exceeds its budget, or its principal's queue is
//     full. The prediction counts the operations admitted before it (its
//     principal's ahead of it, and at most as many of every other waiting
//     principal's, as round-robin takes them, never more than are waiting)
//     times the recent service time (the average time the last 64
//     admitted operations held their slot), over the slots they
//     share: PerPrincipal for its own, MaxConcurrent for everyone's,
//     whichever bound is longer. A refusal names whose share was full: the
//     principal's own (ErrPrincipalBusy, HTTP 429 RATE_LIMITED) or the
//     whole server's (ErrServerBusy, 503 OVERLOADED), with a Retry-After
//     computed from the same prediction.
//   - A principal refused for its own share that comes back before the
//     Retry-After it was given, and still has operations running or
//     waiting, is refused again with Hold set: the caller holds the answer
//     that long (a timer, no CPU), so a client that retries a refusal at
//     once cannot make the server spend its cores on refusals. A
//     server-wide refusal is never held: it goes to many principals each
//     sending a little, and holding them all would hold a connection per
//     arrival.
//   - An operation that waited its budget without being admitted is refused
//     then (a timer, not a poll). The budget is MaxWait less the slowest of
//     the last 64 service times and a twentieth of MaxWait, at least half
//     of MaxWait: an operation
//     admitted at the end of its wait still answers within MaxWait of its
//     arrival, which is what its client sees.
//   - A principal has at most SubscriptionsPerPrincipal subscriptions open
//     at once. A subscription takes an operation slot only while it starts;
//     its events are not admitted (they are the realtime hub's, buffered
//     per subscriber).
//
// State is per process: N replicas admit N times as much.
// A Controller is safe for concurrent use.
package admission
