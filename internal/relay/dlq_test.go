package relay_test

import (
	"context"
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
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/deadletter"
	"github.com/fleetrelay/fleetrelay/internal/relay"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// switchable is an endpoint that answers fail until it is switched to success, and records
// the "i" field of every message of every successful request.
type switchable struct {
	*httptest.Server
	fail atomic.Int32 // status to answer; 0: 204
	mu   sync.Mutex
	got  []int
}

func newSwitchable(t *testing.T, fail int) *switchable {
	s := &switchable{}
	s.fail.Store(int32(fail))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if st := s.fail.Load(); st != 0 {
			w.WriteHeader(int(st))
			return
		}
		var msgs []struct {
			Data struct{ I int } `json:"data"`
		}
		if err := json.Unmarshal(body, &msgs); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		for _, m := range msgs {
			s.got = append(s.got, m.Data.I)
		}
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *switchable) received() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// sendAcked sends n one-record frames ("i" 0..n-1) and waits until all are acknowledged.
func sendAcked(t *testing.T, r *relay.Relay, serial string, n int) {
	t.Helper()
	d := connect(t, r.DeviceTCPAddr().String(), native.Hello{Serial: serial}, 1)
	var last uint64
	for i := range n {
		seq, err := d.Send(record(serial, uint64(i+1), i))
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.WaitAcked(ctx, last); err != nil {
		t.Fatal(err)
	}
}

// adminConfig is cfg with the admin listener the running relay actually has, as an operator's
// config would name it, and the relay's bootstrap key (from <data_dir>/admin.key).
func adminConfig(t *testing.T, cfg *config.Config, r *relay.Relay) (*config.Config, string) {
	t.Helper()
	c := *cfg
	c.Admin.Listen = r.AdminAddr().String()
	b, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	return &c, strings.TrimSpace(string(b))
}

// waitDelivered waits until the endpoint has exactly want (in any order) and checks it got
// nothing twice.
func waitDelivered(t *testing.T, s *switchable, want []int) {
	t.Helper()
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		got := s.received()
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("endpoint has %v, want %v", got, want)
		}
		return nil
	})
}

// replayEntries counts the replay entries left in a stopped relay's data directory.
func replayEntries(t *testing.T, dir, route string) int {
	t.Helper()
	st, err := store.Open(t.Context(), store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := 0
	if err := st.Replaying(st.Routes()[route], func(*store.DeadLetter) bool { n++; return true }); err != nil {
		t.Fatal(err)
	}
	return n
}

// dlConfig is a test relay with one route, name, to url, with retry as given.
func dlConfig(t *testing.T, name, url string, linger time.Duration, retry *config.Retry) *config.Config {
	cfg := testConfig(t, nil)
	rt := config.DefaultRoute()
	rt.Name, rt.URL = name, url
	rt.Batch.Linger = config.Duration(linger)
	rt.Retry = retry
	cfg.Routes = append(cfg.Routes, rt)
	cfg.Resolve()
	return cfg
}

// max_attempts: a batch that fails that many times moves to the dead-letter list with its last
// status; replayed through the running relay, every message arrives exactly once.
func TestMaxAttemptsDeadLetterAndReplay(t *testing.T) {
	ep := newSwitchable(t, http.StatusServiceUnavailable)
	cfg := dlConfig(t, "dl", ep.URL+"/in", 5*time.Millisecond,
		&config.Retry{InitialBackoff: config.Duration(10 * time.Millisecond), MaxBackoff: config.Duration(50 * time.Millisecond), MaxAttempts: 4})
	r := startRelay(t, cfg)
	sendAcked(t, r, "DL1", 6)
	waitMetric(t, r, `fleetrelay_route_dead_lettered_messages_total{route="dl"}`, 6)
	waitMetric(t, r, `fleetrelay_route_backlog_messages{route="dl"}`, 0)
	waitMetric(t, r, `fleetrelay_route_dead_letter_messages{route="dl"}`, 6)
	if got := metric(t, r, `fleetrelay_route_failed_messages_total{route="dl"}`); got < 6 {
		t.Fatalf("failed messages = %v, want at least 6", got)
	}
	if got := metric(t, r, `fleetrelay_route_delivered_messages_total{route="dl"}`); got != 0 {
		t.Fatalf("delivered = %v while the endpoint fails", got)
	}
	if got := metric(t, r, `fleetrelay_route_requests_total{outcome="status",route="dl"}`); got < 4 {
		t.Fatalf("%v failed requests, want at least max_attempts (4)", got)
	}

	admin, key := adminConfig(t, cfg, r)
	if _, err := deadletter.List(t.Context(), admin, "fr_not-a-key", "dl", 100); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("List with a wrong key = %v, want 401", err)
	}
	page, err := deadletter.List(t.Context(), admin, key, "dl", 100)
	if err != nil {
		t.Fatal(err)
	}
	var is []int
	for _, d := range page.DeadLetters {
		if d.Status != 503 || d.Attempts != 4 || !strings.Contains(d.Error, "gave up") {
			t.Errorf("dead letter %d: status %d, %d attempts, error %q; want 503, 4, gave up", d.ID, d.Status, d.Attempts, d.Error)
		}
		for _, m := range d.Messages {
			var rec struct{ I int }
			if err := json.Unmarshal(m.Data, &rec); err != nil || m.Device != "DL1" || m.Seq != uint64(rec.I+1) {
				t.Errorf("dead message %+v (%v)", m, err)
			}
			is = append(is, rec.I)
		}
	}
	if page.Messages != 6 || !slices.Equal(is, []int{0, 1, 2, 3, 4, 5}) {
		t.Fatalf("dead-letter list has %d messages %v, want 0..5 in order", page.Messages, is)
	}

	ep.fail.Store(0)
	res, err := deadletter.Replay(t.Context(), admin, key, "dl")
	if err != nil || res.Messages != 6 {
		t.Fatalf("replay = %+v, %v; want 6 messages", res, err)
	}
	waitDelivered(t, ep, []int{0, 1, 2, 3, 4, 5})
	waitMetric(t, r, `fleetrelay_route_delivered_messages_total{route="dl"}`, 6)
	waitMetric(t, r, `fleetrelay_route_dead_letter_messages{route="dl"}`, 0)
	if page, err := deadletter.List(t.Context(), admin, key, "dl", 100); err != nil || page.Letters != 0 {
		t.Fatalf("after replay the list has %+v, %v; want it empty", page, err)
	}
	if again, err := deadletter.Replay(t.Context(), admin, key, "dl"); err != nil || again.Messages != 0 {
		t.Fatalf("second replay = %+v, %v; want nothing to replay", again, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := replayEntries(t, cfg.DataDir, "dl"); n != 0 {
		t.Fatalf("%d replay entries left after delivery: they would be delivered again", n)
	}
	if got := ep.received(); len(got) != 6 {
		t.Fatalf("endpoint received %d messages, want each of the 6 once", len(got))
	}
}

// retention: messages older than it move to the dead-letter list even though attempts are
// unlimited; listed and replayed with the relay stopped (straight in the data directory), they
// are delivered once the relay starts again.
func TestRetentionDeadLetterOfflineReplay(t *testing.T) {
	ep := newSwitchable(t, http.StatusInternalServerError)
	cfg := dlConfig(t, "ret", ep.URL+"/in", 5*time.Millisecond, &config.Retry{Retention: config.Duration(time.Second)})
	r := startRelay(t, cfg)
	sendAcked(t, r, "RT1", 3)
	waitMetric(t, r, `fleetrelay_route_dead_lettered_messages_total{route="ret"}`, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	// cfg.Admin.Listen is port 0: no relay answers there, so the data directory is used.
	page, err := deadletter.List(t.Context(), cfg, "", "ret", 100)
	if err != nil {
		t.Fatal(err)
	}
	if page.Messages != 3 {
		t.Fatalf("offline list: %d messages, want 3", page.Messages)
	}
	for _, d := range page.DeadLetters {
		if !strings.Contains(d.Error, "retention 1s exceeded") || (d.Attempts > 0 && d.Status != 500) {
			t.Errorf("dead letter %d: status %d, %d attempts, error %q; want retention exceeded, last status 500", d.ID, d.Status, d.Attempts, d.Error)
		}
	}
	if _, err := deadletter.List(t.Context(), cfg, "", "nope", 1); err == nil {
		t.Error("listing an unknown route succeeded")
	}
	res, err := deadletter.Replay(t.Context(), cfg, "", "ret")
	if err != nil || res.Letters != page.Letters || res.Messages != 3 {
		t.Fatalf("offline replay = %+v, %v; want %d letters, 3 messages", res, err, page.Letters)
	}

	ep.fail.Store(0)
	cfg.Routes[0].Retry.Retention = config.Duration(time.Hour)
	startRelay(t, cfg)
	waitDelivered(t, ep, []int{0, 1, 2})
}

// Messages that outlived the retention while the relay was down leave for the dead-letter list
// when it starts, without an attempt.
func TestRetentionExpiredAtStart(t *testing.T) {
	ep := newSwitchable(t, http.StatusInternalServerError)
	cfg := dlConfig(t, "old", ep.URL+"/in", time.Hour, nil) // nothing leaves before the shutdown
	r := startRelay(t, cfg)
	sendAcked(t, r, "OLD1", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // older than the retention below
	cfg.Routes[0].Retry.Retention = config.Duration(time.Second)
	cfg.Routes[0].Batch.Linger = 0
	ep.fail.Store(0)
	r = startRelay(t, cfg)
	waitMetric(t, r, `fleetrelay_route_dead_lettered_messages_total{route="old"}`, 2)
	admin, key := adminConfig(t, cfg, r)
	page, err := deadletter.List(t.Context(), admin, key, "old", 10)
	if err != nil {
		t.Fatal(err)
	}
	if page.Messages != 2 || page.DeadLetters[0].Attempts != 0 || page.DeadLetters[0].Error != "retention 1s exceeded" {
		t.Fatalf("dead letters %+v, want 2 messages given up without an attempt", page)
	}
	if got := ep.received(); len(got) != 0 {
		t.Fatalf("endpoint received %v: expired messages were sent", got)
	}
	// Purge: those younger than an hour stay; without an age, all go.
	if res, err := deadletter.Purge(t.Context(), admin, key, "old", time.Hour); err != nil || res.Messages != 0 {
		t.Fatalf("purge older than 1h = %+v, %v; want nothing", res, err)
	}
	if res, err := deadletter.Purge(t.Context(), admin, key, "old", 0); err != nil || res.Messages != 2 {
		t.Fatalf("purge = %+v, %v; want 2 messages", res, err)
	}
	waitMetric(t, r, `fleetrelay_route_dead_letter_messages{route="old"}`, 0)
	if page, err := deadletter.List(t.Context(), admin, key, "old", 10); err != nil || page.Letters != 0 {
		t.Fatalf("list after purge = %+v, %v; want empty", page, err)
	}
}
