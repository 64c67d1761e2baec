package relay_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

// failingEndpoint answers 503 until it is switched on, then 204; it counts the 503s and when
// it gave the first and the last.
type failingEndpoint struct {
	*httptest.Server
	on        atomic.Bool
	delivered atomic.Int64 // requests answered 204
	mu        sync.Mutex
	failed    int
	first     time.Time
	last      time.Time
}

func newFailingEndpoint(t *testing.T) *failingEndpoint {
	e := &failingEndpoint{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.on.Load() {
			e.delivered.Add(1)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		e.mu.Lock()
		if e.failed == 0 {
			e.first = time.Now()
		}
		e.failed++
		e.last = time.Now()
		e.mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *failingEndpoint) failures() (n int, span time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failed, e.last.Sub(e.first)
}

var logAttr = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

// logLines returns the log's lines whose msg is msg, each as its attributes.
func logLines(log, msg string) []map[string]string {
	var out []map[string]string
	for _, line := range strings.Split(log, "\n") {
		attrs := map[string]string{}
		for _, m := range logAttr.FindAllStringSubmatch(line, -1) {
			v := m[2]
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			attrs[m[1]] = v
		}
		if attrs["msg"] == msg {
			out = append(out, attrs)
		}
	}
	return out
}

// Failed delivery attempts are logged at warn with route, destination, status and error, at
// most one line per log.failure_interval for the route with the count held back, and never
// with the URL's query or user information or a header's value; the first success after them
// is logged once, at info, with how many attempts failed.
func TestFailedDeliveriesAreLogged(t *testing.T) {
	e := newFailingEndpoint(t)
	const interval = 300 * time.Millisecond
	cfg := testConfig(t, nil)
	cfg.Log.FailureInterval = config.Duration(interval)
	rt := config.DefaultRoute()
	rt.Name = "flaky"
	// A SAS-style token in the query, credentials in the user information and a header.
	rt.URL = strings.Replace(e.URL, "http://", "http://fleet:PASSWORD-IN-URL@", 1) + "/ingest/[SERIAL]?sv=2022-11-02&sig=SAS-SECRET-SIG"
	rt.Headers = map[string]string{"X-Api-Key": "HEADER-SECRET"}
	rt.Batch.Linger = config.Duration(5 * time.Millisecond)
	rt.Retry = &config.Retry{InitialBackoff: config.Duration(5 * time.Millisecond), MaxBackoff: config.Duration(20 * time.Millisecond)}
	cfg.Routes = append(cfg.Routes, rt)
	r, logs := startLoggedRelay(t, cfg)

	sendAcked(t, r, "SN1", 5)
	// Fail for several intervals and many attempts.
	checkFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n, span := e.failures(); n < 60 || span < 3*interval {
			return fmt.Errorf("%d failed attempts over %v so far", n, span)
		}
		return nil
	})
	e.on.Store(true)
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if len(logLines(logs.String(), "delivery recovered")) == 0 {
			return fmt.Errorf("no recovery logged yet (%d requests delivered)", e.delivered.Load())
		}
		return nil
	})
	failed, span := e.failures()
	log := logs.String()

	for _, secret := range []string{"SAS-SECRET-SIG", "sv=2022", "PASSWORD-IN-URL", "fleet:", "HEADER-SECRET"} {
		if strings.Contains(log, secret) {
			t.Fatalf("the log shows %q:\n%s", secret, log)
		}
	}
	dest := e.URL + "/ingest/SN1"
	warns := logLines(log, "delivery attempt failed")
	if len(warns) == 0 {
		t.Fatalf("no failed attempt logged:\n%s", log)
	}
	reported := 0
	for i, w := range warns {
		want := map[string]string{"level": "WARN", "route": "flaky", "destination": dest, "status": "503",
			"err": "HTTP 503 Service Unavailable is not a success status"}
		for k, v := range want {
			if w[k] != v {
				t.Errorf("warning %d: %s=%q, want %q (line %v)", i, k, w[k], v, w)
			}
		}
		held, err := strconv.Atoi(w["suppressed"])
		if err != nil {
			t.Fatalf("warning %d: suppressed=%q, want a count", i, w["suppressed"])
		}
		if i == 0 && (held != 0 || w["attempt"] != "1") {
			t.Errorf("first warning: suppressed=%d attempt=%s, want 0 and 1", held, w["attempt"])
		}
		reported += 1 + held
	}
	// At most one line per interval (+1 for the first, +1 for the skew between the endpoint's
	// clock readings and the relay's), every held-back attempt counted in a later line.
	if limit := int(span/interval) + 2; len(warns) > limit {
		t.Errorf("%d warnings over %v of failures, want at most %d (one per %v)", len(warns), span, limit, interval)
	}
	if reported > failed || reported <= len(warns) || len(warns)*3 > failed {
		t.Errorf("%d warnings reporting %d attempts (with the suppressed ones) for %d failed attempts; want far fewer lines, suppressed counted",
			len(warns), reported, failed)
	}
	recs := logLines(log, "delivery recovered")
	if len(recs) != 1 {
		t.Fatalf("%d recovery lines, want 1:\n%s", len(recs), log)
	}
	rec := recs[0]
	if rec["level"] != "INFO" || rec["route"] != "flaky" || rec["destination"] != dest || rec["failed_attempts"] != strconv.Itoa(failed) {
		t.Errorf("recovery line %v, want INFO, route flaky, destination %s, failed_attempts %d", rec, dest, failed)
	}
	// The relay times the streak from its own readings of the results, the endpoint from its
	// requests: compare loosely.
	if d, err := time.ParseDuration(rec["failing_for"]); err != nil || d < span/2 {
		t.Errorf("recovery failing_for=%q, want about the %v between the first and last failure", rec["failing_for"], span)
	}
	t.Logf("%d failed attempts over %v: %d warning lines, 1 recovery line", failed, span.Round(time.Millisecond), len(warns))
}
