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

	"github.com/fleetrelay/fleetrelay/internal/api"
	"github.com/fleetrelay/fleetrelay/internal/deadletter"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

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
// holding two dead letters of route "r" (three messages: one a command result).
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
	s := api.New("127.0.0.1:0", prometheus.NewRegistry(), func() error { return nil }, log)
	ids := map[string]uint16{"r": id}
	deadletter.Register(s, st, storeReplay{st, ids}, ids, log)
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
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, url, ct)
	}
	return resp.StatusCode, string(b)
}

// The endpoints' answers, errors included, byte for byte where the JSON is the contract.
func TestEndpoints(t *testing.T) {
	base := serve(t)
	f := func(method, path string, wantCode int, want string) {
		t.Helper()
		code, body := do(t, method, base+path)
		if code != wantCode || strings.TrimSuffix(body, "\n") != want {
			t.Errorf("%s %s = %d %s, want %d %s", method, path, code, body, wantCode, want)
		}
	}
	f("GET", "/dlq/nope", 404, `{"error":"no route \"nope\""}`)
	f("POST", "/dlq/nope/replay", 404, `{"error":"no route \"nope\""}`)
	f("GET", "/dlq/r?limit=x", 400, `{"error":"limit must be a number ≥ 0"}`)
	f("DELETE", "/dlq/r?older_than=-1h", 400, `{"error":"older_than must be a duration such as 24h"}`)
	f("GET", "/dlq/r?limit=0", 200, `{"route":"r","letters":2,"messages":3,"dead_letters":[]}`)
	f("GET", "/dlq/r", 200, `{"route":"r","letters":2,"messages":3,"dead_letters":[`+
		`{"id":1,"at":"2023-11-14T22:13:22Z","status":500,"error":"status 500","attempts":3,"messages":[`+
		`{"device":"d1","serial":"S1","imei":"351","seq":7,"index":0,"received_at":"2023-11-14T22:13:20Z","data":{"a":1}},`+
		`{"device":"d1","serial":"S1","imei":"351","seq":7,"index":1,"received_at":"2023-11-14T22:13:20Z","data":{"a":2}}]},`+
		`{"id":2,"at":"2023-11-14T22:13:23Z","status":0,"error":"retention exceeded","attempts":1,"messages":[`+
		`{"device":"d1","serial":"S1","seq":0,"index":0,"received_at":"2023-11-14T22:13:21Z","task":42,"code":3,"data":{"ok":false}}]}]}`)

	// The dead letters are from 2023: a purge of what is older than a day takes them all, and a
	// replay then finds nothing left.
	f("DELETE", "/dlq/r?older_than=24h", 200, `{"route":"r","letters":2,"messages":3}`)
	f("GET", "/dlq/r", 200, `{"route":"r","letters":0,"messages":0,"dead_letters":[]}`)
	f("POST", "/dlq/r/replay", 200, `{"route":"r","letters":0,"messages":0}`)
}

// A replay moves every dead letter to the route's replay list: the listing is empty afterwards.
func TestReplayEndpoint(t *testing.T) {
	base := serve(t)
	code, body := do(t, "POST", base+"/dlq/r/replay")
	var res deadletter.Result
	if err := json.Unmarshal([]byte(body), &res); err != nil || code != 200 {
		t.Fatalf("POST /dlq/r/replay = %d %s (%v)", code, body, err)
	}
	if res != (deadletter.Result{Route: "r", Letters: 2, Messages: 3}) {
		t.Errorf("replay = %+v, want 2 letters, 3 messages of r", res)
	}
	if code, body := do(t, "GET", base+"/dlq/r"); code != 200 || !strings.Contains(body, `"letters":0`) {
		t.Errorf("GET /dlq/r after the replay = %d %s, want no dead letters", code, body)
	}
}
