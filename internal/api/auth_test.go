package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/api"
	"github.com/fleetrelay/fleetrelay/internal/deadletter"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// storeReplay replays through the store, by route name.
type storeReplay struct{ e *env }

func (r storeReplay) Replay(route string) (int, int, error) {
	id, ok := r.e.st.Routes()[route]
	if !ok {
		return 0, 0, fmt.Errorf("no route %q", route)
	}
	return r.e.st.Replay(id)
}

// withDeadLetters serves the dead-letter endpoints for two routes: acme-route of account acme
// and other-route of account other.
func withDeadLetters(e *env) {
	accounts := map[string]string{"acme-route": "acme", "other-route": "other"}
	for name := range accounts {
		if _, err := e.st.RouteID(name); err != nil {
			e.t.Fatal(err)
		}
	}
	deadletter.Register(e.s, e.st, storeReplay{e}, deadletter.RoutesFunc(func(name string) (uint16, string, bool) {
		acc, ok := accounts[name]
		if !ok {
			return 0, "", false
		}
		return e.st.Routes()[name], acc, true
	}), nopLog())
}

// The rights table: every endpoint of accounts, keys and dead letters × {no key, a key of
// another account, a key without the right, a key with it} → 401, 404 (403 where the key
// would create something in another account or a global resource), 403, 2xx.
func TestRightsTable(t *testing.T) {
	e := newEnv(t, envOption{prepare: withDeadLetters})
	all := []string{"accounts:*", "keys:*", "deadLetters:*"}
	for _, a := range []string{"acme", "other", "empty"} {
		e.want(e.super, "POST", "/api/v1/accounts", map[string]string{"id": a}, 201, nil)
	}
	_, global := e.newKey(e.super, "global", "", all, "")
	_, acme := e.newKey(e.super, "acme-admin", "acme", all, "")
	_, other := e.newKey(e.super, "other-admin", "other", all, "")
	noneID, none := e.newKey(e.super, "acme-devices", "acme", []string{"devices:read"}, "")
	rotID, _ := e.newKey(e.super, "rotate-me", "acme", []string{"deadLetters:read"}, "")
	delID, _ := e.newKey(e.super, "delete-me", "acme", []string{"deadLetters:read"}, "")

	type row struct {
		method, path string
		body         any
		held         string // the key holding the right
		// statuses for no key, another account's key, a key without the right, the held key
		noKey, otherAccount, missing, ok int
	}
	rows := []row{
		{"GET", "/api/v1/openapi.json", nil, acme, 401, 200, 200, 200},
		{"GET", "/api/v1/accounts", nil, acme, 401, 200, 403, 200},
		{"GET", "/api/v1/accounts/acme", nil, acme, 401, 404, 403, 200},
		{"PUT", "/api/v1/accounts/acme", map[string]string{"name": "Acme Inc."}, acme, 401, 404, 403, 200},
		{"POST", "/api/v1/accounts", map[string]string{"id": "new"}, global, 401, 403, 403, 201},
		{"DELETE", "/api/v1/accounts/empty", nil, global, 401, 404, 403, 204},
		{"GET", "/api/v1/keys", nil, acme, 401, 200, 403, 200},
		{"POST", "/api/v1/keys", keyBody("made", "acme", []string{"deadLetters:read"}, ""), acme, 401, 403, 403, 201},
		{"GET", "/api/v1/keys/" + noneID, nil, acme, 401, 404, 403, 200},
		{"POST", "/api/v1/keys/" + rotID + "/rotate", map[string]string{"grace": "1h"}, acme, 401, 404, 403, 201},
		{"DELETE", "/api/v1/keys/" + delID, nil, acme, 401, 404, 403, 204},
		{"GET", "/api/v1/routes/acme-route/dead-letters", nil, acme, 401, 404, 403, 200},
		{"POST", "/api/v1/routes/acme-route/dead-letters/replay", nil, acme, 401, 404, 403, 200},
		{"DELETE", "/api/v1/routes/acme-route/dead-letters", nil, acme, 401, 404, 403, 200},
	}
	for _, r := range rows {
		for _, c := range []struct {
			who, key string
			want     int
		}{{"no key", "", r.noKey}, {"another account's key", other, r.otherAccount}, {"a key without the right", none, r.missing}, {"the right key", r.held, r.ok}} {
			status, body, h := e.do(c.key, r.method, r.path, r.body)
			if status != c.want {
				t.Errorf("%s %s with %s = %d %s, want %d", r.method, r.path, c.who, status, body, c.want)
			}
			if status == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s with %s: 401 without WWW-Authenticate: Bearer", r.method, r.path, c.who)
			}
			if status >= 400 && h.Get("Content-Type") != "application/problem+json" {
				t.Errorf("%s %s with %s: %d as %q, want a problem", r.method, r.path, c.who, status, h.Get("Content-Type"))
			}
		}
	}

	// The lists another account's key may read show only its own.
	var accounts api.List[registry.Account]
	e.want(other, "GET", "/api/v1/accounts", nil, 200, &accounts)
	if len(accounts.Data) != 1 || accounts.Data[0].ID != "other" {
		t.Errorf("another account's key lists accounts %+v, want only its own", accounts.Data)
	}
	var keys api.List[api.KeyView]
	e.want(other, "GET", "/api/v1/keys", nil, 200, &keys)
	if len(keys.Data) != 1 || keys.Data[0].Name != "other-admin" {
		t.Errorf("another account's key lists keys %+v, want only its own", keys.Data)
	}
	// Token: <key> is accepted as well as Authorization: Bearer.
	if status, body, _ := e.doWith("", "GET", "/api/v1/accounts/acme", nil, func(r *http.Request) { r.Header.Set("Token", acme) }); status != 200 {
		t.Errorf("GET with a Token header = %d %s, want 200", status, body)
	}
	// Every write was audited.
	if got := e.counter("fleetrelay_api_changes_total", "kind", "key", "action", "rotate"); got != 1 {
		t.Errorf("rotations audited = %v, want 1", got)
	}
	if logs := e.log.String(); !strings.Contains(logs, "msg=audit") || !strings.Contains(logs, "action=delete kind=account id=empty") {
		t.Errorf("the log has no audit line of the account's deletion:\n%s", logs)
	}
	if got := e.counter("fleetrelay_api_auth_failures_total", "reason", "missing"); got != float64(len(rows)) {
		t.Errorf("auth failures (missing) = %v, want %d", got, len(rows))
	}
}

// A key never grants what it does not hold: rights, a preset, another account, a global key;
// only a global key creates accounts.
func TestGrantRules(t *testing.T) {
	e := newEnv(t, envOption{})
	for _, a := range []string{"acme", "other"} {
		e.want(e.super, "POST", "/api/v1/accounts", map[string]string{"id": a}, 201, nil)
	}
	_, dealer := e.newKey(e.super, "dealer", "acme", nil, "dealer")
	_, keyAdmin := e.newKey(e.super, "key-admin", "acme", []string{"keys:*", "routes:read"}, "")
	f := func(by string, body map[string]any, want int) {
		t.Helper()
		status, b, _ := e.do(by, "POST", "/api/v1/keys", body)
		if status != want {
			t.Errorf("POST /api/v1/keys %v = %d %s, want %d", body, status, b, want)
		}
	}
	f(dealer, keyBody("x", "", []string{"routes:read"}, ""), 403)              // dealer holds no keys right
	f(keyAdmin, keyBody("x", "", []string{"routes:read"}, ""), 201)            // its own account by default
	f(keyAdmin, keyBody("x", "", []string{"routes:update"}, ""), 403)          // not held
	f(keyAdmin, keyBody("x", "", []string{"routes:*"}, ""), 403)               // the wildcard is more than held
	f(keyAdmin, keyBody("x", "", nil, "dealer"), 403)                          // a preset it does not hold
	f(keyAdmin, keyBody("x", "other", []string{"routes:read"}, ""), 403)       // another account
	f(keyAdmin, keyBody("x", "", []string{"keys:read", "nope:read"}, ""), 422) // not a right
	f(e.super, keyBody("x", "acme", nil, "super"), 422)                        // super is global
	f(e.super, keyBody("x", "nope", []string{"routes:read"}, ""), 422)         // no such account
	f(e.super, keyBody("", "acme", []string{"routes:read"}, ""), 422)          // a name is required
	f(e.super, keyBody("x", "", []string{"routes:read"}, "dealer"), 422)       // rights or a preset
	f(e.super, keyBody("x", "", []string{"*:read"}, ""), 201)                  // a global key, by a global one
	f(e.super, map[string]any{"name": "x", "preset": "dealer", "expires_at": "2020-01-01T00:00:00Z"}, 422)

	status, body, _ := e.do(keyAdmin, "POST", "/api/v1/keys", keyBody("x", "", []string{"keys:read", "nope:read"}, ""))
	var p api.Problem
	if err := json.Unmarshal(body, &p); err != nil || status != 422 || len(p.Errors) != 1 || p.Errors[0].Pointer != "/rights" {
		t.Errorf("a bad right answers %d %s, want 422 pointing at /rights", status, body)
	}
	// An account's key cannot create accounts even with the right.
	_, accAdmin := e.newKey(e.super, "acc-admin", "acme", []string{"accounts:*"}, "")
	e.want(accAdmin, "POST", "/api/v1/accounts", map[string]string{"id": "x"}, 403, nil)
	e.wantInvalid(e.super, "POST", "/api/v1/accounts", map[string]string{"id": "bad id"}, 422)
	e.want(e.super, "POST", "/api/v1/accounts", map[string]string{"id": "acme"}, 409, nil)
}

// Keys: shown once, never their hash; lists paginate; an account is deleted only once nothing
// belongs to it.
func TestKeysAndAccounts(t *testing.T) {
	e := newEnv(t, envOption{})
	e.want(e.super, "POST", "/api/v1/accounts", map[string]string{"id": "acme", "name": "Acme"}, 201, nil)
	var ids []string
	for i := range 5 {
		id, key := e.newKey(e.super, fmt.Sprintf("k%d", i), "acme", []string{"routes:read"}, "")
		if !strings.HasPrefix(key, access.KeyPrefix) || len(key) != len(access.KeyPrefix)+43 {
			t.Errorf("key %q: want fr_ and 43 base64url characters", key)
		}
		ids = append(ids, id)
	}
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		var page api.List[api.KeyView]
		body := e.want(e.super, "GET", "/api/v1/keys?limit=2&cursor="+cursor, nil, 200, &page)
		if strings.Contains(string(body), `"hash"`) || strings.Contains(string(body), `"key"`) {
			t.Fatalf("a key listing shows a hash or a key: %s", body)
		}
		for _, k := range page.Data {
			got = append(got, k.ID)
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	slices.Sort(ids)
	if !slices.Equal(got, ids) {
		t.Errorf("pages listed %v, want %v", got, ids)
	}
	e.want(e.super, "GET", "/api/v1/keys?cursor=bogus", nil, 400, nil)
	e.wantInvalid(e.super, "GET", "/api/v1/keys?limit=0", nil, 400)

	e.want(e.super, "DELETE", "/api/v1/accounts/acme", nil, 409, nil)
	for _, id := range ids {
		e.want(e.super, "DELETE", "/api/v1/keys/"+id, nil, 204, nil)
	}
	e.want(e.super, "GET", "/api/v1/keys/"+ids[0], nil, 404, nil)
	e.want(e.super, "DELETE", "/api/v1/accounts/acme", nil, 204, nil)
	e.want(e.super, "GET", "/api/v1/accounts/acme", nil, 404, nil)
}

// Rotation: a new key with the same name, account and rights; the old one works until the
// grace ends, then answers 401 (expired).
func TestRotation(t *testing.T) {
	e := newEnv(t, envOption{})
	e.want(e.super, "POST", "/api/v1/accounts", map[string]string{"id": "acme"}, 201, nil)
	oldID, old := e.newKey(e.super, "service", "acme", []string{"keys:*", "accounts:read"}, "")
	var nk api.KeyView
	e.want(old, "POST", "/api/v1/keys/"+oldID+"/rotate", map[string]string{"grace": "24h"}, 201, &nk)
	e.secrets = append(e.secrets, nk.Key)
	if nk.ID == oldID || nk.Key == old || nk.Name != "service" || nk.Account != "acme" || !slices.Equal(nk.Rights, []string{"keys:*", "accounts:read"}) {
		t.Fatalf("rotated key = %+v, want a new key with the old one's name, account and rights", nk)
	}
	var ok api.KeyView
	e.want(nk.Key, "GET", "/api/v1/keys/"+oldID, nil, 200, &ok)
	if want := e.clock.Now().Add(24 * time.Hour); !ok.ExpiresAt.Equal(want) {
		t.Errorf("old key expires at %v, want %v", ok.ExpiresAt, want)
	}
	e.clock.Add(23 * time.Hour)
	e.want(old, "GET", "/api/v1/accounts/acme", nil, 200, nil) // within the grace
	e.clock.Add(time.Hour)
	status, body, h := e.do(old, "GET", "/api/v1/accounts/acme", nil)
	if status != 401 || !strings.Contains(string(body), "expired") || !strings.Contains(h.Get("WWW-Authenticate"), "invalid_token") {
		t.Errorf("old key after the grace = %d %s, want 401 expired", status, body)
	}
	e.want(nk.Key, "GET", "/api/v1/accounts/acme", nil, 200, nil)
	e.want(nk.Key, "POST", "/api/v1/keys/"+oldID+"/rotate", nil, 409, nil) // an expired key is not rotated
	if got := e.counter("fleetrelay_api_auth_failures_total", "reason", "expired"); got != 1 {
		t.Errorf("expired failures = %v, want 1", got)
	}
	// A rotation without grace ends the old key at once.
	var third api.KeyView
	e.want(nk.Key, "POST", "/api/v1/keys/"+nk.ID+"/rotate", nil, 201, &third)
	e.secrets = append(e.secrets, third.Key)
	e.want(nk.Key, "GET", "/api/v1/accounts/acme", nil, 401, nil)
	e.want(third.Key, "GET", "/api/v1/accounts/acme", nil, 200, nil)
}

// Requests naming a host that is not loopback nor in admin.hosts are refused (DNS
// rebinding); /healthz answers any host.
func TestHostRefusal(t *testing.T) {
	e := newEnv(t, envOption{opts: []api.Option{api.WithHosts([]string{"relay.example.com", "10.1.2.3"})}})
	host := func(h string) func(*http.Request) { return func(r *http.Request) { r.Host = h } }
	f := func(h, path string, want int) {
		t.Helper()
		if status, body, _ := e.doWith(e.super, "GET", path, nil, host(h)); status != want {
			t.Errorf("GET %s with Host %q = %d %s, want %d", path, h, status, body, want)
		}
	}
	f("evil.example", "/api/v1/accounts", 421)
	f("evil.example:8080", "/metrics", 421)
	f("127.0.0.1.evil.example", "/api/v1/accounts", 421)
	f("evil.example", "/healthz", 200)
	f("localhost:1234", "/api/v1/accounts", 200)
	f("127.9.9.9", "/api/v1/accounts", 200)
	f("[::1]:80", "/api/v1/accounts", 200)
	f("RELAY.example.com:8080", "/api/v1/accounts", 200)
	f("10.1.2.3", "/api/v1/accounts", 200)
}

// Writes take JSON only: a cross-site text/plain form post never runs.
func TestJSONOnlyWrites(t *testing.T) {
	e := newEnv(t, envOption{})
	ct := func(v string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Content-Type", v); invalid(r) }
	}
	for _, v := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"} {
		if status, _, _ := e.doWith(e.super, "POST", "/api/v1/accounts", `{"id":"x"}`, ct(v)); status != 415 {
			t.Errorf("POST as %s = %d, want 415", v, status)
		}
	}
	if _, ok := e.reg.Account("x"); ok {
		t.Fatal("a text/plain POST created an account")
	}
	e.wantInvalid(e.super, "POST", "/api/v1/accounts", `{"id":"x"} {"id":"y"}`, 400)
	e.wantInvalid(e.super, "POST", "/api/v1/accounts", `{"id":"x","bogus":1}`, 400)
	e.want(e.super, "POST", "/api/v1/accounts", `{"id":"x"}`, 201, nil)
	big := `{"id":"y","name":"` + strings.Repeat("a", 1<<20) + `"}`
	e.wantInvalid(e.super, "POST", "/api/v1/accounts", big, 413)
}

// /metrics is open on a loopback listener; elsewhere it needs a key holding *:read, unless
// open_metrics.
func TestMetricsRule(t *testing.T) {
	loop := newEnv(t, envOption{})
	loop.want("", "GET", "/metrics", nil, 200, nil)

	e := newEnv(t, envOption{addr: "0.0.0.0:0"}) // not loopback: reached here through 127.0.0.1
	e.want(e.super, "POST", "/api/v1/accounts", map[string]string{"id": "acme"}, 201, nil)
	_, reader := e.newKey(e.super, "reader", "", []string{"*:read"}, "")
	_, keys := e.newKey(e.super, "keys", "", []string{"keys:*"}, "")
	_, acmeReader := e.newKey(e.super, "acme-reader", "acme", []string{"*:read"}, "")
	e.want("", "GET", "/metrics", nil, 401, nil)
	e.want(keys, "GET", "/metrics", nil, 403, nil)
	body := e.want(reader, "GET", "/metrics", nil, 200, nil)
	if !strings.Contains(string(body), "fleetrelay_api_auth_failures_total") {
		t.Errorf("/metrics lacks the auth failures counter:\n%s", body)
	}
	e.want(acmeReader, "GET", "/metrics", nil, 200, nil)

	open := newEnv(t, envOption{addr: "0.0.0.0:0", opts: []api.Option{api.WithOpenMetrics(true)}})
	open.want("", "GET", "/metrics", nil, 200, nil)
}

// An endpoint of right api.Super (pprof) answers only a global key holding every right.
func TestSuperOnly(t *testing.T) {
	e := newEnv(t, envOption{prepare: func(e *env) {
		e.s.HandleAPI("GET /debug/pprof/", api.Super, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("profile")) })
	}})
	e.c = http.DefaultClient // pprof is not part of the API's document
	e.want(e.super, "POST", "/api/v1/accounts", map[string]string{"id": "acme"}, 201, nil)
	_, global := e.newKey(e.super, "global", "", []string{"*:read", "keys:*"}, "")
	_, acmeAll := e.newKey(e.super, "acme-all", "acme", []string{"*:*"}, "")
	_, super2 := e.newKey(e.super, "super2", "", nil, "super")
	e.want("", "GET", "/debug/pprof/", nil, 401, nil)
	e.want(global, "GET", "/debug/pprof/", nil, 403, nil)
	e.want(acmeAll, "GET", "/debug/pprof/heap", nil, 403, nil)
	e.want(e.super, "GET", "/debug/pprof/", nil, 200, nil)
	e.want(super2, "GET", "/debug/pprof/heap", nil, 200, nil)
}

// Failed authentications are counted and limited per client address: past the burst, further
// failures answer 429 with Retry-After; a valid key is still served.
func TestFailureLimit(t *testing.T) {
	e := newEnv(t, envOption{opts: []api.Option{api.WithLimiter(access.NewLimiter(time.Minute, 3))}})
	for i := range 3 {
		e.want("fr_wrong", "GET", "/api/v1/accounts", nil, 401, nil)
		_ = i
	}
	status, _, h := e.do("fr_wrong", "GET", "/api/v1/accounts", nil)
	if status != 429 || h.Get("Retry-After") == "" {
		t.Fatalf("4th failure = %d, Retry-After %q; want 429 with Retry-After", status, h.Get("Retry-After"))
	}
	e.want("", "GET", "/api/v1/accounts", nil, 429, nil)
	e.want(e.super, "GET", "/api/v1/accounts", nil, 200, nil)
	if got := e.counter("fleetrelay_api_auth_failures_total", "reason", "unknown"); got != 4 {
		t.Errorf("unknown-key failures = %v, want 4", got)
	}
	e.clock.Add(time.Minute)
	e.want("fr_wrong", "GET", "/api/v1/accounts", nil, 401, nil) // one more after a minute
	e.want("fr_wrong", "GET", "/api/v1/accounts", nil, 429, nil)
}
