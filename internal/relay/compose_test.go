package relay_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/relay"
)

// Shutdown is idempotent and safe for concurrent use: concurrent calls all get the first call's
// result, and a call after it has finished returns that result at once, even with a context that
// is already done (a call that waited would answer the context's error).
func TestShutdownIdempotent(t *testing.T) {
	cfg := testConfig(t, startSink(t))
	r := startRelay(t, cfg) // shut down below (and once more by the test's cleanup)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = r.Shutdown(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Shutdown #%d = %v, want nil", i, err)
		}
	}
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if err := r.Shutdown(done); err != nil {
		t.Errorf("Shutdown after shutdown, with a done context = %v, want the first result (nil)", err)
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Errorf("third Shutdown = %v, want nil", err)
	}
	// The relay is really down: its store released the data directory.
	again, err := relay.New(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("New on the data directory after Shutdown = %v", err)
	}
	if err := again.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown of a relay never started = %v", err)
	}
}

// Every component registers its own collectors on the relay's registry: the series the store,
// the device listeners, the actor system and the tasks expose are all there, with their names and labels
// (the README's Metrics section names them), each registered once.
func TestMetricsOfEveryComponent(t *testing.T) {
	sink := startSink(t)
	cfg := testConfig(t, sink)
	cfg.Devices.NDJSON.TCP = "127.0.0.1:0"
	r := startRelay(t, cfg)
	_, body := httpGet(t, "http://"+r.AdminAddr().String()+"/metrics")
	var series []string
	helps := map[string]int{}
	for line := range strings.Lines(body) {
		line = strings.TrimSpace(line)
		if name, ok := strings.CutPrefix(line, "# HELP "); ok {
			helps[strings.Fields(name)[0]]++
			continue
		}
		if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[0], "fleetrelay_") {
			series = append(series, f[0])
		}
	}
	for _, want := range []string{
		// store
		"fleetrelay_store_commit_seconds_count", "fleetrelay_store_commit_wait_seconds_count", "fleetrelay_store_commit_frames_count",
		"fleetrelay_store_resident_messages", "fleetrelay_store_devices", "fleetrelay_store_cold_messages", "fleetrelay_store_free_bytes",
		"fleetrelay_store_min_free_bytes", "fleetrelay_store_ingest_refused", "fleetrelay_store_refused_frames_total",
		`fleetrelay_route_backlog_messages{route="test"}`, `fleetrelay_route_dead_letter_messages{route="test"}`,
		// netio
		"fleetrelay_device_connections", "fleetrelay_device_frames_total", "fleetrelay_device_bytes_total",
		"fleetrelay_device_errors_total", "fleetrelay_device_refused_total", "fleetrelay_udp_dropped_total",
		"fleetrelay_ndjson_lines_total", "fleetrelay_ndjson_inflight_bytes",
		"fleetrelay_device_source_refused_total", "fleetrelay_device_first_data_timeouts_total",
		`fleetrelay_ndjson_dropped_total{reason="malformed"}`, `fleetrelay_ndjson_dropped_total{reason="identity"}`,
		`fleetrelay_ndjson_dropped_total{reason="too_long"}`, `fleetrelay_ndjson_dropped_total{reason="shutdown"}`,
		// actors
		`fleetrelay_ndjson_dropped_total{reason="native"}`, `fleetrelay_ndjson_dropped_total{reason="store"}`,
		`fleetrelay_route_oldest_pending_seconds{route="test"}`, "fleetrelay_device_actors", "fleetrelay_udp_resends_total",
		"fleetrelay_frame_store_seconds_count", "fleetrelay_unknown_identities", "fleetrelay_unknown_identities_refused_total",
		// Teltonika: netio, then actors
		"fleetrelay_teltonika_packets_total", `fleetrelay_teltonika_bad_packets_total{reason="crc"}`, `fleetrelay_teltonika_bad_packets_total{reason="count"}`,
		"fleetrelay_teltonika_framing_errors_total", "fleetrelay_teltonika_pings_total", "fleetrelay_teltonika_responses_total",
		"fleetrelay_teltonika_refused_total", "fleetrelay_teltonika_datagrams_total", "fleetrelay_teltonika_datagrams_dropped_total",
		"fleetrelay_teltonika_records_total", "fleetrelay_teltonika_duplicates_total", "fleetrelay_teltonika_acks_total",
		"fleetrelay_teltonika_stray_responses_total",
		// tasks
		`fleetrelay_tasks{state="queued"}`, `fleetrelay_tasks{state="sent"}`, `fleetrelay_tasks{state="succeeded"}`,
		`fleetrelay_tasks{state="failed"}`, `fleetrelay_tasks{state="expired"}`, "fleetrelay_tasks_pruned_total",
	} {
		if n := countOf(series, want); n != 1 {
			t.Errorf("/metrics has %d series %s, want 1", n, want)
		}
	}
	for name, n := range helps {
		if n != 1 {
			t.Errorf("/metrics has %d HELP lines for %s, want 1", n, name)
		}
	}
}

func countOf(s []string, v string) int {
	n := 0
	for i := slices.Index(s, v); i >= 0; i = slices.Index(s, v) {
		n++
		s = s[i+1:]
	}
	return n
}
