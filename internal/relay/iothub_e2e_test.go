package relay_test

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/deadletter"
)

// iotHub is an HTTPS endpoint that takes device messages as IoT Hub's HTTPS device API does
// (POST /devices/{id}/messages/events) and verifies each request's SAS on its own, from
// Microsoft's documented device-token algorithm: sr is the URL-encoded <host>/devices/<id>
// for the device the path names, sig the URL-encoded base64 of
// HMAC-SHA256(base64decode(that device's key), sr + "\n" + se), se not past. A batch must be
// that one device's messages.
type iotHub struct {
	*authEndpoint
	host string

	mu   sync.Mutex
	keys map[string]string  // device id → key (base64)
	se   map[string][]int64 // device id → se of each accepted request, in order
}

func newIoTHub(t *testing.T, ca *testCA, host string) *iotHub {
	h := &iotHub{host: host, keys: map[string]string{}, se: map[string][]int64{}}
	h.authEndpoint = newAuthEndpoint(t, ca, false, h.check)
	return h
}

func (h *iotHub) setKey(id, key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.keys[id] = key
}

func (h *iotHub) check(_ int, rq *authReq) (int, []byte, error) {
	if rq.Method != http.MethodPost {
		return 0, nil, fmt.Errorf("method %s, want POST", rq.Method)
	}
	rest, ok := strings.CutPrefix(rq.Path, "/devices/")
	escID, tail, _ := strings.Cut(rest, "/")
	if !ok || tail != "messages/events" {
		return 0, nil, fmt.Errorf("path %q is not /devices/{id}/messages/events", rq.Path)
	}
	id, err := url.PathUnescape(escID)
	if err != nil {
		return 0, nil, err
	}
	if rq.Query != "api-version=2021-04-12" {
		return 0, nil, fmt.Errorf("query %q", rq.Query)
	}
	h.mu.Lock()
	key := h.keys[id]
	h.mu.Unlock()
	if key == "" {
		return 0, nil, fmt.Errorf("device %q is not registered", id)
	}
	tok, ok := strings.CutPrefix(rq.Header.Get("Authorization"), "SharedAccessSignature ")
	if !ok {
		return 0, nil, fmt.Errorf("Authorization %q is not a SharedAccessSignature", rq.Header.Get("Authorization"))
	}
	fields := map[string]string{}
	for _, kv := range strings.Split(tok, "&") {
		k, v, _ := strings.Cut(kv, "=")
		fields[k] = v
	}
	if len(fields) != 3 {
		return 0, nil, fmt.Errorf("token %q: want sr, sig and se only", tok)
	}
	if want := url.QueryEscape(h.host + "/devices/" + id); fields["sr"] != want {
		return 0, nil, fmt.Errorf("sr %q, want %q", fields["sr"], want)
	}
	se, err := strconv.ParseInt(fields["se"], 10, 64)
	if err != nil || se < time.Now().Unix() {
		return 0, nil, fmt.Errorf("se %q is not a Unix time in the future", fields["se"])
	}
	raw, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return 0, nil, err
	}
	if want := url.QueryEscape(base64.StdEncoding.EncodeToString(hmacSHA256(raw, fields["sr"]+"\n"+fields["se"]))); fields["sig"] != want {
		return 0, nil, fmt.Errorf("sig %q, want %q (device %s's key)", fields["sig"], want, id)
	}
	ms, err := parseMsgs(rq.Body)
	if err != nil {
		return 0, nil, err
	}
	for _, m := range ms {
		if m.Serial != id {
			return 0, nil, fmt.Errorf("message %s of %q in a request for device %q", m.MsgID, m.Serial, id)
		}
	}
	h.mu.Lock()
	h.se[id] = append(h.se[id], se)
	h.mu.Unlock()
	return 0, nil, nil
}

// expiries returns the se of the accepted requests of device id, in order.
func (h *iotHub) expiries(id string) []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int64(nil), h.se[id]...)
}

func deviceKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// A route with auth.azure_iot_hub delivers each device's messages as that device: two devices
// with different keys (one from the config's fleet, one put through the API), each request's
// SAS verified on its own; a short ttl renews the token; a device without a key is
// dead-lettered at once, without a request, and delivered once its key is set and the dead
// letters replayed.
func TestAzureIoTHubE2E(t *testing.T) {
	const host, ttl = "myhub.azure-devices.net", 5 * time.Second
	ca := newTestCA(t)
	hub := newIoTHub(t, ca, host)
	keyA, keyB, keyC := deviceKey(t), deviceKey(t), deviceKey(t)
	hub.setKey("IOT-A", keyA)
	hub.setKey("IOT-B", keyB)
	hub.setKey("IOT-C", keyC)

	rt := ca.route("iothub", hub.URL+"/devices/[SERIAL]/messages/events?api-version=2021-04-12")
	rt.Auth.AzureIoTHub = &config.AzureIoTHub{Host: host, KeyField: "custom1", TTL: config.Duration(ttl)}
	cfg := testConfig(t, nil)
	cfg.Delivery.AllowPrivateNetworks = true // the endpoint is on 127.0.0.1
	cfg.Routes = append(cfg.Routes, rt)
	cfg.Fleet = []config.Device{{ID: "IOT-A", Custom1: keyA}}
	cfg.Resolve()
	r := startRelay(t, cfg)
	admin, adminKey := adminConfig(t, cfg, r)
	api := newAPI(t, r, adminKey)
	api.must(http.StatusCreated, "PUT", "/api/v1/devices/IOT-B", map[string]any{"custom1": keyB})

	// Two devices, two keys.
	dA, wantA := deviceSends(t, r, "IOT-A", 5)
	_, wantB := deviceSends(t, r, "IOT-B", 5)
	want := append(append([]string(nil), wantA...), wantB...)
	hub.waitMsgs(t, want)

	// Past the renewal point of A's token (a fifth of its lifetime before se), A's next
	// request carries a new one.
	first := hub.expiries("IOT-A")
	if len(first) == 0 || len(hub.expiries("IOT-B")) == 0 {
		t.Fatalf("accepted requests: A %v, B %v", first, hub.expiries("IOT-B"))
	}
	last := first[len(first)-1]
	time.Sleep(time.Until(time.Unix(last, 0).Add(-ttl/5 + 50*time.Millisecond)))
	want = append(want, sendRecords(t, dA, "IOT-A", 3)...)
	hub.waitMsgs(t, want)
	if got := hub.expiries("IOT-A"); got[len(got)-1] <= last {
		t.Fatalf("A's token was not renewed past its renewal point: se %v", got)
	}

	// C has no key in custom1: dead-lettered at once, nothing sent for it.
	_, wantC := deviceSends(t, r, "IOT-C", 3)
	waitMetric(t, r, `fleetrelay_route_dead_lettered_messages_total{route="iothub"}`, 3)
	page, err := deadletter.List(t.Context(), admin, adminKey, "iothub", 100)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range page.DeadLetters {
		if l.Attempts != 0 || l.Status != 0 || !strings.Contains(l.Error, `azure_iot_hub: device "IOT-C" has no key (its custom1 is empty)`) {
			t.Errorf("dead letter: %d attempts, status %d, error %q; want none, none, no key", l.Attempts, l.Status, l.Error)
		}
		for _, m := range l.Messages {
			if m.Device != "IOT-C" {
				t.Errorf("dead message of %s", m.Device)
			}
			n++
		}
	}
	if n != 3 {
		t.Fatalf("%d dead messages, want IOT-C's 3", n)
	}
	for _, rq := range hub.requests() {
		if strings.Contains(rq.Path, "IOT-C") {
			t.Fatalf("a request was sent for IOT-C without a key: %s", rq.Path)
		}
	}

	// Its key set through the API, the replayed messages are delivered as IOT-C.
	api.must(http.StatusCreated, "PUT", "/api/v1/devices/IOT-C", map[string]any{"custom1": keyC})
	if res, err := deadletter.Replay(t.Context(), admin, adminKey, "iothub"); err != nil || res.Messages != 3 {
		t.Fatalf("replay = %+v, %v; want 3 messages", res, err)
	}
	hub.waitMsgs(t, append(want, wantC...))
}
