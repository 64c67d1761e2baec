// Package throttle owns rate-limited reporting of repeated events: one per period gets through,
// the rest are counted, so an error that repeats per message is logged, not once per message.
package throttle

import (
	"sync/atomic"
	"time"
)

// Throttle lets one event through per Period and counts those it held back. The zero value with
// Period set is ready; safe for concurrent use. Now, if set, is its clock (tests advance a clock
// of their own instead of sleeping); set it before the first Allow.
type Throttle struct {
	Period time.Duration
	Now    func() time.Time // nil: time.Now
	next   atomic.Int64     // unix nanos before which events are held back
	held   atomic.Int64
}

// Allow reports whether the event may be reported and, if so, how many were held back before it.
func (t *Throttle) Allow() (held int64, ok bool) {
	now := t.now().UnixNano()
	n := t.next.Load()
	if now < n || !t.next.CompareAndSwap(n, now+t.Period.Nanoseconds()) {
		t.held.Add(1)
		return 0, false
	}
	return t.held.Swap(0), true
}

func (t *Throttle) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}
