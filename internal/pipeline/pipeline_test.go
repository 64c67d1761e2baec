package pipeline_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/fields"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
	"github.com/fleetrelay/fleetrelay/internal/pipeline"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// deliverOne runs a real store and actor system with one route delivered by a pipeline built
// from o (Client and Route filled in) to srv, stores one frame of one record, and waits until
// the route has delivered it.
func deliverOne(t *testing.T, srv *httptest.Server, o pipeline.Options) {
	t.Helper()
	client := deliver.NewClient(deliver.Options{AllowPrivateNetworks: true})
	defer client.Close()
	st, err := store.Open(context.Background(), store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	id, err := st.RouteID("r")
	if err != nil {
		t.Fatal(err)
	}
	u, err := fields.CompileURL(srv.URL + "/in")
	if err != nil {
		t.Fatal(err)
	}
	o.Route, o.Client = "r", client
	metrics := actors.NewMetrics(prometheus.NewRegistry())
	sys := actors.New(actors.Options{Journal: st, Metrics: metrics, Routes: []*actors.Route{{ID: id, Name: "r", URL: u,
		MaxMessages: 10, MaxBytes: 1 << 20, Concurrency: 1, Deliver: pipeline.New(o)}}})
	// The store's two phases, in the relay's order: recovered, the system built on it, then
	// started with the system's hook.
	if err := st.Start(store.Hooks{OnCommit: sys.OnCommit}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sys.Stop(ctx); err != nil {
			t.Error(err)
		}
	}()
	done := make(chan error, 1)
	st.Append(&store.Frame{Device: "D1", Serial: "D1", Seq: 1, ReceivedAt: time.Now().UnixMilli(), Routes: []uint16{id},
		Records: [][]byte{[]byte(`{"a":1}`)}}, func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkfor.Check(t, 20*time.Second, 5*time.Millisecond, func() error {
		if n := value(metrics.Delivered.WithLabelValues("r")); n != 1 {
			return fmt.Errorf("%v delivered, want 1", n)
		}
		return nil
	})
}

// The request outcome "success" is what the route's success codes say, not 2xx: with
// success_codes [202], a 200 is a failed request (retried), the 202 after it the success; with
// 400 listed, a 400 is a success.
func TestOutcomeFollowsSuccessCodes(t *testing.T) {
	for _, c := range []struct {
		codes                   []int
		statuses                []int // answered in turn, the last one from then on
		success, status, failed float64
	}{
		{[]int{202}, []int{200, 202}, 1, 1, 1},
		{[]int{200, 400}, []int{400}, 1, 0, 0},
		{nil, []int{503, 204}, 1, 1, 1},
	} {
		t.Run(fmt.Sprint(c.codes, c.statuses), func(t *testing.T) {
			var mu sync.Mutex
			n := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				mu.Lock()
				s := c.statuses[min(n, len(c.statuses)-1)]
				n++
				mu.Unlock()
				w.WriteHeader(s)
			}))
			defer srv.Close()
			policy := &deliver.Policy{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
			if len(c.codes) > 0 {
				ok := map[int]bool{}
				for _, code := range c.codes {
					ok[code] = true
				}
				policy.Success = func(status int) bool { return ok[status] }
			}
			m := pipeline.NewMetrics(prometheus.NewRegistry())
			deliverOne(t, srv, pipeline.Options{Method: "POST", Policy: policy, Metrics: m})
			got := func(outcome string) float64 { return value(m.Attempts.WithLabelValues("r", outcome)) }
			if got("success") != c.success || got("status") != c.status || got("error") != 0 {
				t.Errorf("requests: success %v, status %v, error %v; want %v, %v, 0", got("success"), got("status"), got("error"), c.success, c.status)
			}
			if r := value(m.Retried.WithLabelValues("r")); r != c.failed {
				t.Errorf("retries %v, want %v", r, c.failed)
			}
			if f := value(m.Failed.WithLabelValues("r")); f != c.failed {
				t.Errorf("failed messages %v, want %v", f, c.failed)
			}
		})
	}
}

// value is the value of a counter.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
