package relay_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

// plainKey is a random IoT Hub key (32 bytes, base64) without '+' or '/', so that a search
// for it in a body cannot miss an escaped form.
func plainKey(t *testing.T) string {
	t.Helper()
	for {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		if k := base64.StdEncoding.EncodeToString(b); !strings.ContainsAny(k, "+/") {
			return k
		}
	}
}

// bodySink is a plain HTTP endpoint that keeps every request's body and headers and answers
// 200.
type bodySink struct {
	*httptest.Server
	mu      sync.Mutex
	bodies  [][]byte
	headers []http.Header
}

func newBodySink(t *testing.T) *bodySink {
	s := &bodySink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.bodies = append(s.bodies, b)
		s.headers = append(s.headers, r.Header.Clone())
		s.mu.Unlock()
	}))
	t.Cleanup(s.Close)
	return s
}

// reports returns the measurement reports received, by hashId.
func (s *bodySink) reports(t *testing.T) map[string]map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]map[string]any{}
	for _, b := range s.bodies {
		var rs []map[string]any
		if err := json.Unmarshal(b, &rs); err != nil {
			t.Fatalf("measurement body %s: %v", b, err)
		}
		for _, r := range rs {
			out[fmt.Sprint(r["hashId"])] = r
		}
	}
	return out
}

// Secret custom fields end to end: an Azure IoT Hub export imported through the API puts each
// device's key in custom1, which a route with azure_iot_hub signs with, so custom1 is secret;
// devices.secret_fields makes custom3 secret too. The keys are never in an API answer (import,
// GET, list, PUT, PATCH) nor in the relay's log, and never in a body the measurement route
// sends, which still shows custom2 (not secret) and carries each device's key in its
// X-Device-Key header ([CUSTOM1]: a header is a credential carrier by design); the IoT Hub
// endpoint verifies every device's SAS, signed with the key.
func TestSecretFieldsE2E(t *testing.T) {
	const host = "myhub.azure-devices.net"
	ca := newTestCA(t)
	hub := newIoTHub(t, ca, host)
	keys := map[string]string{"IOT-1": plainKey(t), "IOT-2": plainKey(t)}
	for id, k := range keys {
		hub.setKey(id, k)
	}
	const third = "third-field-SECRET-7c1e"

	rt := ca.route("iothub", hub.URL+"/devices/[SERIAL]/messages/events?api-version=2021-04-12")
	rt.Auth.AzureIoTHub = &config.AzureIoTHub{Host: host, KeyField: "custom1", TTL: config.Duration(time.Hour)}
	sink := newBodySink(t)
	ms := config.DefaultRoute()
	ms.Name, ms.URL, ms.Format = "measure", sink.URL+"/in", "measurement"
	ms.Batch.Linger = config.Duration(5 * time.Millisecond)
	ms.Headers = map[string]string{"X-Device-Key": "[CUSTOM1]"}
	cfg := testConfig(t, nil)
	cfg.Delivery.AllowPrivateNetworks = true // the endpoints are on 127.0.0.1
	cfg.Devices.SecretFields = []string{"custom3"}
	cfg.Routes = append(cfg.Routes, rt, ms)
	cfg.Resolve()
	r, logs := startLoggedRelay(t, cfg)
	api := newAPI(t, r, bootstrapKey(t, cfg))

	export := fmt.Sprintf(`{"deviceId":"IOT-1","authentication":{"symmetricKey":{"primaryKey":%q,"secondaryKey":"c2Vjb25kYXJ5"},"type":"sas"}}
{"deviceId":"IOT-2","authentication":{"symmetricKey":{"primaryKey":%q},"type":"sas"}}
`, keys["IOT-1"], keys["IOT-2"])
	if st, a, raw := api.importBody("application/x-ndjson", "?format=azure&key_field=custom1", export); st != http.StatusOK || a.Upserted != 2 {
		t.Fatalf("Azure import = %d %s, want 2 upserted", st, raw)
	}
	// A merge patch that does not name custom1 keeps it; custom3 is secret, custom2 is not.
	api.must(http.StatusOK, "PATCH", "/api/v1/devices/IOT-1", map[string]any{"custom2": "plant-1", "custom3": third})
	// A PUT without custom1 keeps it too.
	api.must(http.StatusOK, "PUT", "/api/v1/devices/IOT-2", map[string]any{"custom2": "plant-2", "tags": []string{"eu"}})

	wantSet := map[string][]string{"IOT-1": {"custom1", "custom3"}, "IOT-2": {"custom1"}}
	for id, set := range wantSet {
		v := api.must(http.StatusOK, "GET", "/api/v1/devices/"+id, nil)
		if field(v, "custom1") != nil || field(v, "custom3") != nil || field(v, "custom2") == nil ||
			fmt.Sprint(field(v, "secret_fields_set")) != fmt.Sprint(set) {
			t.Errorf("GET %s = %v, want custom2 shown, no custom1 or custom3, secret_fields_set %v", id, v, set)
		}
	}
	list := api.must(http.StatusOK, "GET", "/api/v1/devices", nil)
	if n := len(list["data"].([]any)); n != 2 {
		t.Errorf("list has %d devices, want 2", n)
	}

	var wantHub []string
	for _, id := range []string{"IOT-1", "IOT-2"} {
		_, ids := deviceSends(t, r, id, 5)
		wantHub = append(wantHub, ids...)
	}
	hub.waitMsgs(t, wantHub) // every request's SAS verified with its device's key
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if got := sink.reports(t); len(got) != len(wantHub) {
			return fmt.Errorf("measurement route: %d reports, want %d", len(got), len(wantHub))
		}
		return nil
	})

	reports := sink.reports(t)
	for _, id := range wantHub {
		rep, ok := reports[id]
		if !ok {
			t.Fatalf("measurement route: no report %s", id)
		}
		df, _ := rep["deviceFields"].(map[string]any)
		dev, _ := df["serial"].(string)
		if df["custom1"] != nil || df["custom3"] != nil || df["custom2"] != "plant-"+strings.TrimPrefix(dev, "IOT-") {
			t.Errorf("report %s deviceFields = %v, want custom2 plant-N only of the custom fields", id, df)
		}
	}
	sink.mu.Lock()
	for i, b := range sink.bodies { // a batch is one destination's: one device's, by its header
		want := keys["IOT-2"]
		if bytes.Contains(b, []byte(`"IOT-1"`)) {
			want = keys["IOT-1"]
		}
		if got := sink.headers[i].Get("X-Device-Key"); got != want {
			t.Errorf("measurement request %d: X-Device-Key %q, want its device's key %q ([CUSTOM1])", i, got, want)
		}
	}
	sink.mu.Unlock()

	secrets := []string{keys["IOT-1"], keys["IOT-2"], third}
	var bodies bytes.Buffer
	sink.mu.Lock()
	for _, b := range sink.bodies {
		bodies.Write(b)
	}
	sink.mu.Unlock()
	for _, rq := range hub.requests() {
		bodies.Write(rq.Body)
	}
	for _, s := range secrets {
		if bytes.Contains(bodies.Bytes(), []byte(s)) {
			t.Errorf("a request body holds the secret %q", s)
		}
		if strings.Contains(api.seen.String(), s) {
			t.Errorf("an API answer holds the secret %q", s)
		}
		if strings.Contains(logs.String(), s) {
			t.Errorf("the relay's log holds the secret %q", s)
		}
	}
	if !slices.ContainsFunc(sink.bodies, func(b []byte) bool { return bytes.Contains(b, []byte("plant-1")) }) {
		t.Error("no measurement body shows custom2 (plant-1), which is not secret")
	}
}
