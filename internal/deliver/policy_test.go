package deliver_test

import (
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/deliver"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2015, 10, 21, 7, 28, 0, 0, time.UTC)
	f := func(v string, want time.Duration, wantOK bool) {
		t.Helper()
		got, ok := deliver.ParseRetryAfter(v, now)
		if got != want || ok != wantOK {
			t.Errorf("ParseRetryAfter(%q) = %v, %v, want %v, %v", v, got, ok, want, wantOK)
		}
	}
	f("0", 0, true)
	f("1", time.Second, true)
	f(" 120 ", 2*time.Minute, true)
	f("99999999999999999999999", 365*24*time.Hour, true)
	f("Wed, 21 Oct 2015 07:28:30 GMT", 30*time.Second, true)  // IMF-fixdate
	f("Wednesday, 21-Oct-15 07:29:00 GMT", time.Minute, true) // RFC 850
	f("Wed Oct 21 07:28:05 2015", 5*time.Second, true)        // ANSI C asctime
	f("Wed, 21 Oct 2015 07:00:00 GMT", 0, true)               // in the past
	f("", 0, false)
	f("-1", 0, false)
	f("1.5", 0, false)
	f("soon", 0, false)
}

func TestBackoff(t *testing.T) {
	f := func(p *deliver.Policy, attempt int, ceil time.Duration) {
		t.Helper()
		var top time.Duration
		for i := 0; i < 2000; i++ {
			d := p.Backoff(attempt)
			if d < 0 || d > ceil {
				t.Fatalf("Backoff(%d) = %v, want within [0, %v]", attempt, d, ceil)
			}
			top = max(top, d)
		}
		if top < ceil/2 { // full jitter spreads over the whole range
			t.Errorf("Backoff(%d): largest of 2000 draws %v, want above %v", attempt, top, ceil/2)
		}
	}
	f(nil, 0, 200*time.Millisecond)
	f(nil, 1, 400*time.Millisecond)
	f(nil, 7, 25600*time.Millisecond)
	f(nil, 8, 30*time.Second)
	f(nil, 1000, 30*time.Second)
	f(&deliver.Policy{}, -3, 200*time.Millisecond)
	p := &deliver.Policy{InitialBackoff: time.Second, MaxBackoff: time.Hour}
	f(p, 0, time.Second)
	f(p, 5, 32*time.Second)
	f(p, 12, time.Hour)
	f(p, 62, time.Hour)
	f(p, 63, time.Hour)
	f(&deliver.Policy{InitialBackoff: time.Minute, MaxBackoff: time.Second}, 3, time.Minute)

	var wg sync.WaitGroup // concurrent use (run with -race)
	for range 4 {
		wg.Go(func() {
			for a := range 100 {
				_ = p.Backoff(a)
			}
		})
	}
	wg.Wait()
}

func TestSucceeded(t *testing.T) {
	var p *deliver.Policy
	for status, want := range map[int]bool{199: false, 200: true, 204: true, 299: true, 302: false, 400: false, 503: false} {
		if got := p.Succeeded(status); got != want {
			t.Errorf("default Succeeded(%d) = %v, want %v", status, got, want)
		}
	}
}
