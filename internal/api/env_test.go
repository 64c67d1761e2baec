package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/api"
	"github.com/fleetrelay/fleetrelay/internal/api/apitest"
	"github.com/fleetrelay/fleetrelay/internal/registry"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// clock is a settable clock for key expiry.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// env is a real admin server on loopback port 0 with the accounts, keys and dead-letter
// endpoints over a real registry in a real store, its bootstrap key made by access.Bootstrap,
// and a client that checks every exchange against the OpenAPI document.
type env struct {
	t       testing.TB
	base    string
	s       *api.Server
	reg     *registry.Registry
	st      *store.Store
	metrics *prometheus.Registry
	clock   *clock
	log     *relaytest.LogBuffer
	c       *http.Client
	super   string   // the bootstrap key
	secrets []string // every key the tests saw: none may appear in a log line
}

type envOption struct {
	addr    string
	opts    []api.Option
	prepare func(e *env)
}

func newEnv(t testing.TB, o envOption) *env {
	t.Helper()
	e := &env{t: t, metrics: prometheus.NewRegistry(), clock: &clock{now: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}, log: &relaytest.LogBuffer{}}
	dir := t.TempDir()
	st, err := store.Open(t.Context(), store.Options{Dir: filepath.Join(dir, "data")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e.st = st
	if e.reg, err = registry.Open(t.Context(), registry.NewStoreBackend(st)); err != nil {
		t.Fatal(err)
	}
	e.reg.Now = e.clock.Now
	hash, path, created, err := access.Bootstrap(dir, "")
	if err != nil || !created {
		t.Fatalf("Bootstrap = %v, created %v", err, created)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e.super = strings.TrimSpace(string(b))
	e.secrets = append(e.secrets, e.super)

	log := slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	addr := o.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	opts := append([]api.Option{api.WithKeys(e.reg, hash), api.WithClock(e.clock.Now)}, o.opts...)
	e.s = api.New(addr, e.metrics, nil, log, opts...)
	e.s.RegisterAccounts(e.reg)
	e.s.RegisterKeys(e.reg)
	if o.prepare != nil {
		o.prepare(e)
	}
	a, err := e.s.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.s.Close(t.Context()) })
	port := a.String()[strings.LastIndex(a.String(), ":")+1:]
	e.base = "http://127.0.0.1:" + port
	e.c = apitest.Client(t)
	t.Cleanup(func() {
		logs := e.log.String()
		for _, k := range e.secrets {
			if strings.Contains(logs, k) {
				t.Errorf("a key appears in the log:\n%s", logs)
			}
		}
	})
	return e
}

// do sends method path with key (none if "") and body (JSON-encoded unless a string or nil).
func (e *env) do(key, method, path string, body any) (int, []byte, http.Header) {
	e.t.Helper()
	return e.doWith(key, method, path, body, nil)
}

func (e *env) doWith(key, method, path string, body any, edit func(*http.Request)) (int, []byte, http.Header) {
	e.t.Helper()
	var r io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case string:
		r, ct = strings.NewReader(b), "application/json"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		r, ct = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.base+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if edit != nil {
		edit(req)
	}
	if req.Header.Get("X-Test-Invalid") != "" {
		req.Header.Del("X-Test-Invalid")
		req = apitest.Invalid(req)
	}
	resp, err := e.c.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, k := range e.secrets {
		if k != "" && bytes.Contains(b, []byte(k)) && !(method == http.MethodPost && resp.StatusCode == http.StatusCreated) {
			e.t.Errorf("%s %s answers a key: %s", method, path, b)
		}
	}
	return resp.StatusCode, b, resp.Header
}

// want sends a request and checks its status; it decodes a JSON answer into out when given.
func (e *env) want(key, method, path string, body any, status int, out any) []byte {
	e.t.Helper()
	got, b, _ := e.do(key, method, path, body)
	if got != status {
		e.t.Fatalf("%s %s = %d %s, want %d", method, path, got, b, status)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return b
}

// newKey makes a key through the API with the bootstrap key and returns its id and secret.
func (e *env) newKey(by, name, account string, rights []string, preset string) (id, key string) {
	e.t.Helper()
	var k api.KeyView
	e.want(by, "POST", "/api/v1/keys", keyBody(name, account, rights, preset), 201, &k)
	if k.Key == "" || k.ID == "" {
		e.t.Fatalf("POST /api/v1/keys answered %+v without the key", k)
	}
	e.secrets = append(e.secrets, k.Key)
	return k.ID, k.Key
}

func (e *env) counter(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.metrics.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
				}
				if !found {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// keyBody is a POST /api/v1/keys body with the fields given.
func keyBody(name, account string, rights []string, preset string) map[string]any {
	b := map[string]any{"name": name}
	if account != "" {
		b["account"] = account
	}
	if rights != nil {
		b["rights"] = rights
	}
	if preset != "" {
		b["preset"] = preset
	}
	return b
}

func nopLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// invalid marks a request as breaking the document on purpose.
func invalid(r *http.Request) { r.Header.Set("X-Test-Invalid", "1") }

// wantInvalid is want for a request that breaks the document on purpose.
func (e *env) wantInvalid(key, method, path string, body any, status int) {
	e.t.Helper()
	if got, b, _ := e.doWith(key, method, path, body, invalid); got != status {
		e.t.Fatalf("%s %s = %d %s, want %d", method, path, got, b, status)
	}
}
