package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/deliver"
	"github.com/fleetrelay/fleetrelay/internal/throttle"
)

// DefaultFailureLogInterval is the default of Options.FailureLogInterval.
const DefaultFailureLogInterval = 10 * time.Second

// maxFailing bounds the destinations a failLog follows at once (a route with per-device URLs
// may have many failing); streaks idle for staleStreak are forgotten first.
const (
	maxFailing  = 1024
	staleStreak = time.Hour
)

// failLog makes one route's failed delivery attempts visible in the log:
//
//   - each failed attempt is a warning with the route, the destination, the status and the
//     error, at most one per interval for the route: the others are held back and counted in
//     the next line's "suppressed";
//   - the first success at a destination after failures there of which a warning was logged is
//     logged at info, with how many attempts failed in a row and for how long.
//
// A destination is shown without user information, query or fragment (SAS tokens and API keys
// live there), and URLs inside error texts likewise; header values are never logged. Attempts
// that shutdown ended are not failures. Safe for concurrent use: a route's deliveries report
// from their own goroutines.
type failLog struct {
	log  *slog.Logger
	warn throttle.Throttle

	failing atomic.Int32 // len(streaks): successes skip the lock while nothing fails
	mu      sync.Mutex
	streaks map[string]*failStreak // by destination (the URL as resolved, before redaction)

	// template, when set, is what the log shows of every destination: the route's url as
	// configured (redacted), because its path names a custom field.
	template string
}

// failStreak is a run of failed attempts at one destination.
type failStreak struct {
	attempts    int
	first, last time.Time
	warned      bool // a warning reported one of its attempts
}

func newFailLog(log *slog.Logger, route, template string, interval time.Duration) *failLog {
	if interval <= 0 {
		interval = DefaultFailureLogInterval
	}
	fl := &failLog{log: log.With("route", route), warn: throttle.Throttle{Period: interval},
		streaks: make(map[string]*failStreak)}
	if u, err := url.Parse(template); err == nil && strings.Contains(strings.ToUpper(u.Path), "[CUSTOM") {
		fl.template = redactURL(template)
	}
	return fl
}

// shown is what the log shows of destination dest.
func (fl *failLog) shown(dest string) string {
	if fl.template != "" {
		return fl.template
	}
	return redactURL(dest)
}

// attempt records the outcome of one attempt of a batch of n messages to dest (the URL before
// signing) under policy p; attempt is 0-based.
func (fl *failLog) attempt(dest string, attempt, n int, p *deliver.Policy, res deliver.Result) {
	if res.Err == nil && p.Succeeded(res.Status) {
		if fl.failing.Load() > 0 {
			fl.recovered(dest)
		}
		return
	}
	if errors.Is(res.Err, context.Canceled) || errors.Is(res.Err, deliver.ErrClosed) {
		return // shutdown, not the endpoint
	}
	now := time.Now()
	held, ok := fl.warn.Allow()
	fl.mu.Lock()
	s := fl.streaks[dest]
	if s == nil {
		if len(fl.streaks) >= maxFailing {
			fl.sweep(now)
		}
		if len(fl.streaks) < maxFailing {
			s = &failStreak{first: now}
			fl.streaks[dest] = s
			fl.failing.Store(int32(len(fl.streaks)))
		}
	}
	if s != nil {
		s.attempts++
		s.last = now
		s.warned = s.warned || ok
	}
	fl.mu.Unlock()
	if !ok {
		return
	}
	var errText string
	if res.Err != nil {
		errText = res.Err.Error()
		if fl.template != "" {
			errText = urlInText.ReplaceAllLiteralString(errText, fl.template)
		} else {
			errText = redactURLs(errText)
		}
	} else {
		errText = fmt.Sprintf("HTTP %d %s is not a success status", res.Status, http.StatusText(res.Status))
	}
	fl.log.Warn("delivery attempt failed", "destination", fl.shown(dest), "status", res.Status, "err", errText,
		"attempt", attempt+1, "messages", n, "suppressed", held)
}

// recovered ends dest's streak, logging it if a warning reported it.
func (fl *failLog) recovered(dest string) {
	fl.mu.Lock()
	s := fl.streaks[dest]
	if s != nil {
		delete(fl.streaks, dest)
		fl.failing.Store(int32(len(fl.streaks)))
	}
	fl.mu.Unlock()
	if s != nil && s.warned {
		fl.log.Info("delivery recovered", "destination", fl.shown(dest), "failed_attempts", s.attempts,
			"failing_for", time.Since(s.first).Round(time.Millisecond))
	}
}

// sweep forgets streaks with no failure for staleStreak (a destination no batch goes to any
// more). Called with mu held.
func (fl *failLog) sweep(now time.Time) {
	for k, s := range fl.streaks {
		if now.Sub(s.last) > staleStreak {
			delete(fl.streaks, k)
		}
	}
	fl.failing.Store(int32(len(fl.streaks)))
}

// redactURL returns raw without user information, query and fragment: what a log may show of a
// destination.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	u.RawQuery, u.ForceQuery = "", false
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}

var urlInText = regexp.MustCompile(`(?i)\bhttps?://[^\s"'<>]+`)

// redactURLs redacts every http(s) URL in an error text (net/http's errors quote the URL).
func redactURLs(s string) string {
	if !urlInText.MatchString(s) {
		return s
	}
	return urlInText.ReplaceAllStringFunc(s, redactURL)
}
