package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relay"
)

// A route with compression sends gzip or zstd bodies with Content-Encoding set; an independent
// net/http server decompresses them and finds every message.
func TestRouteCompression(t *testing.T) {
	for _, enc := range []string{config.CompressionGzip, config.CompressionZstd} {
		t.Run(enc, func(t *testing.T) {
			var (
				mu        sync.Mutex
				msgs      = map[string]bool{}
				encodings = map[string]int{}
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var body io.Reader = r.Body
				switch ce := r.Header.Get("Content-Encoding"); ce {
				case "gzip":
					zr, err := gzip.NewReader(r.Body)
					if err != nil {
						http.Error(w, err.Error(), 400)
						return
					}
					body = zr
				case "zstd":
					zr, err := zstd.NewReader(r.Body)
					if err != nil {
						http.Error(w, err.Error(), 400)
						return
					}
					defer zr.Close()
					body = zr
				}
				var batch []struct {
					MsgID string `json:"msgId"`
				}
				if err := json.NewDecoder(body).Decode(&batch); err != nil {
					http.Error(w, err.Error(), 400)
					return
				}
				mu.Lock()
				encodings[r.Header.Get("Content-Encoding")]++
				for _, m := range batch {
					msgs[m.MsgID] = true
				}
				mu.Unlock()
			}))
			defer srv.Close()

			cfg := testConfig(t, nil)
			rt := config.DefaultRoute()
			rt.Name = "z"
			rt.URL = srv.URL + "/in"
			rt.Batch.Linger = config.Duration(5 * time.Millisecond)
			rt.Compression = enc
			cfg.Routes = append(cfg.Routes, rt)
			cfg.Resolve()
			r := startRelay(t, cfg)
			d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "Z1"}, 1)
			const n = 200
			for i := range n {
				if _, err := d.Send(record("Z1", uint64(i+1), 0)); err != nil {
					t.Fatal(err)
				}
			}
			waitAcked(t, d, n)
			checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				mu.Lock()
				defer mu.Unlock()
				if len(msgs) != n {
					return fmt.Errorf("%d of %d messages arrived", len(msgs), n)
				}
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			if len(encodings) != 1 || encodings[enc] == 0 {
				t.Fatalf("Content-Encoding seen: %v, want only %s", encodings, enc)
			}
		})
	}
}

// success_codes: a status listed counts as delivered (no retry, nothing left queued); a status
// not listed is retried; a redirect is a failure and is not followed.
func TestRouteSuccessCodes(t *testing.T) {
	for _, c := range []struct {
		name      string
		status    int
		codes     []int
		delivered bool
	}{
		{"400 listed", 400, []int{200, 201, 202, 400, 500}, true},
		{"400 not listed", 400, nil, false},
		{"302 not followed", 302, nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var requests atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				_, _ = io.Copy(io.Discard, r.Body)
				if c.status == 302 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(c.status)
			}))
			defer srv.Close()
			cfg := testConfig(t, nil)
			cfg.Delivery.ShutdownGrace = config.Duration(100 * time.Millisecond) // undelivered: do not wait at shutdown
			rt := config.DefaultRoute()
			rt.Name = "s"
			rt.URL = srv.URL + "/in"
			rt.Batch.Linger = 0
			rt.SuccessCodes = c.codes
			cfg.Routes = append(cfg.Routes, rt)
			cfg.Resolve()
			r := startRelay(t, cfg)
			d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "S1"}, 1)
			if _, err := d.Send(record("S1", 1, 0)); err != nil {
				t.Fatal(err)
			}
			waitAcked(t, d, 1)
			if c.delivered {
				waitMetric(t, r, `fleetrelay_route_delivered_messages_total{route="s"}`, 1)
				waitMetric(t, r, `fleetrelay_route_queued_messages{route="s"}`, 0)
				waitMetric(t, r, `fleetrelay_route_oldest_pending_seconds{route="s"}`, 0)
				time.Sleep(300 * time.Millisecond) // would be long enough for retries (backoff ≤ 200 ms)
				if n := requests.Load(); n != 1 {
					t.Fatalf("%d requests for one delivered message, want 1", n)
				}
				return
			}
			checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				if n := requests.Load(); n < 3 {
					return fmt.Errorf("%d requests: not retried yet", n)
				}
				return nil
			})
			if v := metric(t, r, `fleetrelay_route_delivered_messages_total{route="s"}`); v != 0 {
				t.Fatalf("delivered = %v after status %d", v, c.status)
			}
			if v := metric(t, r, `fleetrelay_route_retries_total{route="s"}`); v < 2 {
				t.Fatalf("retries = %v after %d requests", v, requests.Load())
			}
			if v := metric(t, r, `fleetrelay_route_oldest_pending_seconds{route="s"}`); v <= 0 {
				t.Fatalf("oldest pending = %v s for an undelivered message", v)
			}
		})
	}
}

// Formats through the real relay: a sensoro route with body object receives one SENSORO push per
// request; a template route receives arrays of rendered templates with typed values.
func TestRouteFormats(t *testing.T) {
	var (
		mu     sync.Mutex
		bodies = map[string][][]byte{}
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies[r.URL.Path] = append(bodies[r.URL.Path], b)
		mu.Unlock()
	}))
	defer srv.Close()
	cfg := testConfig(t, nil)
	s := config.DefaultRoute()
	s.Name, s.URL, s.Format, s.AppID, s.DeviceType, s.Body = "s", srv.URL+"/sensoro", "sensoro", "123456", "node", config.BodyObject
	s.Batch.Linger = config.Duration(5 * time.Millisecond)
	tp := config.DefaultRoute()
	tp.Name, tp.URL, tp.Format = "t", srv.URL+"/template", "template"
	tp.Template = `{"dev": "$$serial", "t": "$$data.temp", "note": "t=$$data.temp"}`
	tp.Batch.Linger = config.Duration(5 * time.Millisecond)
	cfg.Routes = append(cfg.Routes, s, tp)
	cfg.Resolve()
	r := startRelay(t, cfg)
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "F1"}, 1)
	const n = 5
	for i := range n {
		if _, err := d.Send([]byte(fmt.Sprintf(`{"temp":%d.5,"i":%d}`, 20+i, i))); err != nil {
			t.Fatal(err)
		}
	}
	waitAcked(t, d, n)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		var tm int
		for _, b := range bodies["/template"] {
			var arr []json.RawMessage
			if err := json.Unmarshal(b, &arr); err != nil {
				return fmt.Errorf("template body %s: %v", b, err)
			}
			tm += len(arr)
		}
		if len(bodies["/sensoro"]) != n || tm != n {
			return fmt.Errorf("%d sensoro requests, %d template messages; want %d each", len(bodies["/sensoro"]), tm, n)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for i, b := range bodies["/sensoro"] {
		var m struct {
			AppID, SN, Type, DeviceType, MsgID string
			Data                               map[string]any
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("sensoro body %d is not one object: %s", i, b)
		}
		if m.AppID != "123456" || m.SN != "F1" || m.Type != "text" || m.DeviceType != "node" || m.Data["temp"] == nil {
			t.Fatalf("sensoro push %s", b)
		}
	}
	var first []map[string]any
	if err := json.Unmarshal(bodies["/template"][0], &first); err != nil {
		t.Fatal(err)
	}
	if m := first[0]; m["dev"] != "F1" || m["t"] != 20.5 || m["note"] != "t=20.5" {
		t.Fatalf("template message %v: want dev F1, t the number 20.5, note the text", m)
	}
}

// Device metadata and filters: [CUSTOM1] in a header carries each device's own credential; a
// route filtered by tag gets only the tagged device; an unfiltered one gets both; the metadata's
// IMEI fills [IMEI] and the envelope for a device that did not send one.
func TestFleetMetadataAndFilters(t *testing.T) {
	type got struct{ path, auth, imei string }
	var (
		mu   sync.Mutex
		seen []got
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var batch []struct {
			Serial string `json:"serial"`
			IMEI   string `json:"imei"`
		}
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		for _, m := range batch {
			seen = append(seen, got{r.URL.Path, r.Header.Get("Authorization"), m.IMEI})
		}
		mu.Unlock()
	}))
	defer srv.Close()
	cfg := testConfig(t, nil)
	cfg.Fleet = []config.Device{
		{ID: "EU1", IMEI: "356938035643809", Custom1: "key-eu1", Tags: []string{"eu", "cold-chain"}},
		{ID: "US1", Custom1: "key-us1", Groups: []string{"trucks"}},
	}
	eu := config.DefaultRoute()
	eu.Name, eu.URL = "eu", srv.URL+"/eu/[IMEI]"
	eu.Headers = map[string]string{"Authorization": "Bearer [CUSTOM1]"}
	eu.Filter = config.Filter{Tags: []string{"eu"}}
	eu.Batch.Linger = config.Duration(5 * time.Millisecond)
	all := config.DefaultRoute()
	all.Name, all.URL = "all", srv.URL+"/all"
	all.Headers = map[string]string{"Authorization": "Bearer [CUSTOM1]"}
	all.Batch.Linger = config.Duration(5 * time.Millisecond)
	cfg.Routes = append(cfg.Routes, eu, all)
	cfg.Resolve()
	r := startRelay(t, cfg)
	for _, id := range []string{"EU1", "US1"} {
		d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: id}, 1)
		if _, err := d.Send(record(id, 1, 0)); err != nil {
			t.Fatal(err)
		}
		waitAcked(t, d, 1)
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != 3 {
			return fmt.Errorf("%d messages arrived, want 3 (EU1 twice, US1 once)", len(seen))
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond) // nothing more may come
	mu.Lock()
	defer mu.Unlock()
	want := map[got]bool{
		{"/eu/356938035643809", "Bearer key-eu1", "356938035643809"}: true,
		{"/all", "Bearer key-eu1", "356938035643809"}:                true,
		{"/all", "Bearer key-us1", ""}:                               true,
	}
	for _, g := range seen {
		if !want[g] {
			t.Errorf("unexpected delivery %+v", g)
		}
		delete(want, g)
	}
	if len(want) > 0 || len(seen) != 3 {
		t.Fatalf("missing %v (got %v)", want, seen)
	}
}

// A 503 with Retry-After: 2 holds the next attempt back by at least 2 s (the backoff alone would
// retry within 200 ms here).
func TestRetryAfterHonoured(t *testing.T) {
	var (
		mu    sync.Mutex
		times []time.Time
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		times = append(times, time.Now())
		first := len(times) == 1
		mu.Unlock()
		if first {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(503)
		}
	}))
	defer srv.Close()
	cfg := testConfig(t, nil)
	rt := config.DefaultRoute()
	rt.Name, rt.URL = "ra", srv.URL+"/in"
	rt.Batch.Linger = 0
	cfg.Routes = append(cfg.Routes, rt)
	cfg.Resolve()
	r := startRelay(t, cfg)
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "RA1"}, 1)
	if _, err := d.Send(record("RA1", 1, 0)); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, r, `fleetrelay_route_delivered_messages_total{route="ra"}`, 1)
	mu.Lock()
	defer mu.Unlock()
	if len(times) != 2 {
		t.Fatalf("%d requests, want 2", len(times))
	}
	if gap := times[1].Sub(times[0]); gap < 2*time.Second {
		t.Fatalf("retried %v after Retry-After: 2", gap)
	}
}

// method PUT, any number of headers with every dynamic field, and enabled: a disabled route
// takes nothing new; what it had queued waits in the store and goes out once it is enabled again.
func TestRouteMethodHeadersEnabled(t *testing.T) {
	type req struct{ method, path, headers string }
	var (
		mu   sync.Mutex
		seen []req
		is   []int
		up   atomic.Bool
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var batch []struct {
			Data struct{ I int } `json:"data"`
		}
		_ = json.NewDecoder(r.Body).Decode(&batch)
		if !up.Load() {
			w.WriteHeader(503)
			return
		}
		var h []string
		for i := range 6 {
			h = append(h, r.Header.Get(fmt.Sprintf("X-F%d", i)))
		}
		mu.Lock()
		seen = append(seen, req{r.Method, r.URL.Path, strings.Join(h, ",")})
		for _, m := range batch {
			is = append(is, m.Data.I)
		}
		mu.Unlock()
	}))
	defer srv.Close()
	cfg := testConfig(t, nil)
	cfg.Fleet = []config.Device{{ID: "PUT1", IMEI: "356938035643809", ICCID: "8944501234567890123", Custom1: "c1", Custom2: "c2", Custom3: "c3"}}
	rt := config.DefaultRoute()
	rt.Name, rt.URL, rt.Method = "put", srv.URL+"/dev/[SERIAL]", "PUT"
	rt.Headers = map[string]string{"X-F0": "[SERIAL]", "X-F1": "[IMEI]", "X-F2": "[ICCID]", "X-F3": "[CUSTOM1]", "X-F4": "[CUSTOM2]", "X-F5": "k-[CUSTOM3]"}
	rt.Batch.Linger = config.Duration(5 * time.Millisecond)
	cfg.Routes = append(cfg.Routes, rt)
	cfg.Resolve()

	send := func(r *relay.Relay, first uint64, is ...int) {
		d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: "PUT1"}, first)
		for k, i := range is {
			if _, err := d.Send(record("PUT1", first+uint64(k), i)); err != nil {
				t.Fatal(err)
			}
		}
		waitAcked(t, d, first+uint64(len(is))-1)
		d.Close()
	}
	stop := func(r *relay.Relay) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Endpoint down: 0 and 1 stay queued.
	r := startRelay(t, cfg)
	send(r, 1, 0, 1)
	stop(r)
	// Disabled: 2 is stored (acknowledged) but not taken by the route.
	off := false
	cfg.Routes[0].Enabled = &off
	up.Store(true)
	r = startRelay(t, cfg)
	send(r, 3, 2)
	stop(r)
	// Enabled again: the queued 0 and 1 go out, 2 never does.
	cfg.Routes[0].Enabled = nil
	r = startRelay(t, cfg)
	waitMetric(t, r, `fleetrelay_route_delivered_messages_total{route="put"}`, 2)
	send(r, 4, 3)
	waitMetric(t, r, `fleetrelay_route_delivered_messages_total{route="put"}`, 3)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(is, []int{0, 1, 3}) {
		t.Errorf("endpoint received %v, want 0, 1 (queued before the route was disabled) and 3, not 2", is)
	}
	for _, s := range seen {
		if s != (req{"PUT", "/dev/PUT1", "PUT1,356938035643809,8944501234567890123,c1,c2,k-c3"}) {
			t.Errorf("request %+v", s)
		}
	}
}
