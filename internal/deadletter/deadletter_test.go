package deadletter_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetrelay/fleetrelay/internal/access"
	"github.com/fleetrelay/fleetrelay/internal/api"
	"github.com/fleetrelay/fleetrelay/internal/api/apitest"
	"github.com/fleetrelay/fleetrelay/internal/deadletter"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// key is the test server's super key.
const key = "fr_deadletter-test-super-key"

// storeReplay replays through the store, by route name, as the offline `fleetrelay dlq replay`
// does (the running relay's actor system also has its route deliver them at once).
type storeReplay struct {
	st  *store.Store
	ids map[string]uint16
}

func (r storeReplay) Replay(route string) (int, int, error) {
	id, ok := r.ids[route]
	if !ok {
		return 0, 0, fmt.Errorf("no route %q", route)
	}
	return r.st.Replay(id)
}

// serve starts an admin server on loopback with the dead-letter endpoints over a real store
// holding two dead letters of route "r" (three messages: one a command result), and a route
// "theirs" of account "other".
func serve(t *testing.T) string {
	t.Helper()
	st, err := store.Open(t.Context(), store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	id, err := st.RouteID("r")
	if err != nil {
		t.Fatal(err)
	}
	data := &store.Frame{Device: "d1", Serial: "S1", IMEI: "351", Seq: 7, ReceivedAt: 1_700_000_000_000,
		Records: [][]byte{[]byte(`{"a":1}`), []byte(`{"a":2}`)}, Routes: []uint16{id}}
	result := &store.Frame{Device: "d1", Serial: "S1", Result: true, Task: 42, Code: 3, ReceivedAt: 1_700_000_001_000,
		Records: [][]byte{[]byte(`{"ok":false}`)}, Routes: []uint16{id}}
	for _, d := range []*store.DeadLetter{
		{Route: id, Status: 500, Error: "status 500", Attempts: 3, At: 1_700_000_002_000,
			Items: []store.DeadItem{{Frame: data, Record: 0}, {Frame: data, Record: 1}}},
		{Route: id, Error: "retention exceeded", Attempts: 1, At: 1_700_000_003_000,
			Items: []store.DeadItem{{Frame: result, Record: 0}}},
	} {
		if err := st.DeadLetter(d, nil); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.DiscardHandler)
	s := api.New("127.0.0.1:0", prometheus.NewRegistry(), func() error { return nil }, log, api.WithKeys(nil, access.Hash(key)))
	theirs, err := st.RouteID("theirs")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]uint16{"r": id, "theirs": theirs}
	deadletter.Register(s, st, storeReplay{st, ids}, deadletter.RoutesFunc(func(name string) (uint16, string, bool) {
		id, ok := ids[name]
		if name == "theirs" {
			return id, "other", ok
		}
		return id, "", ok
	}), log)
	addr, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(t.Context()) })
	return "http://" + addr.String()
}

func do(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if strings.Contains(url, "limit=x") {
		req = apitest.Invalid(req) // the server's own check of the query
	}
	resp, err := apitest.Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" && !(resp.StatusCode >= 400 && ct == "application/problem+json") {
		t.Errorf("%s %s: %d as Content-Type %q, want application/json (or a problem)", method, url, resp.StatusCode, ct)
	}
	return resp.StatusCode, string(b)
}

// The endpoints' answers, errors included, byte for byte where the JSON is the contract.
func TestEndpoints(t *testing.T) {
	base := serve(t) + "/api/v1/routes"
	f := func(method, path string, wantCode int, want string) {
		t.Helper()
		code, body := do(t, method, base+path)
		if code != wantCode || strings.TrimSuffix(body, "\n") != want {
			t.Errorf("%s %s = %d %s, want %d %s", method, path, code, body, wantCode, want)
		}
	}
	f("GET", "/nope/dead-letters", 404, `{"title":"Not Found","status":404,"detail":"no route \"nope\""}`)
	f("POST", "/nope/dead-letters/replay", 404, `{"title":"Not Found","status":404,"detail":"no route \"nope\""}`)
	f("GET", "/r/dead-letters?limit=x", 400, `{"title":"Bad Request","status":400,"detail":"limit must be a number from 0 to 1000","errors":[{"pointer":"/limit","detail":"want 0..1000"}]}`)
	f("DELETE", "/r/dead-letters?older_than=-1h", 400, `{"title":"Bad Request","status":400,"detail":"older_than must be a duration such as 24h","errors":[{"pointer":"/older_than","detail":"want a duration ≥ 0"}]}`)
	f("GET", "/r/dead-letters?limit=0", 200, `{"route":"r","letters":2,"messages":3,"data":[]}`) // the totals only
	first := `{"id":1,"at":"2023-11-14T22:13:22Z","status":500,"error":"status 500","attempts":3,"messages":[` +
		`{"device":"d1","serial":"S1","imei":"351","seq":7,"index":0,"received_at":"2023-11-14T22:13:20Z","data":{"a":1}},` +
		`{"device":"d1","serial":"S1","imei":"351","seq":7,"index":1,"received_at":"2023-11-14T22:13:20Z","data":{"a":2}}]}`
	second := `{"id":2,"at":"2023-11-14T22:13:23Z","status":0,"error":"retention exceeded","attempts":1,"messages":[` +
		`{"device":"d1","serial":"S1","seq":0,"index":0,"received_at":"2023-11-14T22:13:21Z","task":42,"code":3,"data":{"ok":false}}]}`
	f("GET", "/r/dead-letters", 200, `{"route":"r","letters":2,"messages":3,"data":[`+first+`,`+second+`]}`)
	// Pages: one dead letter each, the totals on every page.
	f("GET", "/r/dead-letters?limit=1", 200, `{"route":"r","letters":2,"messages":3,"data":[`+first+`],"next_cursor":"`+api.EncodeCursor("1")+`"}`)
	f("GET", "/r/dead-letters?limit=1&cursor="+api.EncodeCursor("1"), 200, `{"route":"r","letters":2,"messages":3,"data":[`+second+`]}`)
	// A global key sees a route of an account; the route lookup's account is what a key of
	// another account is refused by (internal/api's rights table).
	f("GET", "/theirs/dead-letters", 200, `{"route":"theirs","letters":0,"messages":0,"data":[]}`)

	// The dead letters are from 2023: a purge of what is older than a day takes them all, and a
	// replay then finds nothing left.
	f("DELETE", "/r/dead-letters?older_than=24h", 200, `{"route":"r","letters":2,"messages":3}`)
	f("GET", "/r/dead-letters", 200, `{"route":"r","letters":0,"messages":0,"data":[]}`)
	f("POST", "/r/dead-letters/replay", 200, `{"route":"r","letters":0,"messages":0}`)
}

// A replay moves every dead letter to the route's replay list: the listing is empty afterwards.
func TestReplayEndpoint(t *testing.T) {
	base := serve(t)
	code, body := do(t, "POST", base+"/api/v1/routes/r/dead-letters/replay")
	var res deadletter.Result
	if err := json.Unmarshal([]byte(body), &res); err != nil || code != 200 {
		t.Fatalf("POST .../dead-letters/replay = %d %s (%v)", code, body, err)
	}
	if res != (deadletter.Result{Route: "r", Letters: 2, Messages: 3}) {
		t.Errorf("replay = %+v, want 2 letters, 3 messages of r", res)
	}
	if code, body := do(t, "GET", base+"/api/v1/routes/r/dead-letters"); code != 200 || !strings.Contains(body, `"letters":0`) {
		t.Errorf("GET .../dead-letters after the replay = %d %s, want no dead letters", code, body)
	}
}
