package store_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

// Ingest admission (admit.go): new frames wait for delivery only while a route that delivers
// falls behind; a route that delivers nothing (an outage) never holds ingest, nor does the
// backlog it left once it delivers again. Every frame is stored in every case.
func TestIngestHold(t *testing.T) {
	const hold = 100
	s := open(t, t.TempDir(), func(o *store.Options) { o.IngestHold = hold })
	defer mustClose(t, s)
	r, err := s.RouteID("r")
	if err != nil {
		t.Fatal(err)
	}
	seq := map[string]uint64{}
	appendN := func(dev string, n int) {
		t.Helper()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		for range n {
			seq[dev]++
			wg.Add(1)
			s.Append(&store.Frame{Device: dev, Seq: seq[dev], PrevSeq: seq[dev] - 1, Records: [][]byte{[]byte(`{"a":1}`)}, Routes: []uint16{r}},
				func(err error) {
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
					wg.Done()
				})
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("Append: %v", errs[0])
		}
	}
	holds := func() uint64 { return s.Stats().IngestHolds }

	// An outage: the route delivers nothing, its backlog grows far beyond the threshold.
	appendN("a", 10*hold)
	appendN("a", 1)
	if n := holds(); n != 0 {
		t.Fatalf("IngestHolds = %d while the route delivered nothing, want 0", n)
	}

	// The endpoint is back and delivers part of the backlog: what it left behind holds nothing.
	refs := pendingRefs(t, s, r)
	s.MarkDelivered(r, refs[:hold])
	appendN("a", hold/2)
	if n := holds(); n != 0 {
		t.Fatalf("IngestHolds = %d after the outage's backlog started to drain, want 0", n)
	}

	// Ingest outruns a delivering route by more than the threshold: the next batch waits.
	appendN("b", 2*hold)
	appendN("b", 1)
	if n := holds(); n == 0 {
		t.Fatal("IngestHolds = 0 with a delivering route behind by twice the threshold, want a hold")
	}
	if got, want := len(pendingRefs(t, s, r)), 10*hold+1+hold/2+2*hold+1-hold; got != want {
		t.Fatalf("%d records pending after the holds, want %d: %s", got, want, fmt.Sprint(s.Stats()))
	}
}
