// Package checkfor owns the one polling helper of the tests: wait for a condition by asking it
// again and again, never by sleeping a fixed time and hoping. It imports nothing of the module,
// so that the tests of any package (store, auth, api included) can use it without an import
// cycle; the heavier helpers that start a relay live in package relaytest.
package checkfor

import (
	"testing"
	"time"
)

// Check calls fn every interval until it returns nil, and fails t with fn's last error once
// timeout has passed. The timeout is a bound against hanging, not a speed check: make it generous,
// the machine's speed varies. It must be called from the test's goroutine (it calls t.Fatalf).
func Check(t testing.TB, timeout, interval time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}
