package actors_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/fields"
	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/codec/native"
	"github.com/fleetrelay/fleetrelay/internal/deliver"
	"github.com/fleetrelay/fleetrelay/internal/pipeline"
	"github.com/fleetrelay/fleetrelay/internal/store"
	"github.com/fleetrelay/fleetrelay/netio"
)

// Live changes of routes and device metadata (live.go), end to end below the relay: devices on
// real loopback sockets (netio), the actor system, a real store, and recording deliverers.

// liveRig runs a store, an actor system and a netio server.
type liveRig struct {
	t       *testing.T
	st      *store.Store
	sys     *actors.System
	srv     *netio.Server
	clock   *fakeClock
	metrics *actors.Metrics
}

type liveOpts struct {
	fleet       map[string]*actors.DeviceMeta
	maxQueued   int
	maxResident int
}

func newLiveRig(t *testing.T, o liveOpts, routes ...*actors.Route) *liveRig {
	t.Helper()
	rig := &liveRig{t: t, clock: newFakeClock(), metrics: actors.NewMetrics(prometheus.NewRegistry())}
	st, err := store.Open(context.Background(), store.Options{Dir: t.TempDir(), MaxResident: o.maxResident})
	if err != nil {
		t.Fatal(err)
	}
	rig.st = st
	for _, r := range routes {
		rig.name(r)
	}
	rig.sys = actors.New(actors.Options{AckMode: actors.AckPersist, MaxFrame: 1 << 16, Journal: st, Routes: routes,
		Fleet: o.fleet, Clock: rig.clock, MaxQueued: o.maxQueued, Metrics: rig.metrics, DeviceIdle: time.Hour})
	if err := st.Start(store.Hooks{OnCommit: rig.sys.OnCommit}); err != nil {
		t.Fatal(err)
	}
	rig.srv = netio.New(netio.Options{TCP: "127.0.0.1:0", UDP: "127.0.0.1:0", EventLoops: 2}, rig.sys)
	if err := rig.srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rig.srv.Stop(ctx); err != nil {
			t.Error(err)
		}
		if err := rig.sys.Stop(ctx); err != nil {
			t.Error(err)
		}
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return rig
}

// name sets r's ID from the store.
func (rig *liveRig) name(r *actors.Route) {
	rig.t.Helper()
	var err error
	if r.ID, err = rig.st.RouteID(r.Name); err != nil {
		rig.t.Fatal(err)
	}
}

// liveRoute returns a route to url (with dynamic fields) delivering through d.
func liveRoute(t *testing.T, name, url string, d actors.Deliverer, max int) *actors.Route {
	t.Helper()
	u, err := fields.CompileURL(url)
	if err != nil {
		t.Fatal(err)
	}
	return &actors.Route{Name: name, URL: u, MaxMessages: max, MaxBytes: 1 << 20, Concurrency: 1, Deliver: d}
}

func (rig *liveRig) discarded(route string) float64 {
	var m dto.Metric
	if err := rig.metrics.Discarded.WithLabelValues(route).Write(&m); err != nil {
		rig.t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// device is a native device on a real TCP connection.
type device struct {
	t      *testing.T
	serial string
	c      net.Conn
	buf    []byte
	acked  uint64
}

func (rig *liveRig) dial(serial string) *device {
	rig.t.Helper()
	c, err := net.Dial("tcp", rig.srv.TCPAddr().String())
	if err != nil {
		rig.t.Fatal(err)
	}
	rig.t.Cleanup(func() { c.Close() })
	d := &device{t: rig.t, serial: serial, c: c}
	d.write(native.AppendHello(nil, &native.Hello{Serial: serial}))
	if typ, _ := d.read(); typ != native.TypeWelcome {
		rig.t.Fatalf("%s: frame type %d after HELLO, want WELCOME", serial, typ)
	}
	return d
}

func (d *device) write(b []byte) {
	d.t.Helper()
	if _, err := d.c.Write(b); err != nil {
		d.t.Fatal(err)
	}
}

// read returns the next frame from the relay.
func (d *device) read() (byte, []byte) {
	d.t.Helper()
	_ = d.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		typ, body, n, err := native.Next(d.buf, native.MaxFrameLimit)
		if err == nil {
			body = slices.Clone(body)
			d.buf = d.buf[n:]
			return typ, body
		}
		if !errors.Is(err, native.ErrShort) {
			d.t.Fatal(err)
		}
		var b [4096]byte
		n, err = d.c.Read(b[:])
		if err != nil {
			d.t.Fatalf("%s: read: %v", d.serial, err)
		}
		d.buf = append(d.buf, b[:n]...)
	}
}

// send sends DATA seq with n records.
func (d *device) send(seq uint64, n int) {
	d.t.Helper()
	var recs [][]byte
	for i := range n {
		recs = append(recs, fmt.Appendf(nil, `{"d":%q,"s":%d,"i":%d}`, d.serial, seq, i))
	}
	d.write(native.AppendData(nil, seq, recs...))
}

// stored waits for the ACK of seq.
func (d *device) stored(seq uint64) {
	d.t.Helper()
	for d.acked < seq {
		typ, body := d.read()
		if typ != native.TypeAck {
			d.t.Fatalf("%s: frame type %d, want ACK", d.serial, typ)
		}
		a, err := native.ParseAck(body)
		if err != nil {
			d.t.Fatal(err)
		}
		d.acked = max(d.acked, a)
	}
}

// liveBatch is one batch a liveDeliverer was given.
type liveBatch struct {
	url  string
	msgs []liveMsg
}

type liveMsg struct {
	device  string
	seq     uint64
	index   int
	custom1 string
	account string
	secret  format.Secrets
}

// liveDeliverer records batches and ends each as fn says (Delivered if nil).
type liveDeliverer struct {
	fn func(ctx context.Context, call int, b *actors.Batch) actors.Outcome

	mu      sync.Mutex
	batches []liveBatch
	ok      []liveMsg // messages of the batches that ended Delivered, in that order
}

func (d *liveDeliverer) Deliver(ctx context.Context, b *actors.Batch) actors.Outcome {
	lb := liveBatch{url: b.URL}
	var m format.Message
	for i := range b.Len() {
		b.Message(i, &m)
		lb.msgs = append(lb.msgs, liveMsg{m.Device, m.Seq, m.Index, m.Custom1, m.Account, m.Secret})
	}
	d.mu.Lock()
	call := len(d.batches)
	d.batches = append(d.batches, lb)
	d.mu.Unlock()
	out := actors.Outcome{Result: actors.Delivered, Status: 200, Attempts: 1}
	if d.fn != nil {
		out = d.fn(ctx, call, b)
	}
	if out.Result == actors.Delivered {
		d.mu.Lock()
		d.ok = append(d.ok, lb.msgs...)
		d.mu.Unlock()
	}
	return out
}

func (d *liveDeliverer) state() (batches []liveBatch, ok []liveMsg) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.batches), slices.Clone(d.ok)
}

// seqs returns the seqs delivered of device.
func seqsFor(ms []liveMsg, device string) []uint64 {
	var out []uint64
	for _, m := range ms {
		if m.device == device && (len(out) == 0 || out[len(out)-1] != m.seq) {
			out = append(out, m.seq)
		}
	}
	return out
}

func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// blockUntilCancelled is a delivery to an endpoint that keeps failing: it waits to retry (so
// that shutdown does not wait for it) until the route's context ends, as the pipeline does.
func blockUntilCancelled(ctx context.Context, b *actors.Batch) actors.Outcome {
	b.Waiting(true)
	<-ctx.Done()
	return actors.Outcome{Result: actors.Stopped, Err: ctx.Err()}
}

// A route added while a device sends takes every frame sent after PutRoute returned, from then
// on in order, and the route that was there keeps taking all of them.
func TestLiveAddRouteWhileFramesFlow(t *testing.T) {
	const n = 300
	da, db := &liveDeliverer{}, &liveDeliverer{}
	rig := newLiveRig(t, liveOpts{}, liveRoute(t, "a", "http://a.invalid/in", da, 50))
	dev := rig.dial("D1")
	var sent atomic.Uint64
	var cut uint64 // frames sent (counted) when PutRoute had returned
	added := make(chan struct{})
	go func() {
		defer close(added)
		for sent.Load() < n/3 {
			time.Sleep(time.Millisecond)
		}
		b := liveRoute(t, "b", "http://b.invalid/in", db, 50)
		rig.name(b)
		rig.sys.PutRoute(b)
		cut = sent.Load()
	}()
	// Metadata and state change and are read meanwhile (for the race detector: no lock on the
	// frame path, and none needed).
	stop := make(chan struct{})
	var churn sync.WaitGroup
	churn.Add(1)
	go func() {
		defer churn.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			rig.sys.SetDevice("d1", &actors.DeviceMeta{Custom1: fmt.Sprint(i)})
			_ = rig.sys.Device("d1")
			time.Sleep(100 * time.Microsecond)
		}
	}()
	defer func() { close(stop); churn.Wait() }()
	for seq := uint64(1); seq <= n; seq++ {
		dev.send(seq, 1)
		sent.Store(seq)
		if seq%20 == 0 {
			dev.stored(seq) // keep the window open
		}
		if seq == 2*n/3 {
			<-added // the route is added while frames n/3.. flow, at the latest before these
		}
	}
	dev.stored(n)
	poll(t, func() error {
		_, okA := da.state()
		_, okB := db.state()
		if got := seqsFor(okA, "D1"); !slices.Equal(got, span(1, n)) {
			return fmt.Errorf("route a delivered %v, want 1..%d in order", got, n)
		}
		// cut frames were sent when PutRoute had returned, and the next may have been written
		// before: every frame from cut+2 on was sent after it returned.
		got := seqsFor(okB, "D1")
		if len(got) == 0 || got[0] > cut+2 || !slices.Equal(got, span(got[0], n)) {
			return fmt.Errorf("route b delivered %v, want %d..%d (or from earlier) in order", got, cut+2, n)
		}
		return nil
	})
	if names := rig.sys.Routes(); !slices.Equal(names, []string{"a", "b"}) {
		t.Errorf("Routes() = %v, want [a b]", names)
	}
}

// An update changes URL, batch size and format while a batch is in flight to an endpoint that
// keeps failing: the batch is cancelled, goes back to the front of its lane, and is delivered
// with everything queued behind it under the new settings (new URL, batches sized by the new
// format's size hints), each device's messages in order across the change. The queue stays,
// nothing is lost or dead-lettered, and the old deliverer is not called again.
func TestLiveUpdateRouteInFlight(t *testing.T) {
	const frames = 12
	old := &liveDeliverer{fn: func(ctx context.Context, call int, b *actors.Batch) actors.Outcome {
		if call == 0 {
			return actors.Outcome{Result: actors.Delivered, Status: 200, Attempts: 1}
		}
		return blockUntilCancelled(ctx, b)
	}}
	r1 := liveRoute(t, "r", "http://old.invalid/in", old, 2)
	rig := newLiveRig(t, liveOpts{}, r1)
	devs := []*device{rig.dial("A"), rig.dial("B")}
	for seq := uint64(1); seq <= frames; seq++ {
		for _, d := range devs {
			d.send(seq, 1)
		}
	}
	for _, d := range devs {
		d.stored(frames)
	}
	poll(t, func() error {
		if b, _ := old.state(); len(b) != 2 {
			return fmt.Errorf("%d batches given to the old endpoint, want 2 (one delivered, one in flight)", len(b))
		}
		return nil
	})
	_, before := old.state()

	// Size hints: two raw messages fit in MaxBytes, two envelope ones do not.
	raw, err := format.Lookup(format.NameRaw, format.Options{})
	if err != nil {
		t.Fatal(err)
	}
	env, _ := format.Lookup(format.NameEnvelope, format.Options{})
	m := format.Message{Device: "A", Serial: "A", Seq: 10, Data: []byte(`{"d":"A","s":10,"i":0}`)}
	rawHint, envHint := raw.SizeHint(&m), env.SizeHint(&m)
	if 2*envHint+3 <= 3*rawHint+4 {
		t.Fatalf("size hints raw %d, envelope %d: the test needs envelope hints much larger", rawHint, envHint)
	}
	nu := &liveDeliverer{}
	r2 := liveRoute(t, "r", "http://new.invalid/[SERIAL]", nu, 100)
	r2.ID, r2.Format, r2.MaxBytes = r1.ID, raw, 3*rawHint+4
	rig.sys.PutRoute(r2)

	poll(t, func() error {
		_, ok := nu.state()
		for _, d := range devs {
			if got := seqsFor(append(slices.Clone(before), ok...), d.serial); !slices.Equal(got, span(1, frames)) {
				return fmt.Errorf("%s: delivered %v before and after the update, want 1..%d in order", d.serial, got, frames)
			}
		}
		return nil
	})
	batches, ok := nu.state()
	if len(before)+len(ok) != 2*frames || len(before) == 0 {
		t.Errorf("%d messages delivered before the update, %d after; want some before, %d in all (each once)",
			len(before), len(ok), 2*frames)
	}
	multi := false
	for _, b := range batches {
		for _, m := range b.msgs {
			if want := "http://new.invalid/" + m.device; b.url != want {
				t.Errorf("batch to %q holds a message of %s, want %q", b.url, m.device, want)
			}
		}
		if len(b.msgs) > 3 {
			t.Errorf("batch of %d messages: more than the new max_bytes allows by raw size hints", len(b.msgs))
		}
		multi = multi || len(b.msgs) >= 2
	}
	if !multi {
		t.Error("no batch of 2 or more messages: the queued messages kept their envelope size hints")
	}
	if b, _ := old.state(); len(b) != 2 {
		t.Errorf("the old endpoint was given %d batches, want 2", len(b))
	}
	if n := rig.st.DeadLetterCount(r1.ID); n != 0 {
		t.Errorf("%d dead letters, want 0", n)
	}
	poll(t, func() error {
		if n := rig.st.Backlog(r1.ID); n != 0 {
			return fmt.Errorf("backlog %d after delivery, want 0", n)
		}
		return nil
	})
}

// A paused route takes no new frames and sends nothing; what it held stays queued and goes out
// once it is resumed, and the frames stored while it was paused never reach it.
func TestLivePauseResume(t *testing.T) {
	d := &liveDeliverer{}
	r := liveRoute(t, "r", "http://x.invalid/in", d, 100)
	r.Linger = time.Hour // by the fake clock: the queue waits until the test moves it
	rig := newLiveRig(t, liveOpts{}, r)
	dev := rig.dial("P")
	for seq := uint64(1); seq <= 3; seq++ {
		dev.send(seq, 1)
	}
	dev.stored(3)
	poll(t, func() error {
		if rig.sys.OldestPending(0) == 0 {
			return errors.New("route holds nothing yet")
		}
		return nil
	})
	paused := *r
	paused.Paused = true
	rig.sys.PutRoute(&paused)
	for seq := uint64(4); seq <= 6; seq++ {
		dev.send(seq, 1)
	}
	dev.stored(6)
	rig.clock.Advance(2 * time.Hour)
	if n := rig.st.Backlog(r.ID); n != 3 {
		t.Errorf("backlog %d while paused, want the 3 held (frames stored meanwhile are not the route's)", n)
	}
	if h, ok := rig.sys.Holdings("r"); !ok || h.Backlog != 3 || h.DeadLetters != 0 {
		t.Errorf("Holdings = %+v, %v; want backlog 3", h, ok)
	}
	if rig.sys.OldestPending(0) == 0 { // the route's answer comes after every message before it
		t.Error("the paused route no longer holds its queue")
	}
	if b, _ := d.state(); len(b) != 0 {
		t.Fatalf("%d batches sent while paused, want 0", len(b))
	}
	resumed := *r
	rig.sys.PutRoute(&resumed)
	rig.clock.Advance(time.Hour)
	poll(t, func() error {
		if _, ok := d.state(); !slices.Equal(seqsFor(ok, "P"), []uint64{1, 2, 3}) {
			return fmt.Errorf("delivered %v after resuming, want [1 2 3]", seqsFor(ok, "P"))
		}
		return nil
	})
	dev.send(7, 1)
	dev.stored(7)
	poll(t, func() error { // the route has it, and armed its linger
		if rig.sys.OldestPending(0) == 0 {
			return errors.New("route holds nothing yet")
		}
		return nil
	})
	rig.clock.Advance(time.Hour)
	poll(t, func() error {
		if _, ok := d.state(); !slices.Equal(seqsFor(ok, "P"), []uint64{1, 2, 3, 7}) {
			return fmt.Errorf("delivered %v, want [1 2 3 7]: frames after resuming are taken again", seqsFor(ok, "P"))
		}
		return nil
	})
}

// busyRig has a route "r" whose endpoint gives up on the first batch (dead letters) and never
// answers later ones, with frames of one device stored: some dead-lettered, one batch in
// flight, the rest queued or left in the store. It returns the records stored.
func busyRig(t *testing.T, o liveOpts) (*liveRig, *actors.Route, *liveDeliverer, int) {
	d := &liveDeliverer{fn: func(ctx context.Context, call int, b *actors.Batch) actors.Outcome {
		if call == 0 {
			return actors.Outcome{Result: actors.GaveUp, Status: 503, Attempts: 3, Err: errors.New("gave up")}
		}
		return blockUntilCancelled(ctx, b)
	}}
	r := liveRoute(t, "r", "http://x.invalid/in", d, 4)
	rig := newLiveRig(t, o, r)
	dev := rig.dial("Z")
	const frames, per = 40, 2
	for seq := uint64(1); seq <= frames; seq++ {
		dev.send(seq, per)
		dev.stored(seq) // one commit per frame: many segments
	}
	poll(t, func() error {
		if b, _ := d.state(); len(b) < 2 || rig.st.DeadLetterCount(r.ID) == 0 {
			return fmt.Errorf("%d batches, %d dead letters: want one dead letter and a batch in flight",
				len(b), rig.st.DeadLetterCount(r.ID))
		}
		return nil
	})
	return rig, r, d, frames * per
}

// Removing a route that holds a backlog or dead letters without discard fails with
// ErrRouteBusy and the counts, and changes nothing.
func TestLiveRemoveBusy(t *testing.T) {
	rig, r, d, total := busyRig(t, liveOpts{})
	dead := rig.st.DeadLetterCount(r.ID)
	h, err := rig.sys.RemoveRoute(context.Background(), "r", false)
	if !errors.Is(err, actors.ErrRouteBusy) {
		t.Fatalf("RemoveRoute = %v, want ErrRouteBusy", err)
	}
	if h.DeadLetters != dead || h.Backlog != total-dead {
		t.Errorf("RemoveRoute holdings %+v, want backlog %d, dead letters %d", h, total-dead, dead)
	}
	if !slices.Equal(rig.sys.Routes(), []string{"r"}) {
		t.Errorf("Routes() = %v after a refused removal, want [r]", rig.sys.Routes())
	}
	if n := rig.st.Backlog(r.ID); n != total-dead {
		t.Errorf("backlog %d after a refused removal, want %d", n, total-dead)
	}
	if got := rig.discarded("r"); got != 0 {
		t.Errorf("discarded metric %v, want 0", got)
	}
	if _, err := rig.sys.RemoveRoute(context.Background(), "nope", true); !errors.Is(err, actors.ErrNoRoute) {
		t.Errorf("RemoveRoute of an unknown route = %v, want ErrNoRoute", err)
	}
	// Still running: its batch in flight is still waiting.
	if b, _ := d.state(); len(b) != 2 {
		t.Errorf("%d batches, want 2 (the route was left alone)", len(b))
	}
}

// Removing with discard cancels the batch in flight, discards the backlog (in memory, in the
// store and in cold segments) and the dead letters, with exact counts in the result and the
// metric; the store retires the segments, and a route of the same name added afterwards starts
// empty and takes new frames.
func TestLiveRemoveDiscard(t *testing.T) {
	rig, r, d, total := busyRig(t, liveOpts{maxQueued: 8, maxResident: 16})
	dead := rig.st.DeadLetterCount(r.ID)
	backlog := rig.st.Backlog(r.ID)
	if backlog+dead != total {
		t.Fatalf("backlog %d + dead letters %d, want %d", backlog, dead, total)
	}
	if rig.st.Stats().ColdSegments == 0 {
		t.Fatal("no cold segments: the test means to discard some")
	}
	h, err := rig.sys.RemoveRoute(context.Background(), "r", true)
	if err != nil {
		t.Fatal(err)
	}
	if h.Backlog != backlog || h.DeadLetters != dead {
		t.Errorf("RemoveRoute = %+v, want backlog %d, dead letters %d", h, backlog, dead)
	}
	if got := rig.discarded("r"); got != float64(total) {
		t.Errorf("discarded metric %v, want %d", got, total)
	}
	if len(rig.sys.Routes()) != 0 {
		t.Errorf("Routes() = %v after removal, want none", rig.sys.Routes())
	}
	if n := rig.st.Backlog(r.ID); n != 0 {
		t.Errorf("backlog %d after the discard, want 0", n)
	}
	if n := rig.st.DeadLetterCount(r.ID); n != 0 {
		t.Errorf("%d dead letters after the discard, want 0", n)
	}
	poll(t, func() error {
		if st := rig.st.Stats(); st.SegmentsLive != 0 {
			return fmt.Errorf("%d segments live (%d cold), want every one retired", st.SegmentsLive, st.ColdSegments)
		}
		return nil
	})
	calls, _ := d.state()

	// The same name again: nothing of before, new frames delivered.
	d2 := &liveDeliverer{}
	r2 := liveRoute(t, "r", "http://x.invalid/in", d2, 4)
	rig.name(r2)
	rig.sys.PutRoute(r2)
	dev := rig.dial("Y")
	dev.send(1, 1)
	dev.stored(1)
	poll(t, func() error {
		if _, ok := d2.state(); len(ok) != 1 || ok[0].device != "Y" {
			return fmt.Errorf("delivered %v, want Y's one message only", ok)
		}
		return nil
	})
	if after, _ := d.state(); len(after) != len(calls) {
		t.Errorf("the removed route's deliverer was called %d more times", len(after)-len(calls))
	}
}

// A route of an account takes only that account's devices; a device without metadata has no
// account.
func TestLiveAccountRouting(t *testing.T) {
	fleet := map[string]*actors.DeviceMeta{"a1": {Account: "acme"}, "B1": {Account: "other"}}
	acme, all := &liveDeliverer{}, &liveDeliverer{}
	ra := liveRoute(t, "acme", "http://x.invalid/acme", acme, 100)
	ra.Account = "acme"
	rig := newLiveRig(t, liveOpts{fleet: fleet}, ra, liveRoute(t, "all", "http://x.invalid/all", all, 100))
	for _, id := range []string{"A1", "B1", "N1"} {
		dev := rig.dial(id)
		dev.send(1, 1)
		dev.stored(1)
	}
	poll(t, func() error {
		_, okAll := all.state()
		if len(okAll) != 3 {
			return fmt.Errorf("route all delivered %d messages, want 3", len(okAll))
		}
		return nil
	})
	_, ok := acme.state()
	if len(ok) != 1 || ok[0].device != "A1" || ok[0].account != "acme" {
		t.Errorf("route acme delivered %+v, want A1's message only (account acme)", ok)
	}
}

// SetDevice changes the routing of frames stored after it (and the metadata rendered), with
// the identity folded to upper case for the lookup but kept as the device sends it.
func TestLiveSetDevice(t *testing.T) {
	d := &liveDeliverer{}
	r := liveRoute(t, "tagged", "http://x.invalid/in", d, 100)
	r.Filter = actors.NewFilter(nil, []string{"x"}, nil)
	rig := newLiveRig(t, liveOpts{}, r)
	dev := rig.dial("dev7")
	dev.send(1, 1)
	dev.stored(1)
	rig.sys.SetDevice("DEV7", &actors.DeviceMeta{Tags: []string{"x"}, Custom1: "c1"})
	dev.send(2, 1)
	dev.stored(2)
	rig.sys.SetDevice("Dev7", nil)
	dev.send(3, 1)
	dev.stored(3)
	poll(t, func() error {
		if _, ok := d.state(); len(ok) != 1 {
			return fmt.Errorf("delivered %d messages, want 1", len(ok))
		}
		return nil
	})
	if n := rig.st.Backlog(r.ID); n != 0 {
		t.Errorf("backlog %d, want 0: only frame 2 was the route's", n)
	}
	_, ok := d.state()
	if m := ok[0]; m.device != "dev7" || m.seq != 2 {
		t.Errorf("delivered %+v, want dev7's frame 2 (identity as sent)", m)
	}
}

// SetSecrets applies to the messages rendered after it: they carry the set, and still the
// secret field's value (the URL, headers and per-device auth use it).
func TestLiveSetSecrets(t *testing.T) {
	d := &liveDeliverer{}
	rig := newLiveRig(t, liveOpts{}, liveRoute(t, "r", "http://x.invalid/in", d, 100))
	rig.sys.SetDevice("DEV1", &actors.DeviceMeta{Custom1: "key-1"})
	dev := rig.dial("DEV1")
	wait := func(n int) liveMsg {
		t.Helper()
		poll(t, func() error {
			if _, ok := d.state(); len(ok) != n {
				return fmt.Errorf("delivered %d messages, want %d", len(ok), n)
			}
			return nil
		})
		_, ok := d.state()
		return ok[n-1]
	}
	dev.send(1, 1)
	dev.stored(1)
	if m := wait(1); m.secret != 0 || m.custom1 != "key-1" {
		t.Errorf("before SetSecrets: message %+v, want custom1 key-1 and no secret", m)
	}
	rig.sys.SetSecrets(format.SecretCustom1 | format.SecretCustom3)
	if got := rig.sys.Secrets(); got != format.SecretCustom1|format.SecretCustom3 {
		t.Errorf("Secrets() = %v, want custom1, custom3", got.Names())
	}
	dev.send(2, 1)
	dev.stored(2)
	if m := wait(2); m.secret != format.SecretCustom1|format.SecretCustom3 || m.custom1 != "key-1" {
		t.Errorf("after SetSecrets: message %+v, want custom1 key-1, secret custom1 and custom3", m)
	}
	rig.sys.SetSecrets(0)
	dev.send(3, 1)
	dev.stored(3)
	if m := wait(3); m.secret != 0 {
		t.Errorf("after SetSecrets(0): message %+v, want no secret", m)
	}
}

// Device shows the live state of a TCP and a UDP device, whatever the case of the identity
// asked for.
func TestLiveDeviceState(t *testing.T) {
	rig := newLiveRig(t, liveOpts{}, liveRoute(t, "r", "http://x.invalid/in", &liveDeliverer{}, 100))
	if st := rig.sys.Device("T1"); st.Connected || st.Remote.IsValid() || !st.LastSeen.IsZero() || st.LastSeq != 0 {
		t.Errorf("Device of an unknown identity = %+v, want the zero state", st)
	}
	// Devices with metadata are remembered once gone; others are forgotten whole.
	rig.sys.SetDevice("t1", &actors.DeviceMeta{})
	rig.sys.SetDevice("U1", &actors.DeviceMeta{})
	anon := rig.dial("anon")
	poll(t, func() error {
		if st := rig.sys.Device("ANON"); !st.Connected {
			return fmt.Errorf("Device(ANON) = %+v after HELLO, want connected", st)
		}
		return nil
	})
	anon.c.Close()
	poll(t, func() error {
		if st := rig.sys.Device("anon"); st.Connected || st.Remote.IsValid() || !st.LastSeen.IsZero() {
			return fmt.Errorf("Device(anon) = %+v after closing, want it forgotten (no metadata)", st)
		}
		return nil
	})
	before := time.Now()
	dev := rig.dial("t1")
	local := netip.MustParseAddrPort(dev.c.LocalAddr().String())
	poll(t, func() error {
		if st := rig.sys.Device("T1"); !st.Connected || st.Remote != local || st.Transport != actors.TransportTCP {
			return fmt.Errorf("Device(T1) = %+v after HELLO, want connected from %v over tcp", st, local)
		}
		return nil
	})
	dev.send(1, 1)
	dev.send(2, 1)
	dev.stored(2)
	st := rig.sys.Device("T1")
	if st.LastSeq != 2 || st.LastSeen.Before(before) || st.LastSeen.After(time.Now()) {
		t.Errorf("Device(T1) = %+v, want lastSeq 2 and last seen now", st)
	}
	dev.c.Close()
	poll(t, func() error {
		if st := rig.sys.Device("t1"); st.Connected || st.LastSeq != 2 || st.Remote != local || st.Transport != actors.TransportTCP || st.LastSeen.IsZero() {
			return fmt.Errorf("Device(t1) = %+v after closing, want disconnected, last seen, remote and lastSeq kept", st)
		}
		return nil
	})

	u, err := net.Dial("udp", rig.srv.UDPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Write(native.AppendUData(nil, "u1", "", 5, []byte(`{"u":1}`))); err != nil {
		t.Fatal(err)
	}
	uLocal := netip.MustParseAddrPort(u.LocalAddr().String())
	poll(t, func() error {
		if st := rig.sys.Device("U1"); !st.Connected || st.Remote != uLocal || st.Transport != actors.TransportUDP || st.LastSeq != 5 || st.LastSeen.IsZero() {
			return fmt.Errorf("Device(U1) = %+v, want connected from %v over udp, lastSeq 5", st, uLocal)
		}
		return nil
	})
	if st := rig.sys.Device("u1"); strings.ToUpper("u1") != "U1" || st.LastSeq != 5 {
		t.Errorf("Device(u1) = %+v, want the same state as U1", st)
	}
}

// The same through the real delivery pipeline and real HTTP endpoints: while the old endpoint
// answers 503 and the pipeline waits to retry, the route moves to a new URL with the raw
// format; the cancelled batch comes back (the pipeline ends it Stopped, not given up) and every
// message reaches the new endpoint once, each device's in order, with none dead-lettered.
func TestLiveUpdateThroughPipeline(t *testing.T) {
	const frames = 10
	var oldHits atomic.Int64
	oldSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		oldHits.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer oldSrv.Close()
	var mu sync.Mutex
	got := map[string][]uint64{}
	newSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var msgs []struct {
			D string `json:"d"`
			S uint64 `json:"s"`
		}
		if err := json.NewDecoder(r.Body).Decode(&msgs); err != nil {
			t.Errorf("new endpoint: %v", err)
		}
		mu.Lock()
		for _, m := range msgs {
			got[m.D] = append(got[m.D], m.S)
		}
		mu.Unlock()
	}))
	defer newSrv.Close()
	client := deliver.NewClient(deliver.Options{AllowPrivateNetworks: true})
	defer client.Close()
	pipe := func(f format.Format) *pipeline.Pipeline {
		return pipeline.New(pipeline.Options{Route: "r", Method: "POST", Client: client, Concurrency: 1, Format: f,
			Policy: &deliver.Policy{InitialBackoff: 5 * time.Millisecond, MaxBackoff: 5 * time.Millisecond}})
	}
	r1 := liveRoute(t, "r", oldSrv.URL+"/in", pipe(nil), 3)
	rig := newLiveRig(t, liveOpts{}, r1)
	devs := []*device{rig.dial("A"), rig.dial("B")}
	for seq := uint64(1); seq <= frames; seq++ {
		for _, d := range devs {
			d.send(seq, 1)
		}
	}
	for _, d := range devs {
		d.stored(frames)
	}
	poll(t, func() error {
		if n := oldHits.Load(); n < 2 {
			return fmt.Errorf("%d requests to the old endpoint, want it retrying", n)
		}
		return nil
	})
	raw, err := format.Lookup(format.NameRaw, format.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r2 := liveRoute(t, "r", newSrv.URL+"/[SERIAL]", pipe(raw), 4)
	r2.ID, r2.Format = r1.ID, raw
	rig.sys.PutRoute(r2)
	poll(t, func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, d := range devs {
			if !slices.Equal(got[d.serial], span(1, frames)) {
				return fmt.Errorf("%s: new endpoint got %v, want 1..%d in order", d.serial, got[d.serial], frames)
			}
		}
		return nil
	})
	if n := rig.st.DeadLetterCount(r1.ID); n != 0 {
		t.Errorf("%d dead letters, want 0", n)
	}
	poll(t, func() error {
		if n := rig.st.Backlog(r1.ID); n != 0 {
			return fmt.Errorf("backlog %d, want 0", n)
		}
		return nil
	})
}
