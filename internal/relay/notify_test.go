package relay_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
)

var updateNotify = flag.Bool("update-notify", false, "rewrite testdata/notifications/*.jsonl")

// notifyEndpoint is a real HTTP endpoint for a notification route: it verifies every request's
// Standard Webhooks signature, answers 503 while failing is set, and keeps the bodies it
// accepted.
type notifyEndpoint struct {
	*httptest.Server
	secret  string
	failing atomic.Bool

	mu       sync.Mutex
	accepted [][]byte
	problems []string
}

func newNotifyEndpoint(t *testing.T) *notifyEndpoint {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	e := &notifyEndpoint{secret: "whsec_" + base64.StdEncoding.EncodeToString(key)}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rq := &authReq{Method: r.Method, Host: r.Host, Header: r.Header.Clone(), Body: body}
		e.mu.Lock()
		defer e.mu.Unlock()
		if _, err := verifyWebhook(rq, []string{e.secret}); err != nil {
			e.problems = append(e.problems, err.Error())
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		if e.failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		e.accepted = append(e.accepted, body)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(e.Close)
	return e
}

// wait waits until n bodies were accepted and returns them; a request with a bad signature
// fails the test.
func (e *notifyEndpoint) wait(t *testing.T, n int) [][]byte {
	t.Helper()
	var got [][]byte
	checkfor.Check(t, 30*time.Second, 10*time.Millisecond, func() error {
		e.mu.Lock()
		defer e.mu.Unlock()
		if len(e.problems) > 0 {
			t.Fatalf("endpoint refused requests: %s", strings.Join(e.problems, "; "))
		}
		if len(e.accepted) < n {
			return fmt.Errorf("%d notification bodies accepted, want %d", len(e.accepted), n)
		}
		got = append([][]byte(nil), e.accepted...)
		return nil
	})
	if len(got) != n {
		t.Fatalf("%d notification bodies accepted, want %d:\n%s", len(got), n, joinLines(got))
	}
	return got
}

func joinLines(bs [][]byte) string {
	var b strings.Builder
	for _, l := range bs {
		b.Write(l)
		b.WriteByte('\n')
	}
	return b.String()
}

var (
	notifyHashID = regexp.MustCompile(`"hashId":"[0-9a-f]{16}`)
	notifyTime   = regexp.MustCompile(`"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"`)
)

// normalized is a notification body with what changes from run to run replaced: the ids, the
// times; every time is checked to be within the test's run first.
func normalized(t *testing.T, body []byte, since time.Time) string {
	t.Helper()
	for _, m := range notifyTime.FindAll(body, -1) {
		at, err := time.Parse(time.RFC3339Nano, string(m[1:len(m)-1]))
		if err != nil || at.Before(since.Truncate(time.Millisecond)) || at.After(time.Now()) {
			t.Errorf("time %s in %s: %v; want a time of this run", m, body, err)
		}
	}
	s := notifyHashID.ReplaceAllString(string(body), `"hashId":"<id>`)
	return notifyTime.ReplaceAllString(s, `"<time>"`)
}

// checkGolden compares bodies (normalized) with testdata/notifications/<name>.jsonl, one body a
// line; -update-notify rewrites the file.
func checkGolden(t *testing.T, name string, bodies [][]byte, since time.Time) {
	t.Helper()
	var got strings.Builder
	for _, b := range bodies {
		got.WriteString(normalized(t, b, since))
		got.WriteByte('\n')
	}
	path := filepath.Join("testdata", "notifications", name+".jsonl")
	if *updateNotify {
		if err := os.WriteFile(path, []byte(got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update-notify to create it)", err)
	}
	if got.String() != string(want) {
		t.Errorf("notification bodies:\n%s\nwant (%s):\n%s", got.String(), path, want)
	}
}

// A route with notifications: true, end to end: devices added, updated and deleted through the
// API reach a real endpoint as the golden notification bodies, each request signed (Standard
// Webhooks) like the route's data; the observations' times are the registry's. Notifications
// stored while the endpoint fails survive a restart and are delivered after it, none lost.
func TestNotificationsEndToEnd(t *testing.T) {
	ep := newNotifyEndpoint(t)
	cfg := testConfig(t, nil)
	rt := config.DefaultRoute()
	rt.Name, rt.URL, rt.Notifications = "changes", ep.URL+"/changes", true
	rt.Batch.MaxMessages, rt.Batch.Linger = 1, config.Duration(5*time.Millisecond)
	rt.Sign.Webhooks = &config.WebhooksSign{Secrets: []config.Secret{config.SecretValue(ep.secret)}}
	cfg.Routes = append(cfg.Routes, rt)
	since := time.Now()
	r := startRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))

	api.must(http.StatusCreated, "POST", "/api/v1/accounts", map[string]any{"id": "acme", "name": "Acme"})
	created := api.must(http.StatusCreated, "PUT", "/api/v1/devices/dev-1", map[string]any{"account": "acme"})
	updated := api.must(http.StatusOK, "PUT", "/api/v1/devices/dev-1", map[string]any{"account": "acme", "tags": []string{"truck"}})
	api.must(http.StatusNoContent, "DELETE", "/api/v1/devices/dev-1", nil)
	bodies := ep.wait(t, 3)
	checkGolden(t, "api", bodies, since)

	// The observations carry the registry's times.
	var add, upd []notificationBody
	if err := json.Unmarshal(bodies[0], &add); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(bodies[1], &upd); err != nil {
		t.Fatal(err)
	}
	iso := func(v any) string {
		at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(v))
		if err != nil {
			t.Fatalf("time %v: %v", v, err)
		}
		return at.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	if o := add[0].Observations[0]; o.CreatedAt != iso(field(created, "meta", "created_at")) || o.UpdatedAt != o.CreatedAt {
		t.Errorf("add observation %+v, want createdAt = updatedAt = the device's created_at %v", o, field(created, "meta", "created_at"))
	}
	if o := upd[0].Observations[0]; o.CreatedAt != iso(field(created, "meta", "created_at")) || o.UpdatedAt != iso(field(updated, "meta", "updated_at")) {
		t.Errorf("update observation %+v, want the device's created_at and updated_at %v", o, field(updated, "meta", "updated_at"))
	}

	// While the endpoint fails, notifications are stored and queued; a restart keeps them.
	ep.failing.Store(true)
	api.must(http.StatusCreated, "PUT", "/api/v1/devices/dev-2", map[string]any{"account": "acme"})
	api.must(http.StatusCreated, "PUT", "/api/v1/devices/dev-3", map[string]any{})
	api.must(http.StatusNoContent, "DELETE", "/api/v1/devices/dev-2", nil)
	checkfor.Check(t, 30*time.Second, 10*time.Millisecond, func() error {
		if b := field(api.must(http.StatusOK, "GET", "/api/v1/routes/changes", nil), "holdings", "backlog"); b != float64(3) {
			return fmt.Errorf("route changes backlog = %v, want 3", b)
		}
		return nil
	})
	if err := relaytest.Shutdown(r); err != nil {
		t.Fatal(err)
	}
	ep.failing.Store(false)
	r = startRelay(t, cfg)
	bodies = ep.wait(t, 6)[3:]
	// Order holds per account (acme's add before its delete); accounts do not wait for each
	// other, so dev-3's (no account) may come first.
	if !strings.Contains(string(bodies[0]), `"environmentHashId":null`) {
		if strings.Contains(string(bodies[2]), `"environmentHashId":null`) {
			bodies = [][]byte{bodies[2], bodies[0], bodies[1]}
		} else {
			bodies = [][]byte{bodies[1], bodies[0], bodies[2]}
		}
	}
	checkGolden(t, "restart", bodies, since)
	_ = relaytest.Shutdown(r)
}

type notificationBody struct {
	Observations []struct {
		CreatedAt string `json:"createdAt"`
		UpdatedAt string `json:"updatedAt"`
	} `json:"observations"`
}

// BenchmarkAPIDevicePutNotified is BenchmarkAPIDevicePut with a notification route (Standard
// Webhooks signed, to a loopback endpoint): each PUT also stores a notification message in the
// journal, which the route batches and delivers. Reports requests/s and the notifications the
// endpoint had received when the timer stopped, per request.
func BenchmarkAPIDevicePutNotified(b *testing.B) {
	const devices = 1000
	var got atomic.Int64
	ep := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got.Add(int64(strings.Count(string(body), `"generatedAt"`)))
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(ep.Close)
	cfg := testConfig(b, nil)
	rt := config.DefaultRoute()
	rt.Name, rt.URL, rt.Notifications = "changes", ep.URL+"/changes", true
	rt.Sign.Webhooks = &config.WebhooksSign{Secrets: []config.Secret{config.SecretValue("whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 32)))}}
	cfg.Routes = append(cfg.Routes, rt)
	c, base, key := benchDevicesOn(b, cfg, devices)
	before := got.Load()
	benchRequests(b, http.StatusOK, func(n int64) int {
		return benchDo(b, c, "PUT", base+fmt.Sprintf("dev-%04d", n%devices), key, fmt.Sprintf(`{"tags":["a","t%d"],"custom1":"c%d"}`, n%7, n))
	})
	b.ReportMetric(float64(got.Load()-before)/float64(b.N), "notified/req")
}

// A notification route made through the API: its spec shows notifications and the notification
// format; one with a filter, or a data route with the notification format, is refused with the
// field's pointer.
func TestNotificationRouteThroughAPI(t *testing.T) {
	ep := newNotifyEndpoint(t)
	cfg := testConfig(t, nil)
	r := startRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))
	bad := func(body map[string]any, pointer string) {
		t.Helper()
		st, p := api.do("POST", "/api/v1/routes", body)
		if st != http.StatusUnprocessableEntity || !slices.Equal(pointers(p), []string{pointer}) {
			t.Errorf("POST route %v = %d %v, want 422 at %s", body, st, p, pointer)
		}
	}
	bad(map[string]any{"name": "n", "url": ep.URL + "/n", "notifications": true, "filter": map[string]any{"tags": []string{"a"}}}, "/filter")
	bad(map[string]any{"name": "n", "url": ep.URL + "/n", "format": "notification"}, "/format")
	rt := api.must(http.StatusCreated, "POST", "/api/v1/routes", map[string]any{"name": "n", "url": ep.URL + "/n",
		"notifications": true, "batch": map[string]any{"linger": "5ms"},
		"sign": map[string]any{"webhooks": map[string]any{"secrets": []string{ep.secret}}}})
	if field(rt, "spec", "notifications") != true || field(rt, "spec", "format") != "notification" {
		t.Errorf("route spec = %v, want notifications and format notification", field(rt, "spec"))
	}
	api.must(http.StatusCreated, "PUT", "/api/v1/devices/dev-9", map[string]any{})
	if body := ep.wait(t, 1)[0]; !strings.Contains(string(body), `"identifier":"DEV-9"`) {
		t.Errorf("notification %s, want DEV-9's", body)
	}
}

// An import through the API is one notification message (of up to 2,000 observations; the
// import writes it in several store transactions) with an observation per device in row order,
// add for new devices and update for known ones; a rejected row is not notified. Every message
// is signed.
func TestNotificationsImport(t *testing.T) {
	ep := newNotifyEndpoint(t)
	cfg := testConfig(t, nil)
	rt := config.DefaultRoute()
	rt.Name, rt.URL, rt.Notifications = "changes", ep.URL+"/changes", true
	rt.Batch.Linger = config.Duration(5 * time.Millisecond)
	rt.Sign.Webhooks = &config.WebhooksSign{Secrets: []config.Secret{config.SecretValue(ep.secret)}}
	cfg.Routes = append(cfg.Routes, rt)
	r := startRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))

	const n = 2000
	var body strings.Builder
	for i := range n {
		fmt.Fprintf(&body, `{"id":"imp-%04d","custom1":"c"}`+"\n", i)
		if i == 700 {
			body.WriteString(`{"id":"","custom1":"bad"}` + "\n")
		}
	}
	if st, a, raw := api.importBody("application/x-ndjson", "", body.String()); st != http.StatusOK || a.Upserted != n || len(a.Rejected) != 1 {
		t.Fatalf("import = %d %s, want %d upserted, 1 rejected", st, raw, n)
	}
	api.must(http.StatusCreated, "PUT", "/api/v1/devices/single", map[string]any{})
	if st, a, raw := api.importBody("application/x-ndjson", "", `{"id":"imp-0001","custom1":"d"}`+"\n"+`{"id":"new-1"}`+"\n"); st != http.StatusOK || a.Upserted != 2 {
		t.Fatalf("second import = %d %s", st, raw)
	}

	type msg struct {
		Observations []struct {
			Action string `json:"action"`
			Device struct {
				Identifier string `json:"identifier"`
			} `json:"device"`
		} `json:"observations"`
	}
	var msgs []msg
	checkfor.Check(t, 30*time.Second, 20*time.Millisecond, func() error {
		ep.mu.Lock()
		defer ep.mu.Unlock()
		if len(ep.problems) > 0 {
			t.Fatalf("endpoint refused requests: %s", strings.Join(ep.problems, "; "))
		}
		msgs = msgs[:0]
		obs := 0
		for _, b := range ep.accepted {
			var ms []msg
			if err := json.Unmarshal(b, &ms); err != nil {
				t.Fatalf("body %s: %v", b, err)
			}
			for _, m := range ms {
				obs += len(m.Observations)
			}
			msgs = append(msgs, ms...)
		}
		if obs < n+3 {
			return fmt.Errorf("%d observations in %d messages, want %d", obs, len(msgs), n+3)
		}
		return nil
	})
	// The first import comes first (one account, order kept), then single's, then the second
	// import.
	if len(msgs) != 3 {
		t.Fatalf("%d messages for 2 imports and a PUT, want 3", len(msgs))
	}
	if o := msgs[1].Observations; len(o) != 1 || o[0].Device.Identifier != "SINGLE" || o[0].Action != "add" {
		t.Errorf("second message %+v, want SINGLE's add", o)
	}
	if o := msgs[2].Observations; len(o) != 2 || o[0].Device.Identifier != "IMP-0001" || o[0].Action != "update" ||
		o[1].Device.Identifier != "NEW-1" || o[1].Action != "add" {
		t.Errorf("last message %+v, want IMP-0001 updated and NEW-1 added", o)
	}
	next := 0
	for _, o := range msgs[0].Observations {
		if want := fmt.Sprintf("IMP-%04d", next); o.Device.Identifier != want || o.Action != "add" {
			t.Fatalf("observation %+v, want %s added (in the import's order)", o, want)
		}
		next++
	}
	if next != n {
		t.Errorf("the first import's messages hold %d observations, want %d", next, n)
	}
}
