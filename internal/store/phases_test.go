package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// The two phases: a recovered store answers reads but refuses new data until Start; Start runs
// once; a store closed without Start closes cleanly; a cancelled context stops Open.
func TestOpenThenStart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	r, err := s.RouteID("r")
	if err != nil {
		t.Fatal(err)
	}
	appendWait(t, s, frame("a", 1, 2, r), frame("a", 2, 1, r))
	mustClose(t, s)

	s, err = store.Open(t.Context(), store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.LastSeq("a"); got != 2 {
		t.Errorf("recovered LastSeq(a) = %d, want 2", got)
	}
	if got := len(pendingRefs(t, s, r)); got != 3 {
		t.Errorf("recovered Pending(r) = %d records, want 3", got)
	}
	if err := appendErr(s, frame("a", 3, 1, r)); !errors.Is(err, store.ErrNotStarted) {
		t.Errorf("Append before Start = %v, want ErrNotStarted", err)
	}
	if got := s.LastSeq("a"); got != 2 {
		t.Errorf("LastSeq(a) after a refused Append = %d, want 2", got)
	}
	mustClose(t, s) // never started
	if err := s.Start(store.Hooks{}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}

	s = open(t, dir)
	if err := s.Start(store.Hooks{}); !errors.Is(err, store.ErrStarted) {
		t.Errorf("second Start = %v, want ErrStarted", err)
	}
	appendWait(t, s, frame("a", 3, 1, r))
	mustClose(t, s)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if s, err := store.Open(ctx, store.Options{Dir: dir}); !errors.Is(err, context.Canceled) {
		if err == nil {
			mustClose(t, s)
		}
		t.Errorf("Open with a cancelled context = %v, want context.Canceled", err)
	}
}

// Delivery marks made between Open and Start (a route that delivers before the store starts)
// reach OnDelivered once Start installs it, and are persisted by the first commit.
func TestMarksBeforeStart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	r, _ := s.RouteID("r")
	appendWait(t, s, frame("a", 1, 1, r), frame("a", 2, 1, r))
	mustClose(t, s)

	s, err := store.Open(t.Context(), store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s.MarkDelivered(r, pendingRefs(t, s, r))
	if got := s.DeliveredSeq("a"); got != 2 {
		t.Errorf("DeliveredSeq(a) after the marks = %d, want 2", got)
	}
	rec := &recorder{}
	if err := s.Start(store.Hooks{OnDelivered: rec.add}); err != nil {
		t.Fatal(err)
	}
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if got := rec.last("a"); got != 2 {
			return fmt.Errorf("OnDelivered(a) = %d, want 2", got)
		}
		return nil
	})
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if st := s.Stats(); st.SegmentsLive != 0 {
			return fmt.Errorf("%d segments live after every record was marked, want 0", st.SegmentsLive)
		}
		return nil
	})
	mustClose(t, s)

	s = open(t, dir)
	defer mustClose(t, s)
	if n := s.Backlog(r); n != 0 {
		t.Errorf("Backlog(r) after reopening = %d, want 0: the marks made before Start were not persisted", n)
	}
}

// The store registers its own collectors: the per-route gauges of the routes running when
// scraped (names without a route ID skipped), reading its state when scraped.
func TestRegisterMetrics(t *testing.T) {
	s := open(t, t.TempDir())
	defer mustClose(t, s)
	r, _ := s.RouteID("r")
	appendWait(t, s, frame("a", 1, 3, r))
	reg := prometheus.NewRegistry()
	// A name without a route ID has nothing stored: no gauges, and no error.
	if err := s.RegisterMetrics(reg, func() []string { return []string{"r", "unknown"} }); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetGauge() != nil:
				got[mf.GetName()] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				got[mf.GetName()] = float64(m.GetHistogram().GetSampleCount())
			case m.GetCounter() != nil:
				got[mf.GetName()] = m.GetCounter().GetValue()
			}
		}
	}
	for name, want := range map[string]float64{
		"fleetrelay_route_backlog_messages":     3,
		"fleetrelay_route_dead_letter_messages": 0,
		"fleetrelay_store_resident_messages":    3,
		"fleetrelay_store_commit_frames":        1, // one commit observed
		"fleetrelay_store_ingest_holds_total":   0, // a route that delivered nothing holds nothing
	} {
		if _, ok := got[name]; !ok {
			t.Errorf("%s is not registered", name)
		}
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
}
