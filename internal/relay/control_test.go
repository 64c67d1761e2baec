package relay_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/api/apitest"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relay"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// apiClient calls a relay's admin API with a key; every request and answer is checked against
// the OpenAPI document (apitest).
type apiClient struct {
	t       *testing.T
	http    *http.Client
	base    string
	key     string
	seen    *bytes.Buffer // every response body, to search for secrets
	invalid bool          // the requests break the document on purpose
}

func newAPI(t *testing.T, r *relay.Relay, key string) *apiClient {
	return &apiClient{t: t, http: apitest.Client(t), base: "http://" + r.AdminAddr().String(), key: key, seen: &bytes.Buffer{}}
}

// breaking is the same client for requests that break the document on purpose (a test of the
// server's own checks); the answers are still checked.
func (c *apiClient) breaking() *apiClient {
	cc := *c
	cc.invalid = true
	return &cc
}

// as is the same client with another key.
func (c *apiClient) as(key string) *apiClient {
	cc := *c
	cc.key = key
	return &cc
}

// do sends body (a string, or any other value encoded as JSON) and returns the status and the
// decoded answer (nil when empty).
func (c *apiClient) do(method, path string, body any) (int, map[string]any) {
	c.t.Helper()
	status, raw := c.raw(method, path, "application/json", body)
	if len(raw) == 0 {
		return status, nil
	}
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		c.t.Fatalf("%s %s: answer %q is not a JSON object: %v", method, path, raw, err)
	}
	return status, v
}

func (c *apiClient) raw(method, path, contentType string, body any) (int, []byte) {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", contentType)
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	if c.invalid {
		req = apitest.Invalid(req)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	c.seen.Write(raw)
	return resp.StatusCode, raw
}

// must is do that fails the test unless the answer has status want.
func (c *apiClient) must(want int, method, path string, body any) map[string]any {
	c.t.Helper()
	status, v := c.do(method, path, body)
	if status != want {
		c.t.Fatalf("%s %s = %d %v, want %d", method, path, status, v, want)
	}
	return v
}

// bootstrapKey is the super key the relay made at its first start.
func bootstrapKey(t *testing.T, cfg *config.Config) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.key"))
	if err != nil {
		t.Fatalf("bootstrap key: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// pointers lists the JSON pointers of a problem's field errors.
func pointers(problem map[string]any) []string {
	var out []string
	errs, _ := problem["errors"].([]any)
	for _, e := range errs {
		m, _ := e.(map[string]any)
		p, _ := m["pointer"].(string)
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// field reads a nested field of a decoded answer: field(v, "spec", "batch", "max_messages").
func field(v map[string]any, path ...string) any {
	var cur any = v
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

// waitRecords waits until the sink has every record of ids (msgIds "SERIAL-seq-i").
func waitRecords(t *testing.T, sink *loadgen.Sink, serial string, seqs []uint64) {
	t.Helper()
	checkfor.Check(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, s := range seqs {
			if sink.Count(loadgen.MsgKey{Device: serial, Seq: s, Index: 0}) == 0 {
				return fmt.Errorf("%s seq %d not delivered", serial, s)
			}
		}
		return nil
	})
}

// send sends n one-record frames from d and waits for their ACKs; it returns their seqs.
func send(t *testing.T, d *loadgen.Device, serial string, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := range n {
		seq, err := d.Send(record(serial, d.NextSeq(), i))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	waitAcked(t, d, seqs[len(seqs)-1])
	return seqs
}

// The scripted session, as a new user would run it: the bootstrap key creates an
// account and a dealer key for it; with that key, a route to a test endpoint and a device of the
// account; the device's data arrives, another account's device does not reach the route; after a
// restart the route and the key still work; a rotated key works during its grace, then answers
// 401.
func TestControlScriptedSession(t *testing.T) {
	sink := startSink(t)
	cfg := testConfig(t, nil)
	r := startRelay(t, cfg)
	boot := newAPI(t, r, bootstrapKey(t, cfg))

	boot.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "acme", "name": "Acme"})
	boot.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "other", "name": "Other"})
	k := boot.must(http.StatusCreated, "POST", "/api/v1/keys", map[string]any{"name": "acme dealer", "account": "acme", "preset": "dealer"})
	keyID, _ := k["id"].(string)
	dealerKey, _ := k["key"].(string)
	if keyID == "" || dealerKey == "" {
		t.Fatalf("POST /api/v1/keys = %v, want an id and the key", k)
	}
	dealer := boot.as(dealerKey)

	rt := dealer.must(http.StatusCreated, "POST", "/api/v1/routes", map[string]any{
		"name": "acme-hook", "url": sink.URL() + "/ingest/[SERIAL]", "batch": map[string]any{"linger": "5ms"}})
	if got := field(rt, "spec", "account"); got != "acme" {
		t.Errorf("the dealer's route has account %v, want acme (its key's)", got)
	}
	if got := field(rt, "status", "running"); got != true {
		t.Errorf("route status = %v, want running", field(rt, "status"))
	}
	dealer.must(http.StatusCreated, "PUT", "/api/v1/devices/acme-1", map[string]any{"tags": []string{"truck"}})
	// The dealer cannot see or create the other account's device.
	boot.must(http.StatusCreated, "PUT", "/api/v1/devices/OTHER-1", map[string]any{"account": "other"})
	dealer.must(http.StatusNotFound, "GET", "/api/v1/devices/other-1", nil)
	if st, p := dealer.do("PUT", "/api/v1/devices/other-2", map[string]any{"account": "other"}); st != http.StatusUnprocessableEntity || !slices.Equal(pointers(p), []string{"/account"}) {
		t.Errorf("dealer PUT of another account's device = %d %v, want 422 at /account", st, p)
	}

	// The other account's device first: its frames are routed when stored, before acme's.
	other := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "other-1"}, 1)
	send(t, other, "other-1", 3)
	acme := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "acme-1"}, 1)
	waitRecords(t, sink, "acme-1", send(t, acme, "acme-1", 5))
	if _, ok := sink.Devices()["other-1"]; ok {
		t.Errorf("the other account's device reached acme's route")
	}
	if got := field(dealer.must(http.StatusOK, "GET", "/api/v1/routes/acme-hook", nil), "holdings", "backlog"); got != float64(0) {
		t.Errorf("acme-hook backlog = %v, want 0: the other account's frames were routed to it", got)
	}
	dev := dealer.must(http.StatusOK, "GET", "/api/v1/devices/ACME-1", nil)
	if field(dev, "id") != "ACME-1" || field(dev, "state", "connected") != true || field(dev, "state", "last_seq") != float64(5) {
		t.Errorf("GET device = %v, want ACME-1 connected with last_seq 5", dev)
	}

	// Restart: the route and the key survive.
	if err := relaytest.Shutdown(r); err != nil {
		t.Fatal(err)
	}
	r = startRelay(t, cfg)
	boot, dealer = newAPI(t, r, boot.key), newAPI(t, r, dealerKey)
	dealer.must(http.StatusOK, "GET", "/api/v1/routes/acme-hook", nil)
	acme = connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "acme-1"}, 6)
	waitRecords(t, sink, "acme-1", send(t, acme, "acme-1", 3))

	// Rotation: the old key works during the grace, then not.
	rot := boot.must(http.StatusCreated, "POST", "/api/v1/keys/"+keyID+"/rotate", map[string]any{"grace": "3s"})
	newKey, _ := rot["key"].(string)
	if newKey == "" || newKey == dealerKey {
		t.Fatalf("rotate = %v, want a new key", rot)
	}
	dealer.must(http.StatusOK, "GET", "/api/v1/routes/acme-hook", nil)
	dealer.as(newKey).must(http.StatusOK, "GET", "/api/v1/routes/acme-hook", nil)
	checkfor.Check(t, 30*time.Second, 100*time.Millisecond, func() error {
		if st, _ := dealer.do("GET", "/api/v1/routes/acme-hook", nil); st != http.StatusUnauthorized {
			return fmt.Errorf("old key after its grace: %d, want 401", st)
		}
		return nil
	})
	dealer.as(newKey).must(http.StatusOK, "GET", "/api/v1/routes/acme-hook", nil)
}

// A route with three problems answers 422 with all three JSON pointers; values of the wrong
// type and unknown keys too, each at its pointer; a PUT naming another route is refused.
func TestControlRouteValidation(t *testing.T) {
	cfg := testConfig(t, nil)
	r := startRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))

	f := func(method, path, body string, want ...string) {
		t.Helper()
		st, p := api.breaking().do(method, path, body)
		slices.Sort(want)
		if st != http.StatusUnprocessableEntity || !slices.Equal(pointers(p), want) {
			t.Errorf("%s %s %s = %d %v, want 422 at %q", method, path, body, st, p, want)
		}
	}
	f("POST", "/api/v1/routes", `{"name":"bad","url":"ftp://example.com","batch":{"max_messages":0},"concurrency":0}`,
		"/url", "/batch/max_messages", "/concurrency")
	f("POST", "/api/v1/routes", `{"name":"bad","url":"https://example.com","batch":{"max_messages":"many"},"retry":{"max_attempts":true},"colour":"red"}`,
		"/batch/max_messages", "/retry/max_attempts", "/colour")
	f("POST", "/api/v1/routes", `{"name":"bad","url":"https://example.com","headers":{"X-Key.v1":"[NOPE]"},"success_codes":[200,302]}`,
		"/headers/X-Key.v1", "/success_codes/1")
	f("POST", "/api/v1/routes", `{"url":"https://example.com"}`, "/name")
	api.must(http.StatusCreated, "PUT", "/api/v1/routes/good", `{"url":"https://example.com/x"}`)
	f("PUT", "/api/v1/routes/good", `{"name":"renamed","url":"https://example.com/x"}`, "/name")
	f("PATCH", "/api/v1/routes/good", `{"batch":{"max_bytes":0}}`, "/batch/max_bytes")
	if st, _ := api.breaking().raw("POST", "/api/v1/routes", "text/plain", `{"name":"x","url":"https://example.com"}`); st != http.StatusUnsupportedMediaType {
		t.Errorf("POST text/plain = %d, want 415", st)
	}
	if _, ok := api.must(http.StatusOK, "GET", "/api/v1/routes/good", nil)["spec"].(map[string]any); !ok {
		t.Errorf("GET route has no spec")
	}
	api.must(http.StatusNotFound, "GET", "/api/v1/routes/bad", nil)
}

// headerSink is an endpoint that records the Authorization header of each request.
type headerSink struct {
	*httptest.Server
	mu   sync.Mutex
	auth []string
}

func newHeaderSink(t *testing.T) *headerSink {
	s := &headerSink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		s.auth = append(s.auth, r.Header.Get("Authorization"))
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *headerSink) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.auth) == 0 {
		return ""
	}
	return s.auth[len(s.auth)-1]
}

// Route secrets: a literal secret is stored and used but never shown ("[redacted]"), sent back
// redacted it keeps the stored value, and it appears in no response and no log line; a secret
// read from the relay host needs a super key.
func TestControlRouteSecrets(t *testing.T) {
	const password = "pw-7c1e0d2f-never-shown"
	t.Setenv("FLEETRELAY_TEST_SECRET", "from-the-host")
	ep := newHeaderSink(t)
	cfg := testConfig(t, nil)
	r, logs := startLoggedRelay(t, cfg)
	boot := newAPI(t, r, bootstrapKey(t, cfg))
	boot.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "acme", "name": "Acme"})
	k := boot.must(http.StatusCreated, "POST", "/api/v1/keys", map[string]any{"name": "d", "account": "acme", "preset": "dealer"})
	dealer := boot.as(k["key"].(string))

	rt := dealer.must(http.StatusCreated, "POST", "/api/v1/routes", map[string]any{"name": "basic", "url": ep.URL + "/in",
		"batch": map[string]any{"linger": "1ms"}, "auth": map[string]any{"basic": map[string]any{"username": "u", "password": password}}})
	if got := field(rt, "spec", "auth", "basic", "password"); got != "[redacted]" {
		t.Errorf("password shown as %v, want [redacted]", got)
	}
	// A PATCH of another field, and a PUT of the GET's form, keep the stored password.
	dealer.must(http.StatusOK, "PATCH", "/api/v1/routes/basic", map[string]any{"batch": map[string]any{"max_messages": 10}})
	spec := field(dealer.must(http.StatusOK, "GET", "/api/v1/routes/basic", nil), "spec")
	dealer.must(http.StatusOK, "PUT", "/api/v1/routes/basic", spec)
	dealer.must(http.StatusCreated, "PUT", "/api/v1/devices/S1", map[string]any{})
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "S1"}, 1)
	send(t, d, "S1", 1)
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+password))
	checkfor.Check(t, 20*time.Second, 10*time.Millisecond, func() error {
		if got := ep.last(); got != want {
			return fmt.Errorf("Authorization = %q, want the stored password's", got)
		}
		return nil
	})

	// "[redacted]" where nothing is stored is a problem, not a password.
	if st, p := dealer.do("POST", "/api/v1/routes", map[string]any{"name": "r2", "url": ep.URL,
		"sign": map[string]any{"hmac": map[string]any{"key": "[redacted]"}}}); st != http.StatusUnprocessableEntity || !slices.Equal(pointers(p), []string{"/sign/hmac/key"}) {
		t.Errorf("[redacted] with nothing stored = %d %v, want 422 at /sign/hmac/key", st, p)
	}
	// Host secrets: refused to the dealer (403, at the pointer), taken from the super key.
	hostSecret := map[string]any{"name": "r3", "url": ep.URL, "sign": map[string]any{"hmac": map[string]any{"key": map[string]any{"env": "FLEETRELAY_TEST_SECRET"}}}}
	if st, p := dealer.do("POST", "/api/v1/routes", hostSecret); st != http.StatusForbidden || !slices.Equal(pointers(p), []string{"/sign/hmac/key"}) {
		t.Errorf("dealer's {env:} secret = %d %v, want 403 at /sign/hmac/key", st, p)
	}
	hostSecret["account"] = "acme"
	got := boot.must(http.StatusCreated, "POST", "/api/v1/routes", hostSecret)
	if src := field(got, "spec", "sign", "hmac", "key", "env"); src != "FLEETRELAY_TEST_SECRET" {
		t.Errorf("{env:} secret shown as %v, want its source", field(got, "spec", "sign", "hmac", "key"))
	}
	// The dealer may change that route as long as it keeps the super key's secret as it is.
	dealer.must(http.StatusOK, "PATCH", "/api/v1/routes/r3", map[string]any{"concurrency": 2})
	if st, _ := dealer.do("PATCH", "/api/v1/routes/r3", map[string]any{"sign": map[string]any{"hmac": map[string]any{"key": map[string]any{"env": nil, "file": "/etc/passwd"}}}}); st != http.StatusForbidden {
		t.Errorf("dealer's {file:} secret = %d, want 403", st)
	}

	for _, where := range []struct{ name, text string }{{"responses", boot.seen.String() + dealer.seen.String()}, {"log", logs.String()}} {
		for _, secret := range []string{password, "from-the-host", base64.StdEncoding.EncodeToString([]byte("u:" + password))} {
			if strings.Contains(where.text, secret) {
				t.Errorf("a secret appears in the %s", where.name)
			}
		}
	}
}

// Resources of the config file are read-only through the API: writes answer 409, reads show them
// with source config.
func TestControlConfigOwned(t *testing.T) {
	sink := startSink(t)
	cfg := testConfig(t, sink)
	cfg.Fleet = []config.Device{{ID: "cfg-dev", Tags: []string{"a"}}}
	r := startRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))

	rt := api.must(http.StatusOK, "GET", "/api/v1/routes/test", nil)
	if field(rt, "meta", "source") != "config" || field(rt, "status", "running") != true {
		t.Errorf("GET config route = %v, want source config, running", rt)
	}
	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/api/v1/routes/test", `{"url":"https://example.com"}`},
		{"PATCH", "/api/v1/routes/test", `{"enabled":false}`},
		{"DELETE", "/api/v1/routes/test", ``},
		{"POST", "/api/v1/routes", `{"name":"test","url":"https://example.com"}`},
		{"PUT", "/api/v1/devices/CFG-DEV", `{}`},
		{"PATCH", "/api/v1/devices/cfg-dev", `{"tags":["b"]}`},
		{"DELETE", "/api/v1/devices/cfg-dev", ``},
	} {
		var body any
		if c.body != "" {
			body = c.body
		}
		st, p := api.do(c.method, c.path, body)
		if st != http.StatusConflict || !strings.Contains(fmt.Sprint(p["title"], p["detail"]), "config file") {
			t.Errorf("%s %s = %d %v, want 409 owned by the config file", c.method, c.path, st, p)
		}
	}
	dev := api.must(http.StatusOK, "GET", "/api/v1/devices/cfg-dev", nil)
	if field(dev, "id") != "CFG-DEV" || field(dev, "meta", "source") != "config" {
		t.Errorf("GET config device = %v", dev)
	}
	// The config's route still delivers, as before.
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "cfg-dev"}, 1)
	waitRecords(t, sink, "cfg-dev", send(t, d, "cfg-dev", 2))
}

// A route's life through the API: created, its URL changed (later messages go to the new one),
// disabled (it takes nothing new; a delete is refused while it holds messages), enabled again
// (what it held goes out), and deleted; a forced delete discards what it holds and says how much.
func TestControlRouteLifecycle(t *testing.T) {
	sink, err := loadgen.StartSinkWith(loadgen.SinkOptions{KeepMessages: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	cfg := testConfig(t, nil)
	r := startRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))
	api.must(http.StatusCreated, "POST", "/api/v1/routes", map[string]any{"name": "life", "url": sink.URL() + "/v1/[SERIAL]", "batch": map[string]any{"linger": "1ms"}})
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "L1"}, 1)
	waitRecords(t, sink, "L1", send(t, d, "L1", 3))

	// A new URL, If-Match'd on the current revision; a stale revision is refused.
	cur := api.must(http.StatusOK, "GET", "/api/v1/routes/life", nil)
	rev := fmt.Sprint(field(cur, "meta", "revision"))
	patch := func(body, ifMatch string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("PATCH", api.base+"/api/v1/routes/life", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+api.key)
		req.Header.Set("Content-Type", "application/merge-patch+json")
		req.Header.Set("If-Match", ifMatch)
		resp, err := api.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := patch(`{"url":"`+sink.URL()+`/v2/[SERIAL]"}`, `"`+rev+`"`); resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == `"`+rev+`"` {
		t.Fatalf("PATCH with If-Match = %d (ETag %s), want 200 with a new revision", resp.StatusCode, resp.Header.Get("ETag"))
	}
	if resp := patch(`{"concurrency":2}`, `"`+rev+`"`); resp.StatusCode != http.StatusPreconditionFailed {
		t.Errorf("PATCH with a stale If-Match = %d, want 412", resp.StatusCode)
	}
	seqs := send(t, d, "L1", 2)
	waitRecords(t, sink, "L1", seqs)
	for _, m := range sink.Messages() {
		if m.Serial == "L1" && slices.Contains(seqs, m.Seq) && !strings.HasPrefix(m.Path, "/v2/") {
			t.Errorf("seq %d went to %s after the URL changed to /v2/", m.Seq, m.Path)
		}
	}

	// Messages held while the endpoint fails, then the route disabled: the delete is refused
	// with the counts; what is sent while it is disabled is not taken; enabled again (at a
	// working URL), it delivers what it held.
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	api.must(http.StatusOK, "PATCH", "/api/v1/routes/life", map[string]any{"url": down.URL + "/[SERIAL]"})
	held := send(t, d, "L1", 4)
	backlog := func(route string) any {
		return field(api.must(http.StatusOK, "GET", "/api/v1/routes/"+route, nil), "holdings", "backlog")
	}
	api.must(http.StatusOK, "PATCH", "/api/v1/routes/life", map[string]any{"enabled": false})
	if st := field(api.must(http.StatusOK, "GET", "/api/v1/routes/life", nil), "status", "running"); st != false {
		t.Errorf("disabled route running = %v, want false", st)
	}
	skipped := send(t, d, "L1", 2)
	if b := backlog("life"); b != float64(4) {
		t.Errorf("disabled route's backlog = %v, want the 4 it held (and none of what came while disabled)", b)
	}
	st, p := api.do("DELETE", "/api/v1/routes/life", nil)
	if st != http.StatusConflict || !strings.Contains(fmt.Sprint(p["detail"]), "4 undelivered") {
		t.Errorf("DELETE of a route holding 4 = %d %v, want 409 with the count", st, p)
	}
	api.must(http.StatusOK, "PATCH", "/api/v1/routes/life", map[string]any{"enabled": true, "url": sink.URL() + "/v3/[SERIAL]"})
	waitRecords(t, sink, "L1", held)
	checkfor.Check(t, 20*time.Second, 10*time.Millisecond, func() error {
		if b := backlog("life"); b != float64(0) {
			return fmt.Errorf("backlog %v after delivery, want 0", b)
		}
		return nil
	})
	for _, s := range skipped {
		if n := sink.Count(loadgen.MsgKey{Device: "L1", Seq: s}); n != 0 {
			t.Errorf("seq %d, sent while the route was disabled, was delivered", s)
		}
	}
	api.must(http.StatusOK, "DELETE", "/api/v1/routes/life", nil)
	api.must(http.StatusNotFound, "GET", "/api/v1/routes/life", nil)

	// A forced delete discards exactly what the route holds.
	api.must(http.StatusCreated, "POST", "/api/v1/routes", map[string]any{"name": "doomed", "url": down.URL + "/[SERIAL]"})
	send(t, d, "L1", 5)
	if b := backlog("doomed"); b != float64(5) {
		t.Errorf("doomed backlog = %v, want 5", b)
	}
	if st, _ := api.do("DELETE", "/api/v1/routes/doomed", nil); st != http.StatusConflict {
		t.Errorf("DELETE without force of a route holding 5 = %d, want 409", st)
	}
	del := api.must(http.StatusOK, "DELETE", "/api/v1/routes/doomed?force=true", nil)
	if got := field(del, "discarded", "backlog"); got != float64(5) {
		t.Errorf("forced DELETE = %v, want 5 discarded", del)
	}
	// Every change was audited, and only the changes.
	_, metrics := httpGet(t, "http://"+r.AdminAddr().String()+"/metrics")
	for _, want := range []string{
		`fleetrelay_api_changes_total{action="create",kind="routes"} 2`,
		`fleetrelay_api_changes_total{action="update",kind="routes"} 4`,
		`fleetrelay_api_changes_total{action="delete",kind="routes"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	list := api.must(http.StatusOK, "GET", "/api/v1/routes", nil)
	if data, _ := list["data"].([]any); len(data) != 0 {
		t.Errorf("routes after the deletes = %v, want none", data)
	}
}

// Devices through the API: create, replace, patch, read with live state, list with filters and
// pages, delete; identities are case-insensitive and shown upper case; an account's key sees
// only its account's devices.
func TestControlDevices(t *testing.T) {
	cfg := testConfig(t, nil)
	r := startRelay(t, cfg)
	boot := newAPI(t, r, bootstrapKey(t, cfg))
	boot.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "acme", "name": "Acme"})
	boot.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "other", "name": "Other"})
	k := boot.must(http.StatusCreated, "POST", "/api/v1/keys", map[string]any{"name": "d", "account": "acme", "preset": "dealer"})
	dealer := boot.as(k["key"].(string))

	v := dealer.must(http.StatusCreated, "PUT", "/api/v1/devices/dev-a", map[string]any{"imei": "356938035643809", "tags": []string{"cold"}, "groups": []string{"g1"}, "custom1": "x"})
	if field(v, "id") != "DEV-A" || field(v, "account") != "acme" || field(v, "meta", "revision") != float64(1) {
		t.Errorf("PUT new device = %v", v)
	}
	v = dealer.must(http.StatusOK, "PUT", "/api/v1/devices/Dev-A", map[string]any{"id": "dev-a", "tags": []string{"cold", "frozen"}, "groups": []string{"g1"}})
	if field(v, "imei") != nil || field(v, "meta", "revision") != float64(2) {
		t.Errorf("PUT replaces the whole device: %v", v)
	}
	v = dealer.must(http.StatusOK, "PATCH", "/api/v1/devices/DEV-A", map[string]any{"custom2": "y", "groups": nil})
	if field(v, "custom2") != "y" || field(v, "groups") != nil || len(field(v, "tags").([]any)) != 2 {
		t.Errorf("PATCH = %v, want custom2 set, groups removed, tags kept", v)
	}
	dealer.must(http.StatusCreated, "PUT", "/api/v1/devices/dev-b", map[string]any{"tags": []string{"cold"}, "groups": []string{"g2"}})
	dealer.must(http.StatusCreated, "PUT", "/api/v1/devices/dev-c", map[string]any{"groups": []string{"g2"}})
	boot.must(http.StatusCreated, "PUT", "/api/v1/devices/dev-z", map[string]any{"account": "other", "tags": []string{"cold"}})

	if st, p := dealer.breaking().do("PUT", "/api/v1/devices/dev-a", map[string]any{"id": "dev-b", "imei": "12", "custom3": "a\nb", "colour": 1}); st != http.StatusUnprocessableEntity {
		t.Errorf("bad device = %d %v, want 422", st, p)
	} else if got := pointers(p); !slices.Equal(got, []string{"/colour"}) {
		t.Errorf("bad device keys = %q, want /colour (decoding first)", got)
	}
	if st, p := dealer.do("PUT", "/api/v1/devices/dev-a", map[string]any{"id": "dev-b", "imei": "12", "custom3": "a\nb"}); st != http.StatusUnprocessableEntity || !slices.Equal(pointers(p), []string{"/custom3", "/id", "/imei"}) {
		t.Errorf("bad device values = %d %v, want 422 at /custom3 /id /imei", st, p)
	}

	ids := func(c *apiClient, query string) []string {
		t.Helper()
		var out []string
		cursor := ""
		for page := 0; ; page++ {
			q := query + "&limit=2"
			if cursor != "" {
				q += "&cursor=" + cursor
			}
			l := c.must(http.StatusOK, "GET", "/api/v1/devices?"+q, nil)
			data, _ := l["data"].([]any)
			for _, d := range data {
				out = append(out, d.(map[string]any)["id"].(string))
			}
			cursor, _ = l["next_cursor"].(string)
			if cursor == "" || page > 10 {
				return out
			}
		}
	}
	for _, c := range []struct {
		who   *apiClient
		query string
		want  []string
	}{
		{dealer, "", []string{"DEV-A", "DEV-B", "DEV-C"}},
		{dealer, "tag=cold", []string{"DEV-A", "DEV-B"}},
		{dealer, "group=g2", []string{"DEV-B", "DEV-C"}},
		{dealer, "account=other", nil},
		{boot, "", []string{"DEV-A", "DEV-B", "DEV-C", "DEV-Z"}},
		{boot, "tag=cold&account=other", []string{"DEV-Z"}},
	} {
		if got := ids(c.who, c.query); !slices.Equal(got, c.want) {
			t.Errorf("GET /api/v1/devices?%s = %q, want %q", c.query, got, c.want)
		}
	}

	dealer.must(http.StatusNotFound, "GET", "/api/v1/devices/dev-z", nil)
	dealer.must(http.StatusNotFound, "PATCH", "/api/v1/devices/dev-z", map[string]any{"custom1": "x"})
	dealer.must(http.StatusNotFound, "DELETE", "/api/v1/devices/dev-z", nil)

	// Live state: a connected device shows its remote address and last seq.
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "dev-b"}, 1)
	send(t, d, "dev-b", 2)
	v = dealer.must(http.StatusOK, "GET", "/api/v1/devices/dev-b", nil)
	if field(v, "state", "connected") != true || field(v, "state", "last_seq") != float64(2) || field(v, "state", "remote") == nil || field(v, "state", "last_seen") == nil {
		t.Errorf("GET connected device = %v", v)
	}
	dealer.must(http.StatusNoContent, "DELETE", "/api/v1/devices/dev-b", nil)
	dealer.must(http.StatusNotFound, "GET", "/api/v1/devices/dev-b", nil)
}

// After a restart the API's routes run again with what they held: a route whose endpoint was
// down keeps its backlog and delivers it once pointed elsewhere. A stored route that no longer
// compiles (its CA file is gone) does not stop the relay: it is reported by its status, and the
// other routes run.
func TestControlStoredRoutesAfterRestart(t *testing.T) {
	sink := startSink(t)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	cfg := testConfig(t, nil)
	ca := newTestCA(t).file
	r := startRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))
	api.must(http.StatusCreated, "POST", "/api/v1/routes", map[string]any{"name": "tls", "url": "https://127.0.0.1:1/x", "tls": map[string]any{"ca_file": ca}})
	api.must(http.StatusCreated, "POST", "/api/v1/routes", map[string]any{"name": "ok", "url": sink.URL() + "/ok/[SERIAL]", "batch": map[string]any{"linger": "1ms"}})
	api.must(http.StatusCreated, "POST", "/api/v1/routes", map[string]any{"name": "held", "url": down.URL + "/[SERIAL]", "batch": map[string]any{"linger": "1ms"}})
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "B0"}, 1)
	held := send(t, d, "B0", 3)
	waitRecords(t, sink, "B0", held) // through ok
	d.Close()
	if err := relaytest.Shutdown(r); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(ca); err != nil {
		t.Fatal(err)
	}
	r = startRelay(t, cfg)
	api = newAPI(t, r, api.key)
	rt := api.must(http.StatusOK, "GET", "/api/v1/routes/tls", nil)
	if field(rt, "status", "running") != false || !strings.Contains(fmt.Sprint(field(rt, "status", "error")), "ca_file") {
		t.Errorf("broken route's status = %v, want not running, with the ca_file error", field(rt, "status"))
	}
	if b := field(api.must(http.StatusOK, "GET", "/api/v1/routes/held", nil), "holdings", "backlog"); b != float64(3) {
		t.Errorf("held's backlog after the restart = %v, want 3", b)
	}
	api.must(http.StatusOK, "PATCH", "/api/v1/routes/held", map[string]any{"url": sink.URL() + "/held/[SERIAL]"})
	checkfor.Check(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, s := range held {
			if n := sink.Count(loadgen.MsgKey{Device: "B0", Seq: s}); n != 2 {
				return fmt.Errorf("B0 seq %d delivered %d times, want twice (ok, then held)", s, n)
			}
		}
		return nil
	})
	d = connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "B1"}, 1)
	waitRecords(t, sink, "B1", send(t, d, "B1", 2))
	// The API's routes that run at start have their store gauges, as the config file's do.
	// The sink has B1's records before route ok's success is committed: its backlog reaches 0 a
	// moment later.
	checkfor.Check(t, 10*time.Second, 10*time.Millisecond, func() error {
		const series = `fleetrelay_route_backlog_messages{route="ok"}`
		if v, err := metricValue(t, r.AdminAddr().String(), series); err != nil || v != 0 {
			return fmt.Errorf("/metrics %s = %v (%v), want 0", series, v, err)
		}
		return nil
	})
	if _, metrics := httpGet(t, "http://"+r.AdminAddr().String()+"/metrics"); strings.Contains(metrics, `route="tls"`) {
		t.Errorf("/metrics has series of the broken route tls")
	}
}

// rightsKeys makes the accounts of a rights table, acme and other, and returns three keys: acme's
// dealer key (held), other's dealer key, and none, a key of acme named name holding only rights.
func rightsKeys(t *testing.T, boot *apiClient, name string, rights ...string) (held, other, none string) {
	t.Helper()
	key := func(body map[string]any) string {
		t.Helper()
		return boot.must(http.StatusCreated, "POST", "/api/v1/keys", body)["key"].(string)
	}
	boot.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "acme", "name": "Acme"})
	boot.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "other", "name": "Other"})
	held = key(map[string]any{"name": "acme dealer", "account": "acme", "preset": "dealer"})
	other = key(map[string]any{"name": "other dealer", "account": "other", "preset": "dealer"})
	none = key(map[string]any{"name": name, "account": "acme", "rights": rights})
	return held, other, none
}

// The rights table of the routes and devices endpoints: no key → 401; a key of another account
// holding the right → 404 (its lists are empty; a route it would create in this account → 422
// at /account); a key of the account without the right → 403; the account's dealer key → 2xx.
func TestControlRights(t *testing.T) {
	cfg := testConfig(t, nil)
	r := startRelay(t, cfg)
	boot := newAPI(t, r, bootstrapKey(t, cfg))
	held, other, none := rightsKeys(t, boot, "acme commands", "commands:*", "deadLetters:read")
	acme := boot.as(held)
	acme.must(http.StatusCreated, "POST", "/api/v1/routes", map[string]any{"name": "r-acme", "url": "https://example.com/a"})
	acme.must(http.StatusCreated, "PUT", "/api/v1/devices/d-acme", map[string]any{"tags": []string{"t"}})

	route := map[string]any{"url": "https://example.com/b"}
	for _, c := range []struct {
		method, path string
		body         any
		// statuses for no key, another account's key, a key without the right, the held key
		noKey, otherAccount, missing, ok int
	}{
		{"GET", "/api/v1/routes", nil, 401, 200, 403, 200},
		{"POST", "/api/v1/routes", map[string]any{"name": "r-new", "url": "https://example.com/c", "account": "acme"}, 401, 422, 403, 201},
		{"GET", "/api/v1/routes/r-acme", nil, 401, 404, 403, 200},
		{"PUT", "/api/v1/routes/r-acme", route, 401, 404, 403, 200},
		{"PATCH", "/api/v1/routes/r-acme", map[string]any{"concurrency": 2}, 401, 404, 403, 200},
		{"GET", "/api/v1/devices", nil, 401, 200, 403, 200},
		{"GET", "/api/v1/devices/d-acme", nil, 401, 404, 403, 200},
		{"PUT", "/api/v1/devices/d-acme", map[string]any{"tags": []string{"u"}}, 401, 404, 403, 200},
		{"PATCH", "/api/v1/devices/d-acme", map[string]any{"custom1": "x"}, 401, 404, 403, 200},
		{"DELETE", "/api/v1/devices/d-acme", nil, 401, 404, 403, 204},
		{"DELETE", "/api/v1/routes/r-acme", nil, 401, 404, 403, 200},
	} {
		for _, k := range []struct {
			who  string
			key  string
			want int
		}{{"no key", "", c.noKey}, {"another account's key", other, c.otherAccount}, {"a key without the right", none, c.missing}, {"the account's key", held, c.ok}} {
			st, v := boot.as(k.key).do(c.method, c.path, c.body)
			if st != k.want {
				t.Errorf("%s %s with %s = %d %v, want %d", c.method, c.path, k.who, st, v, k.want)
			}
			if c.method == "GET" && c.path[len(c.path)-1] == 's' && k.who == "another account's key" {
				if data, _ := v["data"].([]any); len(data) != 0 {
					t.Errorf("%s %s with %s lists %v, want nothing of another account", c.method, c.path, k.who, data)
				}
			}
		}
	}
}
