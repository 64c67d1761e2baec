package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/deliver"
	"github.com/fleetrelay/fleetrelay/internal/throttle"
)

func TestRedactURL(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
	f("https://acme.blob.core.windows.net/fleet/2026/a.json?sv=2022-11-02&sig=abc%2B", "https://acme.blob.core.windows.net/fleet/2026/a.json")
	f("https://user:pa%40ss@example.com:8443/in/SN1?key=k#frag", "https://example.com:8443/in/SN1")
	f("http://user@example.com/in?", "http://example.com/in")
	f("http://example.com/a%2Fb/SN%201", "http://example.com/a%2Fb/SN%201")
	f("http://exa mple.com/\x00", "(unparsable URL)")

	g := func(in, want string) {
		t.Helper()
		if got := redactURLs(in); got != want {
			t.Errorf("redactURLs(%q) = %q, want %q", in, got, want)
		}
	}
	g(`attempt not sent: oauth2: Post "https://id:secret@login.example.com/token?client_secret=s": dial tcp: connection refused`,
		`attempt not sent: oauth2: Post "https://login.example.com/token": dial tcp: connection refused`)
	g("dial tcp 10.0.0.1:443: i/o timeout", "dial tcp 10.0.0.1:443: i/o timeout")
	g("two: HTTP://a.example/x?k=1 and https://b.example/?k=2.", "two: http://a.example/x and https://b.example/")
}

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) lines(msg string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, `msg="`+msg+`"`) {
			out = append(out, line)
		}
	}
	return out
}

// Destinations recover on their own; only streaks that a warning reported are logged when they
// end; shutdown is not a failure; transport errors are logged with status 0 and their URLs
// redacted.
func TestFailLogStreaks(t *testing.T) {
	buf := &logBuf{}
	fl := newFailLog(slog.New(slog.NewTextHandler(buf, nil)), "r", "https://example.com/in", time.Hour)
	const a, b = "https://a.example/in?sig=S1", "https://b.example/in?sig=S2"
	ok := deliver.Result{Status: 204}
	down := deliver.Result{Status: 503}
	refused := deliver.Result{Err: fmt.Errorf("%w: oauth2: Post %q: connection refused", deliver.ErrNotSent, "https://login.example/token?secret=S3")}

	fl.attempt(a, 0, 10, nil, down)    // logged: the first in the interval
	fl.attempt(b, 0, 10, nil, refused) // held back
	fl.attempt(a, 1, 10, nil, down)    // held back
	fl.attempt(b, 1, 10, nil, ok)      // b's streak was never reported: no line
	fl.attempt(a, 2, 10, nil, deliver.Result{Err: context.Canceled})
	fl.attempt(a, 2, 10, nil, deliver.Result{Err: fmt.Errorf("deliver: %w", deliver.ErrClosed)})
	if n := len(buf.lines("delivery recovered")); n != 0 {
		t.Fatalf("%d recovery lines before a reported streak ended, want 0:\n%s", n, buf.b.String())
	}
	fl.attempt(a, 2, 10, nil, ok)
	fl.attempt(a, 0, 10, nil, ok) // no streak any more
	warns, recs := buf.lines("delivery attempt failed"), buf.lines("delivery recovered")
	if len(warns) != 1 || !strings.Contains(warns[0], "destination=https://a.example/in status=503") ||
		!strings.Contains(warns[0], "attempt=1 messages=10 suppressed=0") {
		t.Fatalf("warnings = %q, want one for a's first attempt", warns)
	}
	if len(recs) != 1 || !strings.Contains(recs[0], "route=r destination=https://a.example/in failed_attempts=2 failing_for=") {
		t.Fatalf("recoveries = %q, want one for a after 2 failed attempts", recs)
	}
	if fl.failing.Load() != 0 {
		t.Errorf("%d destinations still failing, want 0", fl.failing.Load())
	}

	// A transport error (the interval made to pass).
	fl.warn = throttle.Throttle{Period: time.Nanosecond}
	fl.attempt(b, 0, 3, nil, refused)
	warns = buf.lines("delivery attempt failed")
	last := warns[len(warns)-1]
	if !strings.Contains(last, `status=0 err="attempt not sent: oauth2: Post \"https://login.example/token\": connection refused"`) ||
		!strings.Contains(last, "attempt=1 messages=3") {
		t.Errorf("transport error logged as %q, want status 0 and the error without its URL's query", last)
	}
	for _, s := range []string{"S1", "S2", "S3"} {
		if strings.Contains(buf.b.String(), "="+s) {
			t.Fatalf("the log shows a secret:\n%s", buf.b.String())
		}
	}
	if !errors.Is(refused.Err, deliver.ErrNotSent) {
		t.Fatal("test setup")
	}
}

// A route whose url path names a custom field ([CUSTOM1] may hold a device's key) logs its url
// as configured, never the resolved destination, in the destination and in error texts.
func TestFailLogCustomFieldPath(t *testing.T) {
	buf := &logBuf{}
	fl := newFailLog(slog.New(slog.NewTextHandler(buf, nil)), "r", "https://hub.example.com/devices/[SERIAL]/[custom1]?sig=[CUSTOM2]", time.Hour)
	p := &deliver.Policy{}
	dest := "https://hub.example.com/devices/SN1/s3cr3t-key?sig=other"
	fl.attempt(dest, 0, 1, p, deliver.Result{Err: fmt.Errorf(`Post %q: connection refused`, dest)})
	fl.attempt(dest, 1, 1, p, deliver.Result{Status: 200})
	all := strings.Join(append(buf.lines("delivery attempt failed"), buf.lines("delivery recovered")...), "\n")
	if strings.Contains(all, "s3cr3t") || strings.Contains(all, "other") {
		t.Errorf("a custom field reached the log:\n%s", all)
	}
	if n := strings.Count(all, "https://hub.example.com/devices/[SERIAL]/[custom1]"); n != 3 {
		t.Errorf("the configured url appears %d times, want 3 (destination twice, the error's URL once):\n%s", n, all)
	}
	other := newFailLog(slog.New(slog.DiscardHandler), "r", "https://in.example.com/[SERIAL]?k=[CUSTOM1]", time.Hour)
	if got := other.shown("https://in.example.com/SN1?k=key"); got != "https://in.example.com/SN1" {
		t.Errorf("a custom field in the query only: shown %q, want the destination without its query", got)
	}
}
