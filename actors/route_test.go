package actors_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/fields"
	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// The route actor's lane scheduler, with a fake Deliverer (what the pipeline would do is not
// under test here), a fake clock where linger and retention count, and a real store.

// fakeClock is a Clock that moves only when told to.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
}

type fakeTimer struct {
	at time.Time
	f  func()
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.UnixMilli(1_700_000_000_000)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) {
	c.mu.Lock()
	c.timers = append(c.timers, fakeTimer{at: c.now.Add(d), f: f})
	c.mu.Unlock()
	if d <= 0 {
		c.Advance(0)
	}
}

// Advance moves the clock by d and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	c.timers = slices.DeleteFunc(c.timers, func(t fakeTimer) bool {
		if !t.at.After(c.now) {
			due = append(due, t.f)
			return true
		}
		return false
	})
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

// pendingTimers is how many timers wait.
func (c *fakeClock) pendingTimers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// delivered is one message a fake deliverer was given.
type delivered struct {
	device string
	seq    uint64
	index  int
}

// fakeDeliverer records the batches it is given and ends each as fn says (Delivered if nil).
type fakeDeliverer struct {
	fn func(call int, b *actors.Batch) actors.Outcome

	mu        sync.Mutex
	calls     int
	batches   [][]delivered // every batch given, in call order
	ok        []delivered   // messages of the batches that ended Delivered, in that order
	active    int
	maxActive int
}

func (d *fakeDeliverer) Deliver(_ context.Context, b *actors.Batch) actors.Outcome {
	var msgs []delivered
	var m format.Message
	for i := range b.Len() {
		b.Message(i, &m)
		msgs = append(msgs, delivered{m.Device, m.Seq, m.Index})
	}
	d.mu.Lock()
	call := d.calls
	d.calls++
	d.batches = append(d.batches, msgs)
	d.active++
	d.maxActive = max(d.maxActive, d.active)
	d.mu.Unlock()
	out := actors.Outcome{Result: actors.Delivered, Attempts: 1, Status: 200}
	if d.fn != nil {
		out = d.fn(call, b)
	}
	d.mu.Lock()
	d.active--
	if out.Result == actors.Delivered {
		d.ok = append(d.ok, msgs...)
	}
	d.mu.Unlock()
	return out
}

func (d *fakeDeliverer) state() (calls, active, maxActive int, ok []delivered) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls, d.active, d.maxActive, slices.Clone(d.ok)
}

// routeRig is an actor system over a real store with one route.
type routeRig struct {
	t     *testing.T
	st    *store.Store
	sys   *actors.System
	clock *fakeClock
	route *actors.Route
	seqs  map[string]uint64
	start func(maxQueued int) // starts the actor system (0: the default memory budget)
}

// newRouteRig opens a store in a temporary directory; start starts the actor system on it.
func newRouteRig(t *testing.T, url string, r actors.Route) *routeRig {
	t.Helper()
	rig := &routeRig{t: t, clock: newFakeClock(), seqs: map[string]uint64{}}
	var sysp atomic.Pointer[actors.System]
	st, err := store.Open(context.Background(), store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	// The system starts later than the store (after the test stored what it needs): the hook
	// reaches it through sysp.
	if err := st.Start(store.Hooks{OnCommit: func(seg *store.Segment) {
		if sys := sysp.Load(); sys != nil {
			sys.OnCommit(seg)
		}
	}}); err != nil {
		t.Fatal(err)
	}
	rig.st = st
	t.Cleanup(func() {
		if rig.sys != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := rig.sys.Stop(ctx); err != nil {
				t.Error(err)
			}
		}
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	if r.ID, err = st.RouteID("r"); err != nil {
		t.Fatal(err)
	}
	r.Name = "r"
	if r.URL, err = fields.CompileURL(url); err != nil {
		t.Fatal(err)
	}
	r.MaxBytes = max(r.MaxBytes, 1<<20)
	r.Concurrency = max(r.Concurrency, 1)
	rig.route = &r
	rig.start = func(maxQueued int) {
		rig.sys = actors.New(actors.Options{AckMode: actors.AckPersist, Journal: st, Routes: []*actors.Route{rig.route},
			Clock: rig.clock, MaxQueued: maxQueued})
		sysp.Store(rig.sys)
	}
	return rig
}

// add stores one frame of n records of device, received age ago by the fake clock, and waits
// for its commit.
func (rig *routeRig) add(device string, n int, age time.Duration) {
	rig.t.Helper()
	rig.seqs[device]++
	f := &store.Frame{Device: device, Serial: device, Seq: rig.seqs[device], PrevSeq: rig.seqs[device] - 1,
		ReceivedAt: rig.clock.Now().Add(-age).UnixMilli(), Routes: []uint16{rig.route.ID}}
	for i := range n {
		f.Records = append(f.Records, fmt.Appendf(nil, `{"d":%q,"i":%d}`, device, i))
	}
	done := make(chan error, 1)
	rig.st.Append(f, func(err error) { done <- err })
	if err := <-done; err != nil {
		rig.t.Fatal(err)
	}
}

// holds waits until the route actor has handled everything sent to it so far (its answer to
// a query comes after them) and has records in memory (or none, with empty).
func (rig *routeRig) holds(want bool) {
	rig.t.Helper()
	poll(rig.t, func() error {
		if got := rig.sys.OldestPending(0) > 0; got != want {
			return fmt.Errorf("route holds records: %v, want %v", got, want)
		}
		return nil
	})
}

func (rig *routeRig) deadLetters() []*store.DeadLetter {
	rig.t.Helper()
	var out []*store.DeadLetter
	if err := rig.st.DeadLetters(rig.route.ID, func(d *store.DeadLetter) bool { out = append(out, d); return true }); err != nil {
		rig.t.Fatal(err)
	}
	return out
}

func seqsOf(ds []delivered) string {
	var b strings.Builder
	for _, d := range ds {
		fmt.Fprintf(&b, "%s/%d/%d ", d.device, d.seq, d.index)
	}
	return b.String()
}

// A lane that is not full waits for the linger, by the route's clock; a full one goes at once.
func TestRouteLinger(t *testing.T) {
	fd := &fakeDeliverer{}
	rig := newRouteRig(t, "http://x.invalid/in", actors.Route{MaxMessages: 10, Linger: time.Hour, Deliver: fd})
	rig.start(0)
	rig.add("D1", 3, 0)
	rig.holds(true)
	if n := rig.clock.pendingTimers(); n == 0 {
		t.Fatal("no linger timer armed")
	}
	rig.clock.Advance(time.Hour - time.Millisecond)
	rig.holds(true)
	if calls, _, _, _ := fd.state(); calls != 0 {
		t.Fatalf("%d batches before the linger passed, want 0", calls)
	}
	rig.clock.Advance(time.Millisecond)
	rig.holds(false)
	if calls, _, _, ok := fd.state(); calls != 1 || seqsOf(ok) != "D1/1/0 D1/1/1 D1/1/2 " {
		t.Fatalf("%d batches, delivered %q; want the three records in one batch", calls, seqsOf(ok))
	}
	rig.add("D1", 10, 0) // a full batch: no linger
	poll(t, func() error {
		if calls, _, _, ok := fd.state(); calls != 2 || len(ok) != 13 {
			return fmt.Errorf("%d batches, %d messages delivered; want the full batch sent at once", calls, len(ok))
		}
		return nil
	})
}

// Messages past their retention leave for the dead-letter list without an attempt; a batch whose
// oldest message expires while it retries ends Expired, and its expired messages follow.
func TestRouteRetention(t *testing.T) {
	fd := &fakeDeliverer{}
	var rig *routeRig
	fd.fn = func(call int, b *actors.Batch) actors.Outcome {
		if b.Expired() {
			t.Errorf("batch %d expired before its first attempt", call)
		}
		if call == 1 { // the second batch: its message expires while it waits to retry
			b.Waiting(true)
			rig.clock.Advance(2 * time.Hour)
			b.Waiting(false)
			if !b.Expired() {
				t.Errorf("batch %d not expired after 2h with a 1h retention", call)
			}
			return actors.Outcome{Result: actors.Expired, Status: 503, Attempts: 1}
		}
		return actors.Outcome{Result: actors.Delivered, Status: 200, Attempts: 1}
	}
	rig = newRouteRig(t, "http://x.invalid/in", actors.Route{MaxMessages: 10, Retention: time.Hour, Deliver: fd})
	rig.add("D1", 3, 2*time.Hour) // expired before the route starts
	rig.add("D1", 1, 0)
	rig.start(0)
	rig.holds(false)
	rig.add("D1", 2, 0)
	var dead []*store.DeadLetter
	poll(t, func() error {
		if dead = rig.deadLetters(); len(dead) != 2 {
			return fmt.Errorf("%d dead letters, want 2", len(dead))
		}
		return nil
	})
	rig.holds(false)
	calls, _, _, ok := fd.state()
	if calls != 2 || seqsOf(ok) != "D1/2/0 " {
		t.Fatalf("%d batches, delivered %q; want 2 batches, D1/2/0 delivered", calls, seqsOf(ok))
	}
	if d := dead[0]; d.Records() != 3 || d.Attempts != 0 || d.Error != "retention 1h0m0s exceeded" {
		t.Errorf("first dead letter: %d records, %d attempts, %q; want 3, 0, retention exceeded", d.Records(), d.Attempts, d.Error)
	}
	if d := dead[1]; d.Records() != 2 || d.Attempts != 1 || d.Status != 503 ||
		d.Error != "retention 1h0m0s exceeded after 1 attempts, last status 503" {
		t.Errorf("second dead letter: %d records, %d attempts, status %d, %q", d.Records(), d.Attempts, d.Status, d.Error)
	}
}

// With more records than the route may hold in memory, it pages them from the store: no batch
// is larger than what memory holds, and every record is delivered once, in order, whether it was
// stored before the route started or while it was paging.
func TestRoutePaging(t *testing.T) {
	fd := &fakeDeliverer{}
	const maxQueued, n = 4, 40
	rig := newRouteRig(t, "http://x.invalid/in", actors.Route{MaxMessages: 100, Deliver: fd})
	for range n / 2 {
		rig.add("D1", 1, 0)
	}
	rig.start(maxQueued)
	for range n / 2 {
		rig.add("D1", 1, 0)
	}
	var want strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&want, "D1/%d/0 ", i)
	}
	poll(t, func() error {
		if _, _, _, ok := fd.state(); seqsOf(ok) != want.String() {
			return fmt.Errorf("delivered %q, want %q", seqsOf(ok), want.String())
		}
		return nil
	})
	fd.mu.Lock()
	defer fd.mu.Unlock()
	for i, b := range fd.batches {
		if len(b) > maxQueued {
			t.Errorf("batch %d has %d messages: more than the %d the route may hold", i, len(b), maxQueued)
		}
	}
	poll(t, func() error {
		if n := rig.st.Backlog(rig.route.ID); n != 0 {
			return fmt.Errorf("backlog %d after delivery, want 0", n)
		}
		return nil
	})
}

// A batch that waits to retry holds no request slot: another lane sends meanwhile, while its
// own lane sends nothing until it ends. A batch given up on is dead-lettered with its status,
// and its lane goes on; one that stopped (not shutdown) is sent again, order kept.
func TestRouteRetries(t *testing.T) {
	release := make(chan struct{})
	var stopped atomic.Bool
	fd := &fakeDeliverer{}
	fd.fn = func(_ int, b *actors.Batch) actors.Outcome {
		var m format.Message
		b.Message(0, &m)
		switch {
		case m.Device == "A" && m.Seq == 1: // waits to retry until released
			b.Waiting(true)
			<-release
			b.Waiting(false)
			return actors.Outcome{Result: actors.Delivered, Status: 200, Attempts: 2}
		case m.Device == "C" && m.Seq == 1:
			return actors.Outcome{Result: actors.GaveUp, Status: 503, Attempts: 3, Err: errors.New("gave up delivery after 3 attempts")}
		case m.Device == "C" && m.Seq == 2 && !stopped.Swap(true):
			return actors.Outcome{Result: actors.Stopped, Attempts: 1, Err: errors.New("sign: no token")}
		}
		return actors.Outcome{Result: actors.Delivered, Status: 200, Attempts: 1}
	}
	rig := newRouteRig(t, "http://x.invalid/[SERIAL]", actors.Route{MaxMessages: 10, Concurrency: 1, Deliver: fd})
	rig.start(0)
	rig.add("A", 1, 0)
	poll(t, func() error {
		if _, active, _, _ := fd.state(); active != 1 {
			return errors.New("A's first batch not started")
		}
		return nil
	})
	rig.add("A", 1, 0) // queued behind A's batch in flight
	rig.add("B", 1, 0)
	rig.add("C", 1, 0)
	rig.add("C", 1, 0)
	poll(t, func() error {
		if _, _, _, ok := fd.state(); seqsOf(ok) != "B/1/0 C/2/0 " && seqsOf(ok) != "C/2/0 B/1/0 " {
			return fmt.Errorf("delivered %q while A waits, want B's and C's second (after C's first was given up)", seqsOf(ok))
		}
		return nil
	})
	fd.mu.Lock()
	for _, b := range fd.batches {
		if b[0].device == "A" && b[0].seq == 2 {
			t.Error("A's second record was sent while A's first batch was in flight")
		}
	}
	fd.mu.Unlock()
	close(release)
	rig.holds(false)
	_, _, maxActive, ok := fd.state()
	if got := seqsOf(ok); !strings.HasSuffix(got, " A/1/0 A/2/0 ") {
		t.Errorf("delivered %q, want A's records last, in order", got)
	}
	if maxActive != 2 {
		t.Errorf("at most %d batches at once, want 2 (one waiting to retry, one sending)", maxActive)
	}
	dead := rig.deadLetters()
	if len(dead) != 1 || dead[0].Status != 503 || dead[0].Attempts != 3 || dead[0].Error != "gave up delivery after 3 attempts" ||
		dead[0].Items[0].Frame.Device != "C" || dead[0].Items[0].Frame.Seq != 1 {
		t.Fatalf("dead letters %+v, want C's first record, given up after 3 attempts with 503", dead)
	}
}

// Concurrency bounds the batches in flight over all lanes; lanes shard the devices, and each
// device's messages arrive in the order it sent them.
func TestRouteConcurrencyAndOrder(t *testing.T) {
	const conc, devices, frames = 3, 12, 6
	gate := make(chan struct{})
	fd := &fakeDeliverer{}
	fd.fn = func(call int, _ *actors.Batch) actors.Outcome {
		<-gate
		if call%4 == 1 { // sent again
			return actors.Outcome{Result: actors.Stopped, Attempts: 1, Err: errors.New("no token")}
		}
		return actors.Outcome{Result: actors.Delivered, Status: 200, Attempts: 1}
	}
	rig := newRouteRig(t, "http://x.invalid/in", actors.Route{MaxMessages: 2, Concurrency: conc, Deliver: fd})
	rig.start(0)
	for f := range frames {
		for d := range devices {
			rig.add(fmt.Sprintf("D%02d", d), 1+f%2, 0)
		}
	}
	poll(t, func() error {
		if _, active, _, _ := fd.state(); active != conc {
			return fmt.Errorf("%d batches in flight, want %d", active, conc)
		}
		return nil
	})
	rig.holds(true) // every segment handled, pumped
	if _, active, _, _ := fd.state(); active != conc {
		t.Fatalf("%d batches in flight with concurrency %d", active, conc)
	}
	close(gate)
	rig.holds(false)
	_, _, maxActive, ok := fd.state()
	if maxActive != conc {
		t.Errorf("at most %d batches at once, want %d", maxActive, conc)
	}
	next := map[string]delivered{}
	total := 0
	for _, m := range ok {
		want := next[m.device]
		if want.seq == 0 {
			want.seq = 1
		}
		if m.seq != want.seq || m.index != want.index {
			t.Fatalf("%s: got %d/%d, want %d/%d (delivered %s)", m.device, m.seq, m.index, want.seq, want.index, seqsOf(ok))
		}
		if n := 1 + int(m.seq-1)%2; m.index+1 < n {
			next[m.device] = delivered{seq: m.seq, index: m.index + 1}
		} else {
			next[m.device] = delivered{seq: m.seq + 1}
		}
		total++
	}
	if want := devices * (frames / 2 * 3); total != want {
		t.Errorf("delivered %d messages, want %d", total, want)
	}
}

// blockingDeliverer holds every batch until its context ends (shutdown), as a request to an
// endpoint that never answers would.
type blockingDeliverer struct{ started chan struct{} }

func (d *blockingDeliverer) Deliver(ctx context.Context, b *actors.Batch) actors.Outcome {
	select {
	case d.started <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return actors.Outcome{Result: actors.Stopped, Err: ctx.Err()}
}

// Stop with no grace left (a context already ended) abandons the batch in flight at once and
// leaves no goroutine behind (TestMain's goleak check): the idle queries it sent are answered
// when the route actors stop.
func TestStopWithoutGrace(t *testing.T) {
	d := &blockingDeliverer{started: make(chan struct{}, 1)}
	rig := newRouteRig(t, "http://127.0.0.1:1/x", actors.Route{MaxMessages: 1, Deliver: d})
	rig.add("dev", 1, 0)
	rig.start(0)
	<-d.started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := rig.sys.Stop(ctx); err == nil {
		t.Error("Stop with an ended context and a batch in flight = nil, want an error")
	}
	rig.sys = nil // stopped: the rig's cleanup only closes the store
}
