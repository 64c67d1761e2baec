package throttle_test

import (
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/throttle"
)

// clock is a clock the test advances by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newThrottle(period time.Duration) (*throttle.Throttle, *clock) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return &throttle.Throttle{Period: period, Now: c.now}, c
}

func TestAllowOncePerPeriod(t *testing.T) {
	th, clk := newThrottle(time.Minute)
	allow := func(at string, wantHeld int64, wantOK bool) {
		t.Helper()
		if held, ok := th.Allow(); held != wantHeld || ok != wantOK {
			t.Errorf("Allow at %s = %d, %v; want %d, %v", at, held, ok, wantHeld, wantOK)
		}
	}
	allow("0s", 0, true)
	for range 5 {
		allow("0s", 0, false)
	}
	clk.advance(time.Minute - time.Nanosecond)
	allow("1m-1ns", 0, false)
	clk.advance(time.Nanosecond)
	allow("1m", 6, true) // the six held back since the last report
	allow("1m", 0, false)
	clk.advance(time.Hour)
	allow("1h1m", 1, true)
	clk.advance(time.Minute)
	allow("1h2m", 0, true) // nothing held back in between
}

// Without Now it runs on the wall clock: the first event gets through, the next within a long
// period does not.
func TestAllowWallClock(t *testing.T) {
	th := throttle.Throttle{Period: time.Hour}
	if held, ok := th.Allow(); !ok || held != 0 {
		t.Fatalf("first Allow = %d, %v; want 0, true", held, ok)
	}
	if _, ok := th.Allow(); ok {
		t.Fatal("second Allow within an hour let the event through")
	}
}

// Concurrent events within one period: exactly one gets through, and the next report counts all
// the others.
func TestAllowConcurrent(t *testing.T) {
	var mu sync.Mutex
	c := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	th := &throttle.Throttle{Period: time.Second, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return c }}
	const n = 64
	var wg sync.WaitGroup
	var passed sync.Map
	for i := range n {
		wg.Go(func() {
			if _, ok := th.Allow(); ok {
				passed.Store(i, true)
			}
		})
	}
	wg.Wait()
	count := 0
	passed.Range(func(any, any) bool { count++; return true })
	if count != 1 {
		t.Fatalf("%d of %d concurrent events got through, want 1", count, n)
	}
	mu.Lock()
	c = c.Add(time.Second)
	mu.Unlock()
	if held, ok := th.Allow(); !ok || held != n-1 {
		t.Errorf("Allow a period later = %d, %v; want %d, true", held, ok, n-1)
	}
}
