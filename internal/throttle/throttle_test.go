package throttle_test

import (
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/throttle"
)

func TestAllowOncePerPeriod(t *testing.T) {
	th := throttle.Throttle{Period: time.Hour}
	if held, ok := th.Allow(); !ok || held != 0 {
		t.Fatalf("first Allow = %d, %v; want 0, true", held, ok)
	}
	for i := 0; i < 5; i++ {
		if _, ok := th.Allow(); ok {
			t.Fatalf("Allow %d within the period let the event through", i+2)
		}
	}
	short := throttle.Throttle{Period: time.Nanosecond}
	short.Allow()
	time.Sleep(time.Millisecond)
	if held, ok := short.Allow(); !ok || held != 0 {
		t.Errorf("Allow after the period = %d, %v; want 0, true", held, ok)
	}
}

func TestAllowCountsHeldBack(t *testing.T) {
	th := throttle.Throttle{Period: 20 * time.Millisecond}
	th.Allow()
	th.Allow()
	th.Allow()
	time.Sleep(30 * time.Millisecond)
	if held, ok := th.Allow(); !ok || held != 2 {
		t.Errorf("Allow after two held back = %d, %v; want 2, true", held, ok)
	}
}
