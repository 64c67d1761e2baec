package deliver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Policy decides which statuses are delivered and how long to wait between
// attempts. The zero value (and a nil *Policy) uses the defaults.
//
// A Policy is read-only after construction and safe for concurrent use.
type Policy struct {
	InitialBackoff time.Duration // default 200ms
	MaxBackoff     time.Duration // default 30s
	// Success reports whether a status means delivered; nil means 2xx.
	Success func(status int) bool
	// MaxAttempts stops Deliver with ErrGaveUp after this many failed
	// attempts; 0 retries until ctx is done.
	MaxAttempts int
}

const (
	defaultInitialBackoff = 200 * time.Millisecond
	defaultMaxBackoff     = 30 * time.Second
)

func (p *Policy) limits() (initial, maxB time.Duration) {
	initial, maxB = defaultInitialBackoff, defaultMaxBackoff
	if p != nil && p.InitialBackoff > 0 {
		initial = p.InitialBackoff
	}
	if p != nil && p.MaxBackoff > 0 {
		maxB = p.MaxBackoff
	}
	return initial, max(initial, maxB)
}

// Backoff returns the wait after the given failed attempt (0-based):
// exponential with full jitter, uniform in [0, min(MaxBackoff,
// InitialBackoff·2^attempt)].
func (p *Policy) Backoff(attempt int) time.Duration {
	initial, maxB := p.limits()
	ceil := maxB
	if attempt < 0 {
		attempt = 0
	}
	if attempt < 62 {
		if d := initial << attempt; d > 0 && d>>attempt == initial && d < maxB {
			ceil = d
		}
	}
	return time.Duration(rand.Int64N(int64(ceil) + 1))
}

// Succeeded reports whether status counts as delivered.
func (p *Policy) Succeeded(status int) bool {
	if p != nil && p.Success != nil {
		return p.Success(status)
	}
	return status >= 200 && status < 300
}

// Deliver sends one batch until it succeeds, ctx is done, or
// p.MaxAttempts attempts failed.
//
// Before every attempt (0-based) build, if not nil, (re)fills req; the body
// may carry the attempt number, signatures may be redone. A build error ends
// Deliver with that error, except one wrapping ErrNotSent, which fails the
// attempt without sending it (e.g. no token could be had): it is retried like a
// transport error. onResult, if not nil, observes every attempt.
// After a failed attempt Deliver waits max(RetryAfter, p.Backoff(attempt)).
//
// It returns the number of attempts made and nil on success, ctx.Err() or
// ErrGaveUp wrapped otherwise.
func Deliver(ctx context.Context, c *Client, p *Policy, req *Request,
	build func(attempt int, req *Request) error, onResult func(attempt int, res Result),
) (attempts int, err error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return attempts, fmt.Errorf("deliver after %d attempts: %w", attempts, err)
		}
		var res Result
		if build != nil {
			if err := build(attempt, req); errors.Is(err, ErrNotSent) {
				res.Err = err // a failed attempt: retried after the backoff
			} else if err != nil {
				return attempts, fmt.Errorf("build attempt %d: %w", attempt, err)
			}
		}
		if res.Err == nil {
			if req.Slots != nil {
				select {
				case req.Slots <- struct{}{}:
				case <-ctx.Done():
					return attempts, fmt.Errorf("deliver after %d attempts: %w", attempts, ctx.Err())
				}
			}
			res = c.Do(ctx, req)
			if req.Slots != nil {
				<-req.Slots
			}
		}
		attempts++
		if onResult != nil {
			onResult(attempt, res)
		}
		if res.Err == nil && p.Succeeded(res.Status) {
			return attempts, nil
		}
		if err := ctx.Err(); err != nil {
			return attempts, fmt.Errorf("deliver after %d attempts: %w", attempts, err)
		}
		if p != nil && p.MaxAttempts > 0 && attempts >= p.MaxAttempts {
			last := res.Err
			if last == nil {
				last = fmt.Errorf("status %d", res.Status)
			}
			return attempts, fmt.Errorf("%w after %d attempts, last: %w", ErrGaveUp, attempts, last)
		}
		wait := max(res.RetryAfter, p.Backoff(attempt))
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return attempts, fmt.Errorf("deliver after %d attempts: %w", attempts, ctx.Err())
		case <-timer.C:
		}
	}
}
