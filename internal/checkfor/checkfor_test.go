package checkfor_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
)

// recorder is a testing.TB whose Fatalf records the failure and ends the goroutine, as the
// real one does.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls checkfor.Check with r on a goroutine of its own (Fatalf ends it) and waits.
func run(r *recorder, timeout time.Duration, fn func() error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		checkfor.Check(r, timeout, time.Millisecond, fn)
	}()
	<-done
}

func TestCheckReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	r := &recorder{TB: t}
	run(r, time.Minute, func() error {
		if calls++; calls < 5 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if r.failed != "" || calls != 5 {
		t.Errorf("Check failed %q after %d calls, want success after 5", r.failed, calls)
	}
}

func TestCheckFailsWithTheLastError(t *testing.T) {
	calls := 0
	r := &recorder{TB: t}
	run(r, 10*time.Millisecond, func() error {
		calls++
		return errors.New("still not there")
	})
	if !strings.Contains(r.failed, "still not there") || !strings.Contains(r.failed, "10ms") || calls < 2 {
		t.Errorf("Check failed with %q after %d calls, want the last error and the timeout, and a retry", r.failed, calls)
	}
}
