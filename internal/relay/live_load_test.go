package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/api/apitest"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/relaytest"
	"github.com/fleetrelay/fleetrelay/loadgen"
)

// apiSession sends admin API requests with one key through the validating client: every
// exchange is checked against the OpenAPI document.
type apiSession struct {
	t    testing.TB
	c    *http.Client
	base string
	key  string
}

// do sends method path with body (JSON, or none when "") and fails the test unless the answer
// has status want; it returns the answer's body.
func (s *apiSession) do(method, path, body string, want int) []byte {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
		if method == http.MethodPatch {
			req.Header.Set("Content-Type", "application/merge-patch+json")
		}
	}
	req.Header.Set("Authorization", "Bearer "+s.key)
	resp, err := s.c.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		s.t.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, b, want)
	}
	return b
}

// Live route change under load (issue 12's acceptance): a fleet sends continuously while the
// route's URL, batch size, format and enabled change through the API. Every acknowledged
// message the route had to take arrives at the old or the new URL (there are no dead letters:
// both endpoints accept everything), and each device's messages arrive in order at each
// endpoint. Then a forced delete of a route holding a backlog discards exactly what its answer
// and its metric say.
func TestLiveRouteChangeUnderLoad(t *testing.T) {
	sinkA, sinkB := relaytest.StartSink(t), relaytest.StartSink(t)
	cfg := relaytest.Config(t, "")
	const key = "fr_live-route-change-under-load-test-key-000000000"
	cfg.Admin.BootstrapKey = config.SecretValue(key)
	r := relaytest.Start(t, cfg)
	api := &apiSession{t: t, c: apitest.Client(t), base: "http://" + r.AdminAddr().String(), key: key}

	api.do("POST", "/api/v1/routes", fmt.Sprintf(`{"name":"live","url":%q,"batch":{"max_messages":50,"linger":"5ms"}}`,
		sinkA.URL()+"/ingest"), http.StatusCreated)

	// The fleet: each device sends frames of one record as fast as its window allows.
	const devices = 12
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	devs := make([]*loadgen.Device, devices)
	var wg sync.WaitGroup
	for i := range devs {
		d := loadgen.NewDevice(loadgen.DeviceConfig{Addr: r.DeviceTCPAddr().String(),
			Hello: native.Hello{Serial: fmt.Sprintf("LIVE%02d", i)}, Window: 8}, 1)
		if err := d.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		devs[i] = d
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				if _, err := d.Send([]byte(fmt.Sprintf(`{"n":%d}`, n))); err != nil {
					t.Errorf("device %d: %v", i, err)
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	pause := func() { time.Sleep(400 * time.Millisecond) }
	pause()
	api.do("PATCH", "/api/v1/routes/live", fmt.Sprintf(`{"url":%q}`, sinkB.URL()+"/ingest"), http.StatusOK)
	pause()
	api.do("PATCH", "/api/v1/routes/live", `{"batch":{"max_messages":7}}`, http.StatusOK)
	pause()
	api.do("PATCH", "/api/v1/routes/live",
		`{"format":"template","template":"{\"serial\":\"$$serial\",\"seq\":\"$$seq\",\"index\":\"$$index\",\"data\":\"$$data\",\"via\":\"template\"}"}`,
		http.StatusOK)
	pause()
	// Disabled, the route takes nothing new: what was acknowledged before the request must
	// arrive, what is sent after it is enabled again must arrive too.
	ackedBefore := make([]uint64, devices)
	for i, d := range devs {
		ackedBefore[i] = d.Acked()
	}
	api.do("PATCH", "/api/v1/routes/live", `{"enabled":false}`, http.StatusOK)
	pause()
	api.do("PATCH", "/api/v1/routes/live", `{"enabled":true}`, http.StatusOK)
	sentAfter := make([]uint64, devices)
	for i, d := range devs {
		sentAfter[i] = d.NextSeq()
	}
	pause()
	stop()
	wg.Wait()
	final := make([]uint64, devices)
	for i, d := range devs {
		wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := d.WaitAcked(wctx, d.NextSeq()-1); err != nil {
			t.Fatalf("device %d: not every frame acknowledged: %v", i, err)
		}
		cancel()
		final[i] = d.Acked()
	}

	// Every message the route had to take arrives at A or B.
	must := func(i int, seq uint64) bool { return seq <= ackedBefore[i] || (seq >= sentAfter[i] && seq <= final[i]) }
	expected := 0
	for i := range devs {
		for seq := uint64(1); seq <= final[i]; seq++ {
			if must(i, seq) {
				expected++
			}
		}
	}
	got := func() (map[string]bool, int) {
		seen := map[string]bool{}
		for _, s := range []*loadgen.Sink{sinkA, sinkB} {
			for _, m := range s.Messages() {
				seen[fmt.Sprintf("%s/%d", m.Serial, m.Seq)] = true
			}
		}
		n := 0
		for i := range devs {
			for seq := uint64(1); seq <= final[i]; seq++ {
				if must(i, seq) && seen[fmt.Sprintf("LIVE%02d/%d", i, seq)] {
					n++
				}
			}
		}
		return seen, n
	}
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if _, n := got(); n < expected {
			return fmt.Errorf("%d of %d messages arrived", n, expected)
		}
		return nil
	})
	if b := api.do("GET", "/api/v1/routes/live/dead-letters", "", http.StatusOK); !bytes.Contains(b, []byte(`"letters":0`)) {
		t.Errorf("dead letters: %s", b)
	}

	// Per-device order at each endpoint (first arrivals; a resent batch may repeat messages).
	for name, s := range map[string]*loadgen.Sink{"A": sinkA, "B": sinkB} {
		last := map[string]uint64{}
		seen := map[string]bool{}
		for _, m := range s.Messages() {
			k := fmt.Sprintf("%s/%d", m.Serial, m.Seq)
			if seen[k] {
				continue
			}
			seen[k] = true
			if m.Seq < last[m.Serial] {
				t.Errorf("sink %s: %s seq %d arrived after seq %d", name, m.Serial, m.Seq, last[m.Serial])
			}
			last[m.Serial] = m.Seq
		}
		if len(s.Messages()) == 0 {
			t.Errorf("sink %s received nothing", name)
		}
	}
	// The changes took effect: the template's field reached B, and B's batches after the batch
	// change hold at most 7 messages.
	var templ, large int
	for _, m := range sinkB.Messages() {
		if bytes.Contains(m.Data, []byte(`"n"`)) && m.MsgID == "" {
			templ++
		}
	}
	for _, b := range sinkB.Batches() {
		if b.Messages > 7 {
			large++
		}
	}
	if templ == 0 {
		t.Errorf("no message rendered by the template reached B")
	}
	t.Logf("%d messages expected, %d at A, %d at B (%d by the template), %d batches at B larger than 7 (before the change)",
		expected, len(sinkA.Messages()), len(sinkB.Messages()), templ, large)

	// A forced delete discards exactly what it says: a route whose endpoint fails holds every
	// message sent to it.
	sinkC := relaytest.StartSink(t)
	sinkC.SetStatus(func(string, []byte) int { return http.StatusServiceUnavailable })
	api.do("POST", "/api/v1/routes", fmt.Sprintf(`{"name":"failing","url":%q,"filter":{"imeis":["356000000000001"]}}`,
		sinkC.URL()+"/ingest"), http.StatusCreated)
	d := loadgen.NewDevice(loadgen.DeviceConfig{Addr: r.DeviceTCPAddr().String(),
		Hello: native.Hello{Serial: "HELD", IMEI: "356000000000001"}}, 1)
	if err := d.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const held = 40
	for n := range held {
		if _, err := d.Send([]byte(fmt.Sprintf(`{"h":%d}`, n))); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.WaitAcked(wctx, held); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var v struct {
			Holdings struct {
				Backlog int `json:"backlog"`
			} `json:"holdings"`
		}
		if err := json.Unmarshal(api.do("GET", "/api/v1/routes/failing", "", http.StatusOK), &v); err != nil {
			return err
		}
		if v.Holdings.Backlog != held {
			return fmt.Errorf("backlog %d, want %d", v.Holdings.Backlog, held)
		}
		return nil
	})
	// A route added while the relay runs has its store gauges at once.
	_, metrics := httpGet(t, "http://"+r.AdminAddr().String()+"/metrics")
	if want := fmt.Sprintf(`fleetrelay_route_backlog_messages{route="failing"} %d`, held); !strings.Contains(metrics, want) {
		t.Errorf("metrics lack %q", want)
	}
	api.do("DELETE", "/api/v1/routes/failing", "", http.StatusConflict)
	var del struct {
		Discarded struct {
			Backlog     int `json:"backlog"`
			DeadLetters int `json:"dead_letters"`
		} `json:"discarded"`
	}
	if err := json.Unmarshal(api.do("DELETE", "/api/v1/routes/failing?force=true", "", http.StatusOK), &del); err != nil {
		t.Fatal(err)
	}
	if del.Discarded.Backlog+del.Discarded.DeadLetters != held {
		t.Errorf("forced delete discarded %+v, want %d messages", del.Discarded, held)
	}
	_, metrics = httpGet(t, "http://"+r.AdminAddr().String()+"/metrics")
	if want := fmt.Sprintf(`fleetrelay_route_discarded_messages_total{route="failing"} %d`, held); !strings.Contains(metrics, want) {
		t.Errorf("metrics lack %q", want)
	}
	api.do("GET", "/api/v1/routes/failing", "", http.StatusNotFound)
	if strings.Contains(metrics, `fleetrelay_route_backlog_messages{route="failing"}`) {
		t.Errorf("a deleted route keeps its backlog gauge")
	}
}
