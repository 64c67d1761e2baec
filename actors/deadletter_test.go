package actors_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/fields"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
	"github.com/fleetrelay/fleetrelay/internal/pipeline"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// dlJournal is a journal whose dead-letter writes fail on demand.
type dlJournal struct {
	journal
	mu        sync.Mutex
	failDead  int // fail this many of the next dead-letter writes
	dead      []*store.DeadLetter
	delivered []store.Ref
}

func (j *dlJournal) DeadLetter(d *store.DeadLetter, _ []uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.failDead > 0 {
		j.failDead--
		return errors.New("no space left on device")
	}
	j.dead = append(j.dead, d)
	return nil
}

func (j *dlJournal) MarkDelivered(_ uint16, refs []store.Ref) {
	j.mu.Lock()
	j.delivered = append(j.delivered, refs...)
	j.mu.Unlock()
}

// A dead letter that cannot be written loses nothing: the messages stay queued, are tried again
// after a pause, and are dead-lettered once the write succeeds, never marked done before.
func TestDeadLetterWriteFailureLosesNothing(t *testing.T) {
	var attempts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		attempts.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	client := deliver.NewClient(deliver.Options{AllowPrivateNetworks: true})
	defer client.Close()
	u, err := fields.CompileURL(srv.URL + "/in")
	if err != nil {
		t.Fatal(err)
	}
	j := &dlJournal{journal: journal{last: map[string]uint64{}}, failDead: 1}
	sys := actors.New(actors.Options{
		AckMode: actors.AckPersist,
		Journal: j,
		Routes: []*actors.Route{{ID: 1, Name: "r", URL: u, MaxMessages: 10, MaxBytes: 1 << 20, Concurrency: 1,
			Deliver: pipeline.New(pipeline.Options{Route: "r", Method: "POST", Client: client, Concurrency: 1,
				Policy: &deliver.Policy{InitialBackoff: time.Millisecond, MaxAttempts: 1}})}},
	})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = sys.Stop(ctx)
	}()
	f := &store.Frame{Device: "D1", Serial: "D1", Seq: 1, ReceivedAt: time.Now().UnixMilli(), Routes: []uint16{1},
		Records: [][]byte{[]byte(`{"i":0}`), []byte(`{"i":1}`), []byte(`{"i":2}`)}}
	sys.OnCommit(store.NewSegment(7, []*store.Frame{f}))

	checkfor.Check(t, 30*time.Second, 10*time.Millisecond, func() error {
		j.mu.Lock()
		n, fails := len(j.dead), j.failDead
		j.mu.Unlock()
		if n == 0 {
			return fmt.Errorf("nothing dead-lettered (write failures left: %d, attempts: %d)", fails, attempts.Load())
		}
		return nil
	})
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.dead) != 1 || j.failDead != 0 {
		t.Fatalf("%d dead letters, %d failures left; want 1 after the failed write", len(j.dead), j.failDead)
	}
	d := j.dead[0]
	var got []string
	for _, it := range d.Items {
		got = append(got, string(it.Frame.Records[it.Record]))
	}
	want := []store.Ref{{Seg: 7, Pos: 0}, {Seg: 7, Pos: 1}, {Seg: 7, Pos: 2}}
	if fmt.Sprint(got) != `[{"i":0} {"i":1} {"i":2}]` || !slices.Equal(d.Refs, want) || d.Status != 503 {
		t.Fatalf("dead letter %v refs %v status %d; want the three records, their refs, 503", got, d.Refs, d.Status)
	}
	if len(j.delivered) != 0 {
		t.Fatalf("marked delivered %v: a dead letter's records are marked by its write only", j.delivered)
	}
	if n := attempts.Load(); n < 2 {
		t.Fatalf("%d attempts, want the batch tried again after the failed write", n)
	}
}
