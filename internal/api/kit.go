package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// FieldError is one problem of a request body, at its JSON pointer ("/batch/max_messages").
type FieldError struct {
	Pointer string `json:"pointer"`
	Detail  string `json:"detail"`
}

// Problem is an RFC 9457 problem detail, as every API error answers (application/problem+json).
type Problem struct {
	Type   string       `json:"type,omitempty"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail,omitempty"`
	Errors []FieldError `json:"errors,omitempty"`
}

// WriteProblem answers p as application/problem+json with p.Status (Title defaults to the
// status text).
func WriteProblem(w http.ResponseWriter, p Problem) {
	if p.Status == 0 {
		p.Status = http.StatusInternalServerError
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	b, _ := json.Marshal(p)
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(b, '\n'))
}

// WriteJSON answers v as application/json with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		WriteProblem(w, Problem{Status: http.StatusInternalServerError, Detail: "encode the answer: " + err.Error()})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// isJSON reports whether the media type ct is JSON: application/json or any +json type
// (application/merge-patch+json).
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")))
}

// DecodeJSON reads r's body (at most 1 MiB) into v. A body that is not JSON, or not one JSON
// value, answers 400 (or 415 for another Content-Type, 413 beyond 1 MiB) itself and returns
// false. Unknown fields are errors.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !isJSON(ct) {
		WriteProblem(w, Problem{Status: http.StatusUnsupportedMediaType, Detail: "the body must be application/json"})
		return false
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.New("more than one JSON value")
		}
	}
	if err == nil {
		return true
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		WriteProblem(w, Problem{Status: http.StatusRequestEntityTooLarge, Detail: fmt.Sprintf("the body is larger than %d bytes", tooLarge.Limit)})
	case errors.Is(err, io.EOF):
		WriteProblem(w, Problem{Status: http.StatusBadRequest, Detail: "a JSON body is required"})
	default:
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			WriteProblem(w, Problem{Status: http.StatusBadRequest, Detail: "the body is not valid",
				Errors: []FieldError{{Pointer: "/" + strings.ReplaceAll(te.Field, ".", "/"), Detail: "want " + te.Type.String()}}})
			return false
		}
		WriteProblem(w, Problem{Status: http.StatusBadRequest, Detail: "the body is not valid JSON: " + err.Error()})
	}
	return false
}

// cursorPrefix marks the cursors this package makes.
const cursorPrefix = "c1:"

// EncodeCursor and DecodeCursor make a list's opaque cursor from the last ID of a page and back;
// DecodeCursor reports false for a cursor it did not make.
func EncodeCursor(lastID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + lastID))
}

func DecodeCursor(c string) (lastID string, ok bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", false
	}
	return strings.CutPrefix(string(b), cursorPrefix)
}

// Limit reads the limit query parameter: default 100, 1..1000; false (400 answered) otherwise.
func Limit(w http.ResponseWriter, r *http.Request) (int, bool) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 100, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		WriteProblem(w, Problem{Status: http.StatusBadRequest, Detail: "limit must be a number from 1 to 1000",
			Errors: []FieldError{{Pointer: "/limit", Detail: "want 1..1000"}}})
		return 0, false
	}
	return n, true
}

// Cursor reads the cursor query parameter: "" for the first page; false (400 answered) for a
// cursor this package did not make.
func Cursor(w http.ResponseWriter, r *http.Request) (after string, ok bool) {
	c := r.URL.Query().Get("cursor")
	if c == "" {
		return "", true
	}
	if after, ok = DecodeCursor(c); !ok {
		WriteProblem(w, Problem{Status: http.StatusBadRequest, Detail: "cursor is not one this API gave"})
	}
	return after, ok
}

// List is the answer of a list endpoint: a page of data and, when more follow, the cursor of
// the next page.
type List[T any] struct {
	Data       []T    `json:"data"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// Super is the right of [Server.HandleAPI] that only a global key holding every right has
// (access.Principal.Super): /debug/pprof/.
const Super = "super"

// HandleAPI adds an endpoint of the authenticated API: pattern is a net/http ServeMux pattern
// with its method ("GET /api/v1/routes/{name}"); right is the "resource:action" the caller's key
// must hold (403 otherwise, after the server authenticated the request: 401), "" for any valid
// key, or [Super]. Writes (POST, PUT, PATCH, DELETE) that carry a body or a Content-Type must
// be JSON (415 otherwise: a cross-site text/plain form post never runs). h finds the principal
// with access.From(r.Context()). Must be called before Start.
func (s *Server) HandleAPI(pattern, right string, h http.HandlerFunc) {
	s.handleAPI(pattern, right, nil, h)
}

// handleAPI is HandleAPI; a write whose media types are given takes those instead of JSON.
func (s *Server) handleAPI(pattern, right string, mediaTypes []string, h http.HandlerFunc) {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok || method == "" || !strings.HasPrefix(path, "/") || h == nil {
		panic(fmt.Sprintf("api: HandleAPI(%q): want \"METHOD /path\" and a handler", pattern))
	}
	var res, act string
	if right != "" && right != Super {
		if err := access.CheckRight(right); err != nil {
			panic(fmt.Sprintf("api: HandleAPI(%q): %v", pattern, err))
		}
		res, act, _ = strings.Cut(right, ":")
	}
	write := method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch || method == http.MethodDelete
	s.add(pattern, func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		if write && mediaTypes != nil {
			if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || !slices.Contains(mediaTypes, mt) {
				WriteProblem(w, Problem{Status: http.StatusUnsupportedMediaType, Detail: "this endpoint takes " + strings.Join(mediaTypes, ", ")})
				return
			}
		} else if write {
			ct := r.Header.Get("Content-Type")
			if (ct != "" && !isJSON(ct)) || (ct == "" && r.ContentLength != 0) {
				WriteProblem(w, Problem{Status: http.StatusUnsupportedMediaType, Detail: "writes take application/json"})
				return
			}
		}
		switch {
		case right == Super && !p.Super():
			WriteProblem(w, Problem{Status: http.StatusForbidden, Detail: "this endpoint needs a global key holding every right"})
			return
		case res != "" && !p.Can(res, act):
			WriteProblem(w, Problem{Status: http.StatusForbidden, Detail: "this key does not hold " + right})
			return
		}
		h(w, r.WithContext(access.With(r.Context(), p)))
	})
}

// authenticate finds the principal of r's key ("Authorization: Bearer <key>" or "Token: <key>").
// Without a valid one it answers 401 (or 429 when the client address failed too often) and
// returns false.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*access.Principal, bool) {
	now := s.opts.now()
	key, reason := keyOf(r), ""
	var p *access.Principal
	if key == "" {
		reason = "missing"
	} else {
		h := access.Hash(key)
		if s.opts.hasBootstrap && access.Equal(h, s.opts.bootstrap) {
			return &access.Principal{KeyID: "bootstrap", Rights: []string{"*:*"}}, true
		}
		// The map lookup by hash is not constant-time, but what it could leak is about the
		// SHA-256 of a 256-bit random key: nothing that helps guess a key. The comparison of
		// the hash found is constant-time all the same.
		var k registry.Key
		found := false
		if s.opts.keys != nil {
			k, found = s.opts.keys.KeyByHash(h)
		}
		switch {
		case !found || !access.Equal(k.Hash, h):
			reason = "unknown"
		case !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt):
			reason = "expired"
		default:
			p = &access.Principal{KeyID: k.ID, Account: k.Account, Rights: k.Rights}
		}
	}
	if p != nil {
		return p, true
	}
	s.auth.failures.WithLabelValues(reason).Inc()
	if wait := s.opts.limiter.Fail(clientAddr(r), now); wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		WriteProblem(w, Problem{Status: http.StatusTooManyRequests, Detail: "too many failed authentications from this address"})
		return nil, false
	}
	detail := map[string]string{
		"missing": "an API key is required: Authorization: Bearer <key>",
		"unknown": "the API key is not valid",
		"expired": "the API key has expired",
	}[reason]
	if reason == "missing" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="fleetrelay"`)
	} else {
		w.Header().Set("WWW-Authenticate", `Bearer realm="fleetrelay", error="invalid_token"`)
	}
	WriteProblem(w, Problem{Status: http.StatusUnauthorized, Detail: detail})
	return nil, false
}

// keyOf returns the key r presents, "" for none.
func keyOf(r *http.Request) string {
	if a := r.Header.Get("Authorization"); a != "" {
		scheme, key, ok := strings.Cut(a, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(key)
		}
		return ""
	}
	return strings.TrimSpace(r.Header.Get("Token"))
}

// clientAddr is the address the failures of r are limited by: the peer's IP.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// authMetrics are the server's counters.
type authMetrics struct {
	failures *prometheus.CounterVec
	changes  *prometheus.CounterVec
}

func newAuthMetrics(reg *prometheus.Registry) *authMetrics {
	m := &authMetrics{
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetrelay_api_auth_failures_total",
			Help: "Failed authentications of the admin API, by reason (missing, unknown, expired)."}, []string{"reason"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetrelay_api_changes_total",
			Help: "Changes made through the admin API, by resource kind and action."}, []string{"kind", "action"}),
	}
	for _, reason := range []string{"missing", "unknown", "expired"} {
		m.failures.WithLabelValues(reason) // shown at 0 before the first failure
	}
	if reg != nil {
		reg.MustRegister(m.failures, m.changes)
	}
	return m
}

// Audit logs a change at info level (who: the key id; what: action, kind, id) and counts it in
// fleetrelay_api_changes_total{kind,action}.
func (s *Server) Audit(r *http.Request, action, kind, id string) {
	who, account := "", ""
	if p := access.From(r.Context()); p != nil {
		who, account = p.KeyID, p.Account
	}
	s.auth.changes.WithLabelValues(kind, action).Inc()
	s.log.Info("audit", "key", who, "key_account", account, "action", action, "kind", kind, "id", id,
		"remote", clientAddr(r), "at", s.opts.now().UTC())
}
