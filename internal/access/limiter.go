package access

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Limiter limits failed authentications per client address: each address may fail Burst times
// at once, then once every Every. Only failures are limited: a client over its limit that
// presents a valid key is served (its requests never reach the limiter), so a shared address
// (NAT) with one noisy client does not lock the others out; its further failures are refused
// early (429 with Retry-After) instead of being answered 401.
//
// The device listeners use it the other way (Limited): a source over its limit is refused
// without its credential being checked, so it learns nothing from further guesses.
//
// It is safe for concurrent use. It keeps one small entry per address that failed recently and
// forgets those whose budget has refilled.
type Limiter struct {
	every time.Duration
	burst int

	mu      sync.Mutex
	clients map[string]*rate.Limiter
	n       atomic.Int64 // len(clients), read without the lock by Active
	sweep   time.Time    // next time full entries are dropped
}

// NewLimiter returns a limiter allowing burst failures, then one every every.
func NewLimiter(every time.Duration, burst int) *Limiter {
	return &Limiter{every: every, burst: burst, clients: map[string]*rate.Limiter{}}
}

// Fail records a failed authentication of addr at now. It returns 0 while addr is within its
// budget, or how long until it may fail again when it is over: the failure is then refused and
// not charged.
func (l *Limiter) Fail(addr string, now time.Time) (retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	c, ok := l.clients[addr]
	if !ok {
		c = rate.NewLimiter(rate.Every(l.every), l.burst)
		l.clients[addr] = c
	}
	l.n.Store(int64(len(l.clients)))
	r := c.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// sweepLocked drops the entries whose budget has refilled, at most once per refill time; l.mu
// is held.
func (l *Limiter) sweepLocked(now time.Time) {
	if now.After(l.sweep) {
		for a, c := range l.clients {
			if c.TokensAt(now) >= float64(l.burst) {
				delete(l.clients, a)
			}
		}
		l.sweep = now.Add(time.Duration(l.burst) * l.every)
		l.n.Store(int64(len(l.clients)))
	}
}

// Limited reports whether addr is over its budget at now: its next failure would be refused.
// It charges nothing.
func (l *Limiter) Limited(addr string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	c, ok := l.clients[addr]
	return ok && c.TokensAt(now) < 1
}

// Active reports whether the limiter remembers any address: while it does not, no address is
// limited. It takes no lock.
func (l *Limiter) Active() bool { return l.n.Load() > 0 }

// Len is the number of addresses the limiter remembers.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}
