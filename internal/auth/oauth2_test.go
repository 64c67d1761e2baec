package auth_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/auth"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
)

// tokenServer is an OAuth2 token endpoint (RFC 6749 §4.4) that issues tokens tok-1, tok-2, …
// to one client, authenticated by either method of §2.3.1, decoded here independently of
// x/oauth2.
type tokenServer struct {
	*httptest.Server
	id, secret string
	expiresIn  int // seconds; 0 leaves expires_in out

	requests atomic.Int64 // token requests received
	issued   atomic.Int64 // tokens issued
	down     atomic.Bool  // answer 503 temporarily_unavailable

	mu      sync.Mutex
	gate    chan struct{} // when set, every request waits for a receive from it (or its end)
	styles  []string      // "header" or "body" per request
	forms   []url.Values  // request bodies
	headers []string      // raw Authorization headers
	expiry  map[string]time.Time
	now     func() time.Time // the clock of expiry
}

func newTokenServer(t testing.TB, id, secret string, expiresIn int) *tokenServer {
	t.Helper()
	ts := &tokenServer{id: id, secret: secret, expiresIn: expiresIn, expiry: make(map[string]time.Time), now: time.Now}
	ts.Server = httptest.NewTLSServer(http.HandlerFunc(ts.serve))
	t.Cleanup(ts.Close)
	return ts
}

// client returns options for ts's client with the given auth style.
func (ts *tokenServer) options(style string) auth.OAuth2Options {
	return auth.OAuth2Options{
		TokenURL:     ts.URL + "/oauth/token",
		ClientID:     ts.id,
		ClientSecret: ts.secret,
		AuthStyle:    style,
		HTTPClient:   ts.Client(),
	}
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// decodeBasic decodes a client_secret_basic Authorization header: base64 of
// urlencode(id) ":" urlencode(secret) (RFC 6749 §2.3.1, Appendix B).
func decodeBasic(h string) (id, secret string, err error) {
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", "", fmt.Errorf("not Basic: %q", h)
	}
	raw, err := base64.StdEncoding.DecodeString(cred)
	if err != nil {
		return "", "", err
	}
	encID, encSecret, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", "", errors.New("no colon")
	}
	if id, err = url.QueryUnescape(encID); err != nil {
		return "", "", fmt.Errorf("client id: %w", err)
	}
	if secret, err = url.QueryUnescape(encSecret); err != nil {
		return "", "", fmt.Errorf("client secret: %w", err)
	}
	return id, secret, nil
}

func (ts *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	ts.requests.Add(1)
	ts.mu.Lock()
	gate := ts.gate
	ts.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	if ts.down.Load() {
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "down for maintenance")
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/oauth/token" {
		oauthError(w, http.StatusNotFound, "not_found", r.Method+" "+r.URL.Path)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "content type "+ct)
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	form := r.PostForm
	h := r.Header.Get("Authorization")
	var id, secret, style string
	switch {
	case h != "" && (form.Has("client_id") || form.Has("client_secret")):
		oauthError(w, http.StatusBadRequest, "invalid_request", "more than one authentication method (RFC 6749 §2.3)")
		return
	case h != "":
		var err error
		if id, secret, err = decodeBasic(h); err != nil {
			oauthError(w, http.StatusUnauthorized, "invalid_client", err.Error())
			return
		}
		style = "header"
	default:
		id, secret, style = form.Get("client_id"), form.Get("client_secret"), "body"
	}
	ts.mu.Lock()
	ts.styles = append(ts.styles, style)
	ts.forms = append(ts.forms, form)
	ts.headers = append(ts.headers, h)
	ts.mu.Unlock()
	if g := form.Get("grant_type"); g != "client_credentials" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", g)
		return
	}
	if id != ts.id || secret != ts.secret {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client "+strconv.Quote(id))
		return
	}
	tok := "tok-" + strconv.FormatInt(ts.issued.Add(1), 10)
	resp := map[string]any{"access_token": tok, "token_type": "bearer"}
	if ts.expiresIn != 0 {
		resp["expires_in"] = ts.expiresIn
		ts.mu.Lock()
		ts.expiry[tok] = ts.now().Add(time.Duration(ts.expiresIn) * time.Second)
		ts.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(resp)
}

// setGate makes the following requests wait for a receive from gate.
func (ts *tokenServer) setGate(gate chan struct{}) {
	ts.mu.Lock()
	ts.gate = gate
	ts.mu.Unlock()
}

// seen returns, per authenticated request so far, how the credentials came, the form and the
// Authorization header.
func (ts *tokenServer) seen() (styles []string, forms []url.Values, headers []string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append(styles, ts.styles...), append(forms, ts.forms...), append(headers, ts.headers...)
}

// fakeClock is a settable clock for the signer's expiry and grace decisions.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newSigner(t testing.TB, o auth.OAuth2Options) *auth.OAuth2 {
	t.Helper()
	s, err := auth.NewOAuth2(o)
	if err != nil {
		t.Fatalf("NewOAuth2: %v", err)
	}
	return s
}

// sign signs a fresh request and returns its Authorization header.
func sign(t testing.TB, ctx context.Context, s auth.Signer) string {
	t.Helper()
	r := &auth.Request{Method: "POST", URL: "https://route.example/in"}
	if err := s.Sign(ctx, r); err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return r.HeaderValue("Authorization")
}

func TestOAuth2PublishedVector(t *testing.T) {
	// RFC 6749 §2.3.1: id and secret are form-encoded before Basic's base64.
	const want = "Basic bXkrY2xpZW50OnAlNDBzcyUzQXclMkZyZCUyQiVDMyVBOQ=="
	ts := newTokenServer(t, "my client", "p@ss:w/rd+é", 3600)
	s := newSigner(t, ts.options(auth.OAuth2SecretInHeader))
	if got := sign(t, t.Context(), s); got != "Bearer tok-1" {
		t.Fatalf("Authorization = %q, want %q", got, "Bearer tok-1")
	}
	if _, _, headers := ts.seen(); len(headers) != 1 || headers[0] != want {
		t.Errorf("token request Authorization = %q, want [%q]", headers, want)
	}
}

func TestOAuth2AuthStyles(t *testing.T) {
	f := func(style, wantStyle string) {
		t.Helper()
		ts := newTokenServer(t, "relay:1 é", "s3cr3t/+=&%", 3600)
		o := ts.options(style)
		o.Scopes = []string{"telemetry.write", "devices:read"}
		o.EndpointParams = url.Values{"audience": {"https://api.example/"}}
		s := newSigner(t, o)
		if got := sign(t, t.Context(), s); got != "Bearer tok-1" {
			t.Fatalf("style %q: Authorization = %q, want %q", style, got, "Bearer tok-1")
		}
		styles, forms, headers := ts.seen()
		if len(styles) != 1 || styles[0] != wantStyle {
			t.Fatalf("style %q: server saw %v, want [%s]", style, styles, wantStyle)
		}
		form := forms[0]
		if got, want := form.Get("scope"), "telemetry.write devices:read"; got != want {
			t.Errorf("style %q: scope = %q, want %q", style, got, want)
		}
		if got, want := form.Get("audience"), "https://api.example/"; got != want {
			t.Errorf("style %q: audience = %q, want %q", style, got, want)
		}
		if wantStyle == "header" && (form.Has("client_secret") || form.Has("client_id")) {
			t.Errorf("style %q: body %v carries credentials", style, form)
		}
		if wantStyle == "body" && headers[0] != "" {
			t.Errorf("style %q: token request has Authorization %q", style, headers[0])
		}
	}
	f(auth.OAuth2SecretInHeader, "header")
	f(auth.OAuth2SecretInBody, "body")
	f("", "header")
}

func TestOAuth2Caching(t *testing.T) {
	ts := newTokenServer(t, "id", "secret", 3600)
	s := newSigner(t, ts.options(""))
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 100 {
				r := &auth.Request{}
				if err := s.Sign(t.Context(), r); err != nil {
					t.Error(err)
					return
				}
				if got := r.HeaderValue("Authorization"); got != "Bearer tok-1" {
					t.Errorf("Authorization = %q, want %q", got, "Bearer tok-1")
					return
				}
			}
		})
	}
	wg.Wait()
	if n := ts.requests.Load(); n != 1 {
		t.Errorf("3200 Signs made %d token requests, want 1", n)
	}
}

func TestOAuth2SignReplacesHeader(t *testing.T) {
	ts := newTokenServer(t, "id", "secret", 3600)
	s := newSigner(t, ts.options(""))
	r := &auth.Request{Header: [][2]string{{"authorization", "Bearer stale"}, {"X-Other", "1"}}}
	if err := s.Sign(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if len(r.Header) != 2 || r.Header[0][1] != "Bearer tok-1" {
		t.Errorf("Header = %q, want the Authorization header replaced", r.Header)
	}
}

func TestOAuth2ExpiryRefresh(t *testing.T) {
	// f: a token valid for expiresIn seconds is replaced after refreshAfter on the signer's clock.
	f := func(expiresIn int, refreshBefore, refreshAfter time.Duration) {
		t.Helper()
		ts := newTokenServer(t, "id", "secret", expiresIn)
		o := ts.options("")
		o.RefreshBefore = refreshBefore
		s := newSigner(t, o)
		clk := newFakeClock()
		auth.SetOAuth2Clock(s, clk.Now)
		if got := sign(t, t.Context(), s); got != "Bearer tok-1" {
			t.Fatalf("expires_in %d: first Sign: %q, want tok-1", expiresIn, got)
		}
		clk.Add(refreshAfter - time.Millisecond)
		if got := sign(t, t.Context(), s); got != "Bearer tok-1" {
			t.Fatalf("expires_in %d: Sign at %v: %q, want tok-1", expiresIn, refreshAfter-time.Millisecond, got)
		}
		clk.Add(time.Millisecond)
		if got := sign(t, t.Context(), s); got != "Bearer tok-2" {
			t.Fatalf("expires_in %d: Sign at %v: %q, want tok-2", expiresIn, refreshAfter, got)
		}
		if n := ts.requests.Load(); n != 2 {
			t.Errorf("expires_in %d: %d token requests, want 2", expiresIn, n)
		}
	}
	f(3600, 0, 3600*time.Second-auth.DefaultOAuth2RefreshBefore)
	f(3600, time.Minute, 3540*time.Second)
	f(2, 0, time.Second) // margin capped at half the lifetime
	f(60, 10*time.Second, 50*time.Second)
}

// TestOAuth2RefreshAhead: once a token is due for refresh, one Sign fetches its successor while
// the others keep using it until it expires; if the refresh fails, it is used until it expires.
func TestOAuth2RefreshAhead(t *testing.T) {
	ts := newTokenServer(t, "id", "secret", 3600)
	s := newSigner(t, ts.options(""))
	clk := newFakeClock()
	auth.SetOAuth2Clock(s, clk.Now)
	sign(t, t.Context(), s)
	clk.Add(3600*time.Second - auth.DefaultOAuth2RefreshBefore) // due, not expired

	gate := make(chan struct{})
	ts.setGate(gate)
	refreshed := make(chan string, 1)
	go func() {
		r := &auth.Request{}
		if err := s.Sign(t.Context(), r); err != nil {
			t.Error(err)
		}
		refreshed <- r.HeaderValue("Authorization")
	}()
	checkfor.Check(t, 5*time.Second, time.Millisecond, func() error {
		if ts.requests.Load() < 2 {
			return errors.New("no refresh request")
		}
		return nil
	})
	for range 10 {
		if got := sign(t, t.Context(), s); got != "Bearer tok-1" {
			t.Fatalf("Sign during the refresh: %q, want tok-1 without waiting", got)
		}
	}
	close(gate)
	if got := <-refreshed; got != "Bearer tok-2" {
		t.Fatalf("refreshing Sign: %q, want tok-2", got)
	}
	ts.setGate(nil)

	// The endpoint fails while tok-2 is due: tok-2 is used until it expires, each Sign trying
	// to refresh it; then Sign fails.
	clk.Add(3600*time.Second - auth.DefaultOAuth2RefreshBefore)
	ts.down.Store(true)
	before := ts.requests.Load()
	if got := sign(t, t.Context(), s); got != "Bearer tok-2" {
		t.Fatalf("Sign with the endpoint down, token not expired: %q, want tok-2", got)
	}
	if got := sign(t, t.Context(), s); got != "Bearer tok-2" {
		t.Fatalf("Sign with the endpoint down, token not expired: %q, want tok-2", got)
	}
	if n := ts.requests.Load() - before; n != 2 {
		t.Errorf("%d token requests by 2 Signs with a due token and the endpoint down, want 2", n)
	}
	clk.Add(auth.DefaultOAuth2RefreshBefore)
	var te *auth.TokenError
	if err := s.Sign(t.Context(), &auth.Request{}); !errors.As(err, &te) || te.Status != 503 || te.Code != "temporarily_unavailable" {
		t.Fatalf("Sign with the endpoint down, token expired: %v, want a 503 TokenError", err)
	}
	ts.down.Store(false)
	if got := sign(t, t.Context(), s); got != "Bearer tok-3" {
		t.Fatalf("Sign with the endpoint back: %q, want tok-3", got)
	}
}

func TestOAuth2NoExpiry(t *testing.T) {
	ts := newTokenServer(t, "id", "secret", 0)
	s := newSigner(t, ts.options(""))
	clk := newFakeClock()
	auth.SetOAuth2Clock(s, clk.Now)
	sign(t, t.Context(), s)
	clk.Add(365 * 24 * time.Hour)
	if got := sign(t, t.Context(), s); got != "Bearer tok-1" {
		t.Errorf("token without expires_in, a year on: %q, want tok-1", got)
	}
}

// TestOAuth2ShortLivedTokens runs signer and endpoint on one clock, advanced in steps of 50ms,
// against tokens that live 2s: every Sign must carry a token the endpoint still accepts, and
// tokens are replaced as they age (at half their lifetime: the refresh margin is capped there).
func TestOAuth2ShortLivedTokens(t *testing.T) {
	ts := newTokenServer(t, "id", "secret", 2)
	clk := newFakeClock()
	ts.mu.Lock()
	ts.now = clk.Now
	ts.mu.Unlock()
	s := newSigner(t, ts.options(""))
	auth.SetOAuth2Clock(s, clk.Now)
	const step, steps = 50 * time.Millisecond, 100 // 5s on the clock
	for i := range steps {
		h := sign(t, t.Context(), s)
		tok := strings.TrimPrefix(h, "Bearer ")
		ts.mu.Lock()
		exp, ok := ts.expiry[tok]
		ts.mu.Unlock()
		if !ok {
			t.Fatalf("Sign used unknown token %q", h)
		}
		if now := clk.Now(); !now.Before(exp) {
			t.Fatalf("step %d: Sign used %s, expired %v ago", i, tok, now.Sub(exp))
		}
		clk.Add(step)
	}
	// A token every second (half its 2s lifetime) over 5s: tok-1 at 0s … tok-5 at 4s.
	if n := ts.issued.Load(); n != 5 {
		t.Errorf("%d tokens issued over 5s of 2s tokens, want 5", n)
	}
}

func TestOAuth2Unauthorized(t *testing.T) {
	ts := newTokenServer(t, "id", "secret", 3600)
	s := newSigner(t, ts.options(""))
	clk := newFakeClock()
	auth.SetOAuth2Clock(s, clk.Now)

	sign(t, t.Context(), s)
	clk.Add(auth.DefaultOAuth2UnauthorizedGrace)
	// A burst of 401s to attempts signed with tok-1, some reported after tok-2 arrived.
	for range 10 {
		s.Unauthorized(nil)
	}
	if got := sign(t, t.Context(), s); got != "Bearer tok-2" {
		t.Fatalf("Sign after Unauthorized: %q, want tok-2", got)
	}
	for range 10 {
		s.Unauthorized(nil)
	}
	if got := sign(t, t.Context(), s); got != "Bearer tok-2" {
		t.Fatalf("Sign after late 401s within the grace period: %q, want tok-2", got)
	}
	if n := ts.requests.Load(); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
	// tok-2 rejected once the grace period has passed: a new token.
	clk.Add(auth.DefaultOAuth2UnauthorizedGrace)
	auth.Chain{s}.Unauthorized(nil)
	if got := sign(t, t.Context(), s); got != "Bearer tok-3" {
		t.Fatalf("Sign after Chain.Unauthorized: %q, want tok-3", got)
	}
}

// With the rejected attempt, a 401 drops the token exactly when the attempt carried it, however
// fresh the token is: a revoked token is not sent again.
func TestOAuth2UnauthorizedAttempt(t *testing.T) {
	ts := newTokenServer(t, "id", "secret", 3600)
	s := newSigner(t, ts.options(""))
	first := &auth.Request{}
	if err := s.Sign(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	s.Unauthorized(first) // tok-1 revoked right after it was fetched
	second := &auth.Request{}
	if err := s.Sign(t.Context(), second); err != nil {
		t.Fatal(err)
	}
	if got := second.HeaderValue("Authorization"); got != "Bearer tok-2" {
		t.Fatalf("Sign after a 401 for the current token: %q, want tok-2", got)
	}
	for range 5 {
		s.Unauthorized(first) // late 401s for tok-1
	}
	if got := sign(t, t.Context(), s); got != "Bearer tok-2" {
		t.Fatalf("Sign after late 401s for the old token: %q, want tok-2 kept", got)
	}
	if n := ts.requests.Load(); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
}

func TestOAuth2UnauthorizedConcurrent(t *testing.T) {
	ts := newTokenServer(t, "id", "secret", 3600)
	s := newSigner(t, ts.options(""))
	clk := newFakeClock()
	auth.SetOAuth2Clock(s, clk.Now)
	sign(t, t.Context(), s)
	clk.Add(time.Minute)

	gate := make(chan struct{})
	ts.setGate(gate)
	s.Unauthorized(nil)
	const n = 64
	var started, wg sync.WaitGroup
	got := make([]string, n)
	started.Add(n)
	for i := range n {
		wg.Go(func() {
			started.Done()
			r := &auth.Request{}
			if err := s.Sign(t.Context(), r); err != nil {
				t.Error(err)
			}
			got[i] = r.HeaderValue("Authorization")
		})
	}
	started.Wait()
	checkfor.Check(t, 5*time.Second, time.Millisecond, func() error {
		if ts.requests.Load() < 2 {
			return errors.New("no token request after Unauthorized")
		}
		return nil
	})
	// Give the other Signs time to pile up behind the one in flight before it is answered;
	// without the guard they would reach the server meanwhile.
	time.Sleep(50 * time.Millisecond)
	close(gate)
	wg.Wait()
	for i, h := range got {
		if h != "Bearer tok-2" {
			t.Errorf("Sign %d: %q, want tok-2", i, h)
		}
	}
	if n := ts.requests.Load(); n != 2 {
		t.Errorf("%d token requests, want 2 (one before, one after Unauthorized)", n)
	}
}

func TestOAuth2Context(t *testing.T) {
	ts := newTokenServer(t, "id", "secret", 3600)
	gate := make(chan struct{})
	ts.setGate(gate)
	s := newSigner(t, ts.options(""))

	// A Sign whose ctx ends while it fetches returns at once with ctx's error.
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- s.Sign(ctx, &auth.Request{}) }()
	checkfor.Check(t, 5*time.Second, time.Millisecond, func() error {
		if ts.requests.Load() < 1 {
			return errors.New("no token request")
		}
		return nil
	})
	// Meanwhile a second Sign waits for that fetch …
	waiter := make(chan string, 1)
	go func() {
		r := &auth.Request{}
		if err := s.Sign(t.Context(), r); err != nil {
			t.Error(err)
		}
		waiter <- r.HeaderValue("Authorization")
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Sign with canceled ctx: %v, want context.Canceled", err)
	}
	// … and fetches itself once the first gave up.
	checkfor.Check(t, 5*time.Second, time.Millisecond, func() error {
		if ts.requests.Load() < 2 {
			return errors.New("waiter did not fetch")
		}
		return nil
	})
	close(gate)
	// (The abandoned request may still be answered, with tok-1, if the server has not yet
	// noticed that its client left.)
	if got := <-waiter; !strings.HasPrefix(got, "Bearer tok-") {
		t.Errorf("waiting Sign: %q, want a token", got)
	}

	// A deadline that passes during the token request ends it.
	ts2 := newTokenServer(t, "id", "secret", 3600)
	gate2 := make(chan struct{})
	ts2.setGate(gate2)
	defer close(gate2)
	s2 := newSigner(t, ts2.options(""))
	dctx, dcancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer dcancel()
	if err := s2.Sign(dctx, &auth.Request{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Sign past its deadline: %v, want context.DeadlineExceeded", err)
	}
	// TokenTimeout bounds a token request even when ctx has no deadline.
	o := ts2.options("")
	o.TokenTimeout = 50 * time.Millisecond
	s3 := newSigner(t, o)
	if err := s3.Sign(context.Background(), &auth.Request{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Sign past TokenTimeout: %v, want context.DeadlineExceeded", err)
	}
}

func TestOAuth2TokenErrors(t *testing.T) {
	const secret = "hunter2-Sup3r/s3cret"
	f := func(name string, h http.HandlerFunc, check func(*auth.TokenError) error) {
		t.Helper()
		srv := httptest.NewTLSServer(h)
		defer srv.Close()
		s := newSigner(t, auth.OAuth2Options{
			TokenURL:     srv.URL + "/token?api_key=q-secret",
			ClientID:     "id",
			ClientSecret: secret,
			AuthStyle:    auth.OAuth2SecretInBody,
			HTTPClient:   srv.Client(),
		})
		err := s.Sign(t.Context(), &auth.Request{})
		var te *auth.TokenError
		if !errors.As(err, &te) {
			t.Fatalf("%s: Sign = %v, want a *TokenError", name, err)
		}
		msg := err.Error()
		for _, leak := range []string{secret, url.QueryEscape(secret), "q-secret"} {
			if strings.Contains(msg, leak) {
				t.Errorf("%s: error %q contains %q", name, msg, leak)
			}
		}
		if !strings.Contains(msg, srv.URL+"/token") {
			t.Errorf("%s: error %q does not name the token endpoint", name, msg)
		}
		if err := check(te); err != nil {
			t.Errorf("%s: %v (error %q)", name, err, msg)
		}
	}
	f("invalid_client echoing the secret", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		oauthError(w, http.StatusUnauthorized, "invalid_client", "bad secret "+r.PostForm.Get("client_secret")+" for id")
	}, func(te *auth.TokenError) error {
		if te.Status != 401 || te.Code != "invalid_client" || te.Description != "bad secret REDACTED for id" {
			return fmt.Errorf("got status %d code %q description %q", te.Status, te.Code, te.Description)
		}
		return nil
	})
	f("500 with HTML", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "<html>oops %s</html>", r.PostForm.Get("client_secret"))
	}, func(te *auth.TokenError) error {
		if te.Status != 500 || te.Err == nil {
			return fmt.Errorf("got status %d, err %v", te.Status, te.Err)
		}
		return nil
	})
	f("200 without access_token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"token_type":"bearer"}`)
	}, func(te *auth.TokenError) error {
		if te.Err == nil {
			return errors.New("no Err")
		}
		return nil
	})
	f("token that cannot be a header", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"abc\r\nX-Injected: 1","token_type":"bearer"}`)
	}, func(te *auth.TokenError) error {
		if te.Err == nil || !strings.Contains(te.Err.Error(), "bearer token") {
			return fmt.Errorf("Err = %v", te.Err)
		}
		return nil
	})
	f("negative expires_in", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"abc","expires_in":-5}`)
	}, func(te *auth.TokenError) error {
		if te.Err == nil || !strings.Contains(te.Err.Error(), "expires_in") {
			return fmt.Errorf("Err = %v", te.Err)
		}
		return nil
	})
	var followed atomic.Bool
	elsewhere := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { followed.Store(true) }))
	defer elsewhere.Close()
	f("redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/steal?x=1", http.StatusTemporaryRedirect)
	}, func(te *auth.TokenError) error {
		if followed.Load() {
			return errors.New("redirect followed: credentials re-sent")
		}
		if te.Status != 307 || te.Err == nil || !strings.Contains(te.Err.Error(), "redirect") {
			return fmt.Errorf("status %d, Err %v", te.Status, te.Err)
		}
		return nil
	})

	// A transport error: nothing listens any more.
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	s := newSigner(t, auth.OAuth2Options{TokenURL: u + "/token?k=q-secret", ClientID: "id", ClientSecret: secret})
	err := s.Sign(t.Context(), &auth.Request{})
	var te *auth.TokenError
	if !errors.As(err, &te) || te.Status != 0 || te.Err == nil {
		t.Fatalf("Sign to a closed server = %v, want a *TokenError with Err", err)
	}
	if msg := err.Error(); strings.Contains(msg, secret) || strings.Contains(msg, "q-secret") {
		t.Errorf("error %q leaks a secret", msg)
	}
}

func TestNewOAuth2Errors(t *testing.T) {
	valid := auth.OAuth2Options{TokenURL: "https://auth.example/token", ClientID: "id", ClientSecret: "s"}
	if _, err := auth.NewOAuth2(valid); err != nil {
		t.Fatalf("NewOAuth2(valid) = %v", err)
	}
	f := func(edit func(*auth.OAuth2Options), want ...string) {
		t.Helper()
		o := valid
		edit(&o)
		_, err := auth.NewOAuth2(o)
		if err == nil {
			t.Fatalf("NewOAuth2(%v) = nil error, want %q", o, want)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("NewOAuth2(%v) = %q, want it to contain %q", o, err, w)
			}
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("NewOAuth2 error %q shows the secret", err)
		}
	}
	f(func(o *auth.OAuth2Options) { *o = auth.OAuth2Options{} },
		"oauth2.token_url: required", "oauth2.client_id: required", "oauth2.client_secret: required")
	f(func(o *auth.OAuth2Options) { o.TokenURL = "http://auth.example/token" }, "oauth2.token_url: must be an https URL")
	f(func(o *auth.OAuth2Options) { o.TokenURL = "https:///token" }, "oauth2.token_url: must be an https URL")
	f(func(o *auth.OAuth2Options) { o.TokenURL = "https://u:s3cret@auth.example/token" }, "oauth2.token_url: must not contain user info")
	f(func(o *auth.OAuth2Options) { o.ClientSecret = "s3cret\n" }, "oauth2.client_secret: must not contain control characters")
	f(func(o *auth.OAuth2Options) { o.Scopes = []string{"ok", "two words"} }, `oauth2.scopes[1]: "two words"`)
	f(func(o *auth.OAuth2Options) { o.AuthStyle = "basic" }, `oauth2.auth_style: "basic"`)
	f(func(o *auth.OAuth2Options) { o.EndpointParams = url.Values{"client_secret": {"x"}} }, "oauth2.endpoint_params.client_secret")
	f(func(o *auth.OAuth2Options) {
		o.Scopes = []string{"a"}
		o.EndpointParams = url.Values{"scope": {"b"}}
	}, "oauth2.endpoint_params.scope: conflicts with scopes")
	f(func(o *auth.OAuth2Options) { o.RefreshBefore = -time.Second }, "oauth2.refresh_before: must not be negative")

	for _, u := range []string{"http://127.0.0.1:8080/token", "http://localhost/token", "http://[::1]/token"} {
		o := valid
		o.TokenURL = u
		if _, err := auth.NewOAuth2(o); err != nil {
			t.Errorf("NewOAuth2(token_url %s) = %v, want loopback http accepted", u, err)
		}
	}
}

func TestOAuth2OptionsRedacted(t *testing.T) {
	o := auth.OAuth2Options{
		TokenURL: "https://auth.example/token?key=qsecret", ClientID: "id", ClientSecret: "s3cret",
		EndpointParams: url.Values{"audience": {"psecret"}},
	}
	s := newSigner(t, o)
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("route", "oauth2", o)
	for _, out := range []string{o.String(), fmt.Sprintf("%v %+v %#v", o, o, o), s.String(), fmt.Sprint(s), logged.String()} {
		for _, leak := range []string{"s3cret", "qsecret", "psecret"} {
			if strings.Contains(out, leak) {
				t.Errorf("%q shows %q", out, leak)
			}
		}
	}
}

// FuzzOAuth2Credentials checks that any client id and secret reach the token endpoint intact by
// either method, the header's form-encoding (RFC 6749 §2.3.1) decoded by the server above.
func FuzzOAuth2Credentials(f *testing.F) {
	const id, secret = "my client", "p@ss:w/rd+é"
	joined := id + ":" + secret
	for i := range len(joined) + 1 { // the published vector split at every offset
		f.Add(joined[:i], joined[i:], false)
		f.Add(joined[:i], joined[i:], true)
	}
	f.Add("a%20b+c", "%zz&=;?#\x80\xff", false)
	f.Add("ünï cödé", "🔑 \t", true)

	// One server for the whole run: it echoes the decoded credentials as the token.
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		if h := r.Header.Get("Authorization"); h != "" {
			var err error
			if id, secret, err = decodeBasic(h); err != nil {
				oauthError(w, http.StatusUnauthorized, "invalid_client", err.Error())
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"access_token": hex.EncodeToString([]byte(id)) + "." + hex.EncodeToString([]byte(secret)),
			"expires_in":   3600,
		})
	}))
	defer srv.Close()

	f.Fuzz(func(t *testing.T, id, secret string, inBody bool) {
		style := auth.OAuth2SecretInHeader
		if inBody {
			style = auth.OAuth2SecretInBody
		}
		s, err := auth.NewOAuth2(auth.OAuth2Options{
			TokenURL: srv.URL + "/token", ClientID: id, ClientSecret: secret, AuthStyle: style,
			HTTPClient: srv.Client(),
		})
		if err != nil {
			if id != "" && secret != "" && !containsCTL(id) && !containsCTL(secret) {
				t.Fatalf("NewOAuth2(%q, %q) = %v", id, secret, err)
			}
			return
		}
		r := &auth.Request{}
		if err := s.Sign(t.Context(), r); err != nil {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q contains the secret", err)
			}
			t.Fatalf("Sign(%q, %q, %s): %v", id, secret, style, err)
		}
		want := "Bearer " + hex.EncodeToString([]byte(id)) + "." + hex.EncodeToString([]byte(secret))
		if got := r.HeaderValue("Authorization"); got != want {
			t.Errorf("credentials (%q, %q) by %s arrived as %q, want %q", id, secret, style, got, want)
		}
	})
}

// FuzzOAuth2TokenResponse feeds arbitrary token responses to the signer: it must never panic,
// put anything but a printable token in the header, or show the secret in an error.
func FuzzOAuth2TokenResponse(f *testing.F) {
	const secret = "s3cr3t+/=value"
	for _, body := range []string{
		`{"access_token":"eyJhbGciOi.eyJzdWIi.sig-_~+/=","token_type":"Bearer","expires_in":3600}`,
		`{"access_token":"t","expires_in":"3600"}`,
		`{"access_token":"t","expires_in":1e400}`,
		`{"access_token":"t","expires_in":-1}`,
		`{"access_token":"t","expires_in":null}`,
		`{"access_token":"a b"}`,
		`{"access_token":"\u00e9"}`,
		`{"error":"invalid_client","error_description":"bad s3cr3t+/=value"}`,
		`{"error":"s3cr3t%2B%2F%3Dvalue"}`,
		`access_token=t&expires_in=12.5`,
		`access_token=t&expires_in=x`,
		``, `{`, `[]`, `null`,
	} {
		for _, ct := range []string{"application/json", "application/x-www-form-urlencoded"} {
			f.Add(body, ct, uint16(200))
		}
		f.Add(body, "application/json", uint16(400))
	}
	type response struct {
		body, ct string
		status   int
	}
	var current atomic.Pointer[response] // inputs run one at a time in a fuzz process
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp := current.Load()
		w.Header().Set("Content-Type", resp.ct)
		w.WriteHeader(resp.status)
		_, _ = w.Write([]byte(resp.body))
	}))
	defer srv.Close()

	f.Fuzz(func(t *testing.T, body, ct string, status uint16) {
		if status < 200 || status > 599 || status/100 == 3 || containsCTL(ct) {
			return
		}
		current.Store(&response{body: body, ct: ct, status: int(status)})
		s, err := auth.NewOAuth2(auth.OAuth2Options{
			TokenURL: srv.URL + "/token", ClientID: "id", ClientSecret: secret,
			HTTPClient: srv.Client(),
		})
		if err != nil {
			t.Fatal(err)
		}
		r := &auth.Request{}
		if err := s.Sign(t.Context(), r); err != nil {
			msg := err.Error()
			if strings.Contains(msg, secret) || strings.Contains(msg, url.QueryEscape(secret)) {
				t.Errorf("error %q contains the secret", msg)
			}
			return
		}
		h := r.HeaderValue("Authorization")
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || tok == "" || strings.ContainsFunc(tok, func(c rune) bool { return c <= ' ' || c > '~' }) {
			t.Errorf("Authorization = %q, want Bearer and a printable token", h)
		}
	})
}

func containsCTL(s string) bool {
	return strings.ContainsFunc(s, func(c rune) bool { return c < 0x20 || c == 0x7f })
}

// BenchmarkOAuth2Sign is the cost per attempt (one Sign per batch, however many messages it
// holds) with a cached token.
func BenchmarkOAuth2Sign(b *testing.B) {
	ts := newTokenServer(b, "id", "secret", 3600)
	s := newSigner(b, ts.options(""))
	sign(b, b.Context(), s)
	b.Run("serial", func(b *testing.B) {
		r := &auth.Request{Header: make([][2]string, 0, 4)}
		ctx := b.Context()
		b.ReportAllocs()
		for b.Loop() {
			r.Header = r.Header[:0]
			if err := s.Sign(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		ctx := b.Context()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			r := &auth.Request{Header: make([][2]string, 0, 4)}
			for pb.Next() {
				r.Header = r.Header[:0]
				if err := s.Sign(ctx, r); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	if n := ts.requests.Load(); n != 1 {
		b.Errorf("%d token requests, want 1", n)
	}
}
