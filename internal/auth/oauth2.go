package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// How OAuth2 client credentials reach the token endpoint (OAuth2Options.AuthStyle).
const (
	// OAuth2SecretInHeader sends "Authorization: Basic base64(urlencode(id):urlencode(secret))"
	// (RFC 6749 §2.3.1, client_secret_basic); the body holds only grant_type, scope and
	// EndpointParams.
	OAuth2SecretInHeader = "header"
	// OAuth2SecretInBody sends client_id and client_secret as form parameters in the body
	// (client_secret_post).
	OAuth2SecretInBody = "body"
)

// Defaults of OAuth2Options.
const (
	DefaultOAuth2RefreshBefore     = 30 * time.Second
	DefaultOAuth2TokenTimeout      = 10 * time.Second
	DefaultOAuth2UnauthorizedGrace = 5 * time.Second
)

// OAuth2Options configures OAuth2 client credentials (RFC 6749 §4.4).
type OAuth2Options struct {
	// TokenURL is the token endpoint. It must be https, or http to a loopback host
	// (localhost, 127.0.0.0/8, ::1). Required.
	TokenURL string
	// ClientID identifies the relay to the token endpoint. Required.
	ClientID string
	// ClientSecret authenticates it. Required; never printed or put in an error.
	ClientSecret string
	// Scopes requested, sent space-separated in "scope"; none by default.
	Scopes []string
	// EndpointParams are extra form parameters of the token request, such as "audience" or
	// "resource". They may not set client_id or client_secret, nor scope when Scopes is set.
	// Their values are not printed.
	EndpointParams url.Values
	// AuthStyle is how the client credentials are sent: "header" (HTTP Basic, the default:
	// RFC 6749 §2.3.1 requires token endpoints to support it) or "body" (form parameters).
	AuthStyle string
	// HTTPClient makes token requests (the relay passes one with its TLS settings, see
	// deliver.NewHTTPClient). It is copied with redirects disabled, so that the credentials are
	// never re-sent to another address. nil: a client of its own with the system's TLS roots.
	HTTPClient *http.Client
	// RefreshBefore is how long before its expiry a token is replaced, so that no attempt is
	// sent with a token about to expire. It is capped at half the token's lifetime. Default 30s.
	RefreshBefore time.Duration
	// TokenTimeout bounds one token request, within the context of the Sign that makes it.
	// Default 10s.
	TokenTimeout time.Duration
	// UnauthorizedGrace applies to 401s reported without the rejected attempt (Unauthorized(nil)):
	// one within this time of fetching the current token is taken to answer an attempt signed
	// with the previous token and keeps the current one. Default 5s. With the attempt, the
	// token is dropped exactly when the attempt carried it.
	UnauthorizedGrace time.Duration
}

// String describes o with its secret and endpoint parameter values redacted.
func (o OAuth2Options) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "oauth2{token_url=%s client_id=%s client_secret=%s auth_style=%s",
		redactURL(o.TokenURL), o.ClientID, oauth2Redacted, o.AuthStyle)
	if len(o.Scopes) > 0 {
		fmt.Fprintf(&b, " scopes=%s", strings.Join(o.Scopes, ","))
	}
	for _, k := range sortedKeys(o.EndpointParams) {
		fmt.Fprintf(&b, " %s=%s", k, oauth2Redacted)
	}
	b.WriteByte('}')
	return b.String()
}

// GoString is String, so that %#v does not print the secret either.
func (o OAuth2Options) GoString() string { return o.String() }

// LogValue describes o for log/slog with its secret redacted.
func (o OAuth2Options) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("token_url", redactURL(o.TokenURL)),
		slog.String("client_id", o.ClientID),
		slog.String("client_secret", oauth2Redacted),
		slog.String("auth_style", o.AuthStyle),
		slog.Any("scopes", o.Scopes),
	)
}

const oauth2Redacted = "REDACTED"

// TokenError is returned by OAuth2.Sign when no token could be obtained. It never holds the
// client secret.
type TokenError struct {
	URL         string // the token endpoint, without query or user info
	Status      int    // HTTP status of the token response; 0 if none was received
	Code        string // the OAuth2 "error" code (RFC 6749 §5.2), such as "invalid_client"
	Description string // "error_description", shortened
	Err         error  // the transport or parse error, if any
}

func (e *TokenError) Error() string {
	var b strings.Builder
	b.WriteString("oauth2 token from ")
	b.WriteString(e.URL)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, ": %q", e.Code)
		if e.Description != "" {
			fmt.Fprintf(&b, " %q", e.Description)
		}
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *TokenError) Unwrap() error { return e.Err }

// OAuth2 obtains tokens with OAuth2 client credentials and sets "Authorization: Bearer <token>"
// on every attempt, whatever token_type the endpoint names (RFC 6750).
//
// The token is cached and replaced RefreshBefore its expiry (a token without expires_in is kept
// until a 401). One Sign at a time fetches a token, with its own ctx. While it does, other Signs
// keep using the current token if it has not expired; without one they wait for that fetch (or
// their ctx), and try themselves if the fetching Sign's ctx ended it. If a refresh fails, the
// current token is used until it expires, and the next Sign tries again. Unauthorized drops the
// cached token when the rejected attempt carried it (see Unauthorized).
//
// An OAuth2 is safe for concurrent use. Sign with a cached token takes no lock and does not
// allocate when r.Header has room for the header.
type OAuth2 struct {
	cfg     *clientcredentials.Config
	hc      *http.Client
	url     string // redacted token URL for errors and String
	before  time.Duration
	timeout time.Duration
	grace   time.Duration
	secrets []string         // the forms of the secret scrubbed from server-supplied error text
	now     func() time.Time // the clock of expiry and grace; tests replace it

	tok atomic.Pointer[oauth2Token] // the current token, nil if none

	mu       sync.Mutex   // guards fetching and changes of tok
	fetching *oauth2Fetch // the fetch in flight, nil if none
}

var (
	_ Signer    = (*OAuth2)(nil)
	_ Refresher = (*OAuth2)(nil)
)

// oauth2Token is an immutable cached token.
type oauth2Token struct {
	header    string    // "Bearer " + access token
	fetched   time.Time // when its request was sent
	refreshAt time.Time // when to replace it; zero: never
	expiresAt time.Time // zero: never
}

// oauth2Fetch is one token request; done is closed when tok or err is set.
type oauth2Fetch struct {
	done      chan struct{}
	tok       *oauth2Token
	err       error
	abandoned bool // err came from the fetching Sign's ctx, not from the endpoint
}

// NewOAuth2 returns an OAuth2 signer for o. It checks o (every problem is reported) but makes
// no request: the first token is fetched by the first Sign.
func NewOAuth2(o OAuth2Options) (*OAuth2, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("oauth2.%s: "+format, append([]any{field}, args...)...))
	}
	u, err := url.Parse(o.TokenURL)
	switch {
	case o.TokenURL == "":
		bad("token_url", "required")
	case err != nil:
		bad("token_url", "not a URL")
	case u.Host == "" || u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname())):
		bad("token_url", "must be an https URL (http only to a loopback host)")
	case u.User != nil:
		bad("token_url", "must not contain user info; use client_id and client_secret")
	}
	if o.ClientID == "" {
		bad("client_id", "required")
	} else if hasControl(o.ClientID) {
		bad("client_id", "must not contain control characters")
	}
	if o.ClientSecret == "" {
		bad("client_secret", "required")
	} else if hasControl(o.ClientSecret) {
		bad("client_secret", "must not contain control characters")
	}
	for i, s := range o.Scopes {
		if !validScope(s) {
			bad("scopes["+strconv.Itoa(i)+"]", "%q is not a scope token (RFC 6749 §3.3: printable ASCII without space, '\"' or '\\')", s)
		}
	}
	for _, k := range sortedKeys(o.EndpointParams) {
		switch {
		case k == "client_id" || k == "client_secret":
			bad("endpoint_params."+k, "set client_id and client_secret instead")
		case k == "scope" && len(o.Scopes) > 0:
			bad("endpoint_params.scope", "conflicts with scopes")
		}
	}
	var style oauth2.AuthStyle
	switch o.AuthStyle {
	case "", OAuth2SecretInHeader:
		style = oauth2.AuthStyleInHeader
	case OAuth2SecretInBody:
		style = oauth2.AuthStyleInParams
	default:
		bad("auth_style", "%q: want %q or %q", o.AuthStyle, OAuth2SecretInHeader, OAuth2SecretInBody)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"refresh_before", &o.RefreshBefore, DefaultOAuth2RefreshBefore},
		{"token_timeout", &o.TokenTimeout, DefaultOAuth2TokenTimeout},
		{"unauthorized_grace", &o.UnauthorizedGrace, DefaultOAuth2UnauthorizedGrace},
	} {
		switch {
		case *d.v < 0:
			bad(d.name, "must not be negative")
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	var hc http.Client
	if o.HTTPClient != nil {
		hc = *o.HTTPClient
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	params := make(url.Values, len(o.EndpointParams))
	for k, v := range o.EndpointParams {
		params[k] = append([]string(nil), v...)
	}
	return &OAuth2{
		cfg: &clientcredentials.Config{
			ClientID:       o.ClientID,
			ClientSecret:   o.ClientSecret,
			TokenURL:       o.TokenURL,
			Scopes:         append([]string(nil), o.Scopes...),
			EndpointParams: params,
			AuthStyle:      style,
		},
		hc:      &hc,
		url:     redactURL(o.TokenURL),
		before:  o.RefreshBefore,
		timeout: o.TokenTimeout,
		grace:   o.UnauthorizedGrace,
		secrets: []string{o.ClientSecret, url.QueryEscape(o.ClientSecret), url.PathEscape(o.ClientSecret)},
		now:     time.Now,
	}, nil
}

// Sign sets "Authorization: Bearer <token>" on r, fetching a token first if none is cached or
// the cached one is due for refresh. The fetch ends with ctx; its errors are *TokenError.
func (s *OAuth2) Sign(ctx context.Context, r *Request) error {
	t := s.tok.Load()
	if t == nil || t.due(s.now()) {
		var err error
		if t, err = s.token(ctx); err != nil {
			return err
		}
	}
	r.SetHeader("Authorization", t.header)
	return nil
}

// Unauthorized drops the cached token when the rejected attempt r carried it. When r is nil
// (or carried no Authorization), it drops the token unless it was fetched within
// UnauthorizedGrace: then the 401 is taken to answer an attempt signed with the token before it.
func (s *OAuth2) Unauthorized(r *Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tok.Load()
	if t == nil {
		return
	}
	if sent := r.authorization(); sent != "" {
		if sent == t.header {
			s.tok.Store(nil)
		}
		return
	}
	if s.now().Sub(t.fetched) >= s.grace {
		s.tok.Store(nil)
	}
}

// authorization is the Authorization header r carried, "" for a nil r.
func (r *Request) authorization() string {
	if r == nil {
		return ""
	}
	return r.HeaderValue("Authorization")
}

// String describes s without its secret.
func (s *OAuth2) String() string {
	return "oauth2{token_url=" + s.url + " client_id=" + s.cfg.ClientID + " client_secret=" + oauth2Redacted + "}"
}

// due reports whether t should be replaced.
func (t *oauth2Token) due(now time.Time) bool {
	return !t.refreshAt.IsZero() && !now.Before(t.refreshAt)
}

// valid reports whether t has not expired.
func (t *oauth2Token) valid(now time.Time) bool {
	return t.expiresAt.IsZero() || now.Before(t.expiresAt)
}

// token returns a fresh token, fetching it unless another Sign is already doing so.
func (s *OAuth2) token(ctx context.Context) (*oauth2Token, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s.mu.Lock()
		now := s.now()
		cur := s.tok.Load()
		if cur != nil && !cur.due(now) {
			s.mu.Unlock()
			return cur, nil
		}
		if f := s.fetching; f != nil {
			s.mu.Unlock()
			if cur != nil && cur.valid(now) {
				return cur, nil // being refreshed, still good
			}
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if f.abandoned {
				continue // its Sign gave up; fetch with this ctx
			}
			return f.tok, f.err
		}
		f := &oauth2Fetch{done: make(chan struct{})}
		s.fetching = f
		s.mu.Unlock()
		s.run(ctx, f)
		if f.err != nil && cur != nil && ctx.Err() == nil && s.tok.Load() == cur && cur.valid(s.now()) {
			return cur, nil // the refresh failed, but the current token has not expired
		}
		return f.tok, f.err
	}
}

// run performs fetch f with ctx and publishes its outcome.
func (s *OAuth2) run(ctx context.Context, f *oauth2Fetch) {
	defer func() {
		s.mu.Lock()
		if f.tok != nil {
			s.tok.Store(f.tok)
		} else if f.err == nil {
			f.err = &TokenError{URL: s.url, Err: errors.New("token request panicked")}
		}
		s.fetching = nil
		s.mu.Unlock()
		close(f.done)
	}()
	f.tok, f.err = s.fetch(ctx)
	f.abandoned = f.err != nil && ctx.Err() != nil
}

// fetch requests a new token.
func (s *OAuth2) fetch(ctx context.Context) (*oauth2Token, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.hc)
	fetched := s.now()
	tok, err := s.cfg.Token(ctx)
	if err != nil {
		return nil, s.tokenError(err)
	}
	if !validToken(tok.AccessToken) {
		return nil, &TokenError{URL: s.url, Err: errors.New("access_token is not a valid bearer token (RFC 6750: printable ASCII without space)")}
	}
	t := &oauth2Token{header: "Bearer " + tok.AccessToken, fetched: fetched}
	lifetime, err := expiresIn(tok)
	if err != nil {
		return nil, &TokenError{URL: s.url, Err: err}
	}
	if lifetime > 0 {
		// Count the lifetime from when the request was sent: the endpoint issued the token
		// later, so the cached token expires a little before the real one.
		t.expiresAt = fetched.Add(lifetime)
		t.refreshAt = t.expiresAt.Add(-min(s.before, lifetime/2))
	}
	return t, nil
}

// expiresIn returns the token's lifetime from the response's expires_in, 0 for none.
func expiresIn(tok *oauth2.Token) (time.Duration, error) {
	var secs float64
	switch v := tok.Extra("expires_in").(type) {
	case nil:
		if tok.Expiry.IsZero() {
			return 0, nil
		}
		// Unreachable with x/oauth2 today, which sets Expiry only from expires_in.
		return max(time.Until(tok.Expiry), time.Second), nil
	case float64:
		secs = v
	case int64:
		secs = float64(v)
	case json.Number:
		secs, _ = v.Float64()
	case string:
		if v == "" {
			return 0, nil
		}
		var err error
		if secs, err = strconv.ParseFloat(v, 64); err != nil {
			return 0, fmt.Errorf("bad expires_in %q", truncate(v, 32))
		}
	default:
		return 0, fmt.Errorf("bad expires_in %v", v)
	}
	if math.IsNaN(secs) || secs < 0 {
		return 0, fmt.Errorf("bad expires_in %v", tok.Extra("expires_in"))
	}
	if secs == 0 {
		return 0, nil // RFC 6749 §5.1: no lifetime given
	}
	return time.Duration(min(secs, math.MaxInt32) * float64(time.Second)), nil
}

// tokenError turns an error of x/oauth2 into a *TokenError without secrets.
func (s *OAuth2) tokenError(err error) error {
	te := &TokenError{URL: s.url}
	var re *oauth2.RetrieveError
	var ue *url.Error
	switch {
	case errors.As(err, &re):
		te.Code = truncate(s.scrub(re.ErrorCode), 64)
		te.Description = truncate(s.scrub(re.ErrorDescription), 200)
		if re.Response != nil {
			te.Status = re.Response.StatusCode
			if loc := re.Response.Header.Get("Location"); loc != "" && te.Status/100 == 3 {
				te.Err = fmt.Errorf("redirected to %s (redirects are not followed)", redactURL(loc))
			}
		}
		if te.Code == "" && te.Err == nil {
			te.Err = errors.New("no OAuth2 error in the response")
		}
	case errors.As(err, &ue):
		te.Err = ue.Err // without the URL, which may carry query parameters
	default:
		te.Err = errors.New(s.scrub(err.Error()))
	}
	return te
}

// scrub removes the client secret from text an endpoint sent back.
func (s *OAuth2) scrub(text string) string {
	for _, sec := range s.secrets {
		if sec != "" {
			text = strings.ReplaceAll(text, sec, oauth2Redacted)
		}
	}
	return text
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// redactURL returns u without user info, query or fragment.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(invalid URL)"
	}
	p.User, p.RawQuery, p.ForceQuery, p.Fragment, p.RawFragment = nil, "", false, "", ""
	return p.String()
}

func isLoopbackHost(h string) bool {
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// validScope reports whether s is a scope-token (RFC 6749 §3.3).
func validScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// validToken reports whether an access token can be sent as it is in a header: one or more
// printable ASCII characters without space, a superset of RFC 6750's b64token.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

func sortedKeys(v url.Values) []string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
