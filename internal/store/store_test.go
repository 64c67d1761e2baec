package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"go.uber.org/goleak"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashEnv) != "" {
		crashChild()
		return
	}
	goleak.VerifyTestMain(m)
}

const hang = 60 * time.Second

// open opens and starts the store in dir, without hooks.
func open(t testing.TB, dir string, mod ...func(*store.Options)) *store.Store {
	t.Helper()
	return openHooked(t, dir, store.Hooks{}, mod...)
}

// openHooked opens the store in dir and starts it with h.
func openHooked(t testing.TB, dir string, h store.Hooks, mod ...func(*store.Options)) *store.Store {
	t.Helper()
	opts := store.Options{Dir: dir}
	for _, m := range mod {
		m(&opts)
	}
	s, err := store.Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open(%q) = %v", dir, err)
	}
	if err := s.Start(h); err != nil {
		t.Fatalf("Start() = %v", err)
	}
	return s
}

func mustClose(t testing.TB, s *store.Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
}

func frame(dev string, seq uint64, nrec int, routes ...uint16) *store.Frame {
	f := &store.Frame{Device: dev, Serial: dev, IMEI: "35" + dev, ICCID: "89", Seq: seq, ReceivedAt: int64(seq) * 1000, Routes: routes}
	for i := range nrec {
		f.Records = append(f.Records, fmt.Appendf(nil, `{"dev":%q,"seq":%d,"i":%d}`, dev, seq, i))
	}
	return f
}

// appendWait appends frames and waits for all done callbacks.
func appendWait(t testing.TB, s *store.Store, frames ...*store.Frame) {
	t.Helper()
	errs := make(chan error, len(frames))
	for _, f := range frames {
		s.Append(f, func(err error) { errs <- err })
	}
	for range frames {
		if err := <-errs; err != nil {
			t.Fatalf("Append done = %v", err)
		}
	}
}

// pendingRefs returns the undelivered refs of a route.
func pendingRefs(t testing.TB, s *store.Store, route uint16) []store.Ref {
	t.Helper()
	var refs []store.Ref
	err := s.Pending(route, 0, func(seg *store.Segment, pos []uint32) bool {
		for _, p := range pos {
			if seg.Record(p) == nil {
				t.Errorf("segment %d: no record at pending position %d", seg.ID, p)
			}
			refs = append(refs, store.Ref{Seg: seg.ID, Pos: p})
		}
		return true
	})
	if err != nil {
		t.Fatalf("Pending(%d) = %v", route, err)
	}
	return refs
}

// pendingSeqs returns device/seq pairs of frames with undelivered records.
func pendingSeqs(t testing.TB, s *store.Store, route uint16) map[string][]uint64 {
	t.Helper()
	m := map[string][]uint64{}
	err := s.Pending(route, 0, func(seg *store.Segment, pos []uint32) bool {
		for _, p := range pos {
			i, _, ok := seg.Locate(p)
			if !ok {
				t.Fatalf("segment %d: Locate(%d) failed", seg.ID, p)
			}
			f := seg.Frames[i]
			if l := m[f.Device]; len(l) == 0 || l[len(l)-1] != f.Seq {
				m[f.Device] = append(l, f.Seq)
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("Pending(%d) = %v", route, err)
	}
	return m
}

// appendTogether appends frames so that they land in one group commit: it
// holds the committer inside the commit of a dummy frame (device "gate")
// while they are queued. It needs installGate before Open.
func appendTogether(t testing.TB, s *store.Store, g *gate, frames ...*store.Frame) {
	t.Helper()
	g.hold.Store(true)
	first := make(chan error, 1)
	s.Append(frame("gate", 1, 0), func(err error) { first <- err })
	<-g.entered
	errs := make(chan error, len(frames))
	for _, f := range frames {
		s.Append(f, func(err error) { errs <- err })
	}
	g.release <- struct{}{}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range frames {
		if err := <-errs; err != nil {
			t.Fatalf("Append done = %v", err)
		}
	}
}

type gate struct {
	hold             atomic.Bool
	entered, release chan struct{}
}

func installGate(t testing.TB) *gate {
	g := &gate{entered: make(chan struct{}), release: make(chan struct{})}
	store.SetCommitHook(func() error {
		if g.hold.CompareAndSwap(true, false) {
			g.entered <- struct{}{}
			<-g.release
		}
		return nil
	})
	t.Cleanup(func() { store.SetCommitHook(nil) })
	return g
}

func segmentKeys(t testing.TB, dir string) int {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatalf("open badger: %v", err)
	}
	defer db.Close()
	n := 0
	err = db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if k[0] == 'j' || k[0] == 'r' {
				n++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestLastSeqPersists(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	r, err := s.RouteID("hook")
	if err != nil {
		t.Fatal(err)
	}
	appendWait(t, s, frame("a", 1, 1, r), frame("b", 7, 2, r), frame("a", 2, 1))
	appendWait(t, s, frame("a", 3, 1, r))
	f := func(s *store.Store, dev string, want uint64) {
		t.Helper()
		if got := s.LastSeq(dev); got != want {
			t.Errorf("LastSeq(%q) = %d, want %d", dev, got, want)
		}
	}
	f(s, "a", 3)
	f(s, "b", 7)
	f(s, "c", 0)
	mustClose(t, s)

	s = open(t, dir)
	f(s, "a", 3)
	f(s, "b", 7)
	// Deliver everything: all segments retire, last seqs must survive.
	s.MarkDelivered(r, pendingRefs(t, s, r))
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := s.Stats().SegmentsLive; n != 0 {
			return fmt.Errorf("SegmentsLive = %d, want 0", n)
		}
		return nil
	})
	mustClose(t, s)
	if n := segmentKeys(t, dir); n != 0 {
		t.Errorf("%d segment/bitmap keys left after retirement, want 0", n)
	}
	s = open(t, dir)
	defer mustClose(t, s)
	f(s, "a", 3)
	f(s, "b", 7)
	if got := s.Stats().SegmentsLive; got != 0 {
		t.Errorf("SegmentsLive after reopen = %d, want 0", got)
	}
}

func TestPendingAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	r, _ := s.RouteID("r1")
	other, _ := s.RouteID("r2")
	if r == other {
		t.Fatalf("RouteID: two names got ID %d", r)
	}
	for seq := uint64(1); seq <= 6; seq++ {
		appendWait(t, s, frame("d", seq, 3, r))
	}
	all := pendingRefs(t, s, r)
	if len(all) != 18 {
		t.Fatalf("Pending: %d refs, want 18", len(all))
	}
	if refs := pendingRefs(t, s, other); len(refs) != 0 {
		t.Fatalf("Pending(other route) = %v, want none", refs)
	}
	mustClose(t, s)

	s = open(t, dir)
	if got := pendingRefs(t, s, r); !slices.Equal(got, all) {
		t.Fatalf("Pending after reopen = %v, want %v", got, all)
	}
	// Deliver every other record, plus repeats and bogus refs that must be ignored.
	var done, rest []store.Ref
	for i, ref := range all {
		if i%2 == 0 {
			done = append(done, ref)
		} else {
			rest = append(rest, ref)
		}
	}
	s.MarkDelivered(r, done)
	s.MarkDelivered(r, done[:2])
	s.MarkDelivered(r, []store.Ref{{Seg: 999, Pos: 0}, {Seg: all[0].Seg, Pos: 1 << 20}})
	s.MarkDelivered(other, rest)
	if got := pendingRefs(t, s, r); !slices.Equal(got, rest) {
		t.Fatalf("Pending after marks = %v, want %v", got, rest)
	}
	mustClose(t, s)

	s = open(t, dir)
	if got := pendingRefs(t, s, r); !slices.Equal(got, rest) {
		t.Fatalf("Pending after marks and reopen = %v, want %v", got, rest)
	}
	// Pending honours `after` and early stop.
	var visited []uint64
	_ = s.Pending(r, rest[0].Seg, func(seg *store.Segment, pos []uint32) bool {
		visited = append(visited, seg.ID)
		return len(visited) < 2
	})
	if len(visited) != 2 || visited[0] <= rest[0].Seg {
		t.Errorf("Pending(after=%d) visited %v, want two segments after it", rest[0].Seg, visited)
	}
	s.MarkDelivered(r, rest)
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := s.Stats().SegmentsLive; n != 0 {
			return fmt.Errorf("SegmentsLive = %d, want 0", n)
		}
		return nil
	})
	max := s.MaxSegment()
	mustClose(t, s)
	if n := segmentKeys(t, dir); n != 0 {
		t.Errorf("%d segment/bitmap keys left, want 0", n)
	}

	// Segment IDs keep increasing after every segment was retired.
	s = open(t, dir)
	defer mustClose(t, s)
	if got := s.MaxSegment(); got != max {
		t.Errorf("MaxSegment after reopen = %d, want %d", got, max)
	}
	var seen uint64
	s2 := open(t, t.TempDir(), func(o *store.Options) {}) // independent store must not interfere
	mustClose(t, s2)
	appendWait(t, s, frame("d", 7, 1, r))
	_ = s.Pending(r, 0, func(seg *store.Segment, pos []uint32) bool { seen = seg.ID; return true })
	if seen <= max {
		t.Errorf("new segment ID %d, want > %d", seen, max)
	}
}

func TestTwoRoutesRetireWhenBothDone(t *testing.T) {
	dir := t.TempDir()
	g := installGate(t)
	s := open(t, dir)
	a, _ := s.RouteID("a")
	b, _ := s.RouteID("b")
	appendTogether(t, s, g, frame("x", 1, 2, a, b), frame("y", 1, 1, b), frame("z", 1, 1, a, a))
	s.MarkDelivered(a, pendingRefs(t, s, a))
	if refs := pendingRefs(t, s, a); len(refs) != 0 {
		t.Fatalf("Pending(a) after marking all = %v", refs)
	}
	mustClose(t, s)

	s = open(t, dir)
	defer mustClose(t, s)
	if refs := pendingRefs(t, s, a); len(refs) != 0 {
		t.Fatalf("Pending(a) after reopen = %v", refs)
	}
	if got := s.Stats().SegmentsLive; got != 1 {
		t.Fatalf("SegmentsLive = %d, want 1 (route b not done)", got)
	}
	refsB := pendingRefs(t, s, b)
	if len(refsB) != 3 {
		t.Fatalf("Pending(b) = %v, want 3 refs", refsB)
	}
	s.MarkDelivered(b, refsB[:2])
	if got := s.Stats().SegmentsLive; got != 1 {
		t.Fatalf("SegmentsLive = %d, want 1", got)
	}
	s.MarkDelivered(b, refsB[2:])
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := s.Stats().SegmentsLive; n != 0 {
			return fmt.Errorf("SegmentsLive = %d, want 0", n)
		}
		return nil
	})
}

type event struct {
	dev string
	seq uint64
}

type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) add(dev string, seq uint64) {
	r.mu.Lock()
	r.events = append(r.events, event{dev, seq})
	r.mu.Unlock()
}

func (r *recorder) last(dev string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var v uint64
	for _, e := range r.events {
		if e.dev == dev {
			if e.seq <= v {
				panic(fmt.Sprintf("OnDelivered(%q) went from %d to %d", dev, v, e.seq))
			}
			v = e.seq
		}
	}
	return v
}

func TestDeliveredWatermark(t *testing.T) {
	dir := t.TempDir()
	rec := &recorder{}
	s := openHooked(t, dir, store.Hooks{OnDelivered: rec.add})
	r, _ := s.RouteID("r")
	// Frame 1 and 2 in one segment, 3 in the next, 4 has no routes.
	appendWait(t, s, frame("d", 1, 2, r), frame("d", 2, 1, r))
	appendWait(t, s, frame("d", 3, 1, r))
	appendWait(t, s, frame("d", 4, 1))
	refs := pendingRefs(t, s, r) // 1/0 1/1 2/0 3/0
	want := func(s *store.Store, w uint64) {
		t.Helper()
		if got := s.DeliveredSeq("d"); got != w {
			t.Fatalf("DeliveredSeq = %d, want %d", got, w)
		}
	}
	want(s, 0)
	s.MarkDelivered(r, refs[2:3]) // frame 2 before frame 1: watermark waits
	want(s, 0)
	s.MarkDelivered(r, refs[0:1]) // half of frame 1
	want(s, 0)
	s.MarkDelivered(r, refs[1:2]) // rest of frame 1: 1 and 2 done
	want(s, 2)
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if got := rec.last("d"); got != 2 {
			return fmt.Errorf("OnDelivered watermark = %d, want 2", got)
		}
		return nil
	})
	mustClose(t, s)

	rec2 := &recorder{}
	s = openHooked(t, dir, store.Hooks{OnDelivered: rec2.add})
	want(s, 2)
	if got := s.LastSeq("d"); got != 4 {
		t.Fatalf("LastSeq = %d, want 4", got)
	}
	s.MarkDelivered(r, pendingRefs(t, s, r)) // frame 3; 4 has no routes
	want(s, 4)
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if got := rec2.last("d"); got != 4 {
			return fmt.Errorf("OnDelivered watermark = %d, want 4", got)
		}
		return nil
	})
	// A frame without routes is delivered when stored.
	appendWait(t, s, frame("d", 5, 1))
	want(s, 5)
	mustClose(t, s)

	// A pending frame after retired ones: watermark is one below it.
	s = open(t, dir)
	want(s, 5)
	appendWait(t, s, frame("d", 6, 1, r), frame("d", 7, 1, r))
	want(s, 5)
	refs = pendingRefs(t, s, r)
	s.MarkDelivered(r, refs[1:])
	want(s, 5)
	mustClose(t, s)
	s = open(t, dir)
	want(s, 5)
	s.MarkDelivered(r, pendingRefs(t, s, r))
	want(s, 7)
	mustClose(t, s)
}

func TestConcurrentAppendsGroupCommit(t *testing.T) {
	s := open(t, t.TempDir())
	defer mustClose(t, s)
	r, _ := s.RouteID("r")
	const workers, per = 16, 300
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range workers {
		wg.Go(func() {
			dev := fmt.Sprintf("dev%d", w)
			var inner sync.WaitGroup
			for seq := uint64(1); seq <= per; seq++ {
				inner.Add(1)
				routes := []uint16{r}
				if seq%7 == 0 {
					routes = nil
				}
				s.Append(frame(dev, seq, 1, routes...), func(err error) {
					if err != nil {
						failed.Add(1)
					}
					inner.Done()
				})
			}
			inner.Wait()
			if got := s.LastSeq(dev); got != per {
				t.Errorf("LastSeq(%q) = %d, want %d", dev, got, per)
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d appends failed", n)
	}
	st := s.Stats()
	if st.Frames != workers*per {
		t.Errorf("Stats.Frames = %d, want %d", st.Frames, workers*per)
	}
	if st.Commits >= workers*per {
		t.Errorf("Stats.Commits = %d for %d appends, want grouping", st.Commits, workers*per)
	}
	t.Logf("%d appends in %d commits", workers*per, st.Commits)
	got := pendingSeqs(t, s, r)
	for w := range workers {
		seqs := got[fmt.Sprintf("dev%d", w)]
		if len(seqs) != per-per/7 || !slices.IsSorted(seqs) {
			t.Errorf("dev%d: %d pending frames (sorted %v), want %d", w, len(seqs), slices.IsSorted(seqs), per-per/7)
		}
	}
}

func TestCloseFlushesQueuedAppends(t *testing.T) {
	dir := t.TempDir()
	var commits atomic.Int64
	s := openHooked(t, dir, store.Hooks{OnCommit: func(*store.Segment) { commits.Add(1) }})
	r, _ := s.RouteID("r")
	const n = 2000
	var ok atomic.Int64
	for seq := uint64(1); seq <= n; seq++ {
		s.Append(frame("d", seq, 1, r), func(err error) {
			if err == nil {
				ok.Add(1)
			}
		})
	}
	mustClose(t, s)
	if got := ok.Load(); got != n {
		t.Fatalf("done(nil) for %d of %d appends queued before Close", got, n)
	}
	if commits.Load() == 0 {
		t.Error("OnCommit never called")
	}
	var lateErr error
	s.Append(frame("d", n+1, 1, r), func(err error) { lateErr = err })
	if !errors.Is(lateErr, store.ErrClosed) {
		t.Errorf("Append after Close: done(%v), want ErrClosed", lateErr)
	}
	if err := s.Close(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("second Close() = %v, want ErrClosed", err)
	}
	if err := s.Pending(r, 0, func(*store.Segment, []uint32) bool { return true }); err != nil && !errors.Is(err, store.ErrClosed) {
		t.Errorf("Pending after Close = %v", err)
	}

	s = open(t, dir)
	defer mustClose(t, s)
	if got := s.LastSeq("d"); got != n {
		t.Errorf("LastSeq after reopen = %d, want %d", got, n)
	}
	if got := len(pendingRefs(t, s, r)); got != n {
		t.Errorf("Pending after reopen: %d records, want %d", got, n)
	}
}

func TestNoRouteFramesWriteNoSegment(t *testing.T) {
	dir := t.TempDir()
	var commits atomic.Int64
	s := openHooked(t, dir, store.Hooks{OnCommit: func(*store.Segment) { commits.Add(1) }})
	appendWait(t, s, frame("d", 10, 3), frame("e", 4, 0, 1))
	if got := s.MaxSegment(); got != 0 {
		t.Errorf("MaxSegment = %d, want 0", got)
	}
	if got := commits.Load(); got != 0 {
		t.Errorf("OnCommit called %d times, want 0", got)
	}
	if got := s.DeliveredSeq("d"); got != 10 {
		t.Errorf("DeliveredSeq = %d, want 10", got)
	}
	mustClose(t, s)
	s = open(t, dir)
	defer mustClose(t, s)
	if got := s.LastSeq("d"); got != 10 {
		t.Errorf("LastSeq(d) after reopen = %d, want 10", got)
	}
	if got := s.LastSeq("e"); got != 4 {
		t.Errorf("LastSeq(e) after reopen = %d, want 4", got)
	}
}

func TestOnCommitSegment(t *testing.T) {
	segs := make(chan *store.Segment, 10)
	g := installGate(t)
	s := openHooked(t, t.TempDir(), store.Hooks{OnCommit: func(seg *store.Segment) { segs <- seg }})
	defer mustClose(t, s)
	f1, f2, f3 := frame("a", 1, 2, 1), frame("b", 1, 1), frame("c", 5, 3, 2)
	appendTogether(t, s, g, f1, f2, f3)
	seg := <-segs
	if seg.ID == 0 || seg.ID != s.MaxSegment() {
		t.Fatalf("segment ID %d, MaxSegment %d", seg.ID, s.MaxSegment())
	}
	if len(seg.Frames) != 2 || seg.Frames[0] != f1 || seg.Frames[1] != f3 {
		t.Fatalf("segment frames = %v, want the two routed frames", seg.Frames)
	}
	if seg.Len() != 5 || seg.Pos(1, 2) != 4 {
		t.Errorf("Len() = %d, Pos(1,2) = %d; want 5, 4", seg.Len(), seg.Pos(1, 2))
	}
	// The stored segment decodes to the same records at the same positions.
	err := s.Pending(2, 0, func(disk *store.Segment, pos []uint32) bool {
		if !slices.Equal(pos, []uint32{2, 3, 4}) {
			t.Errorf("Pending(2) positions = %v, want [2 3 4]", pos)
		}
		for _, p := range pos {
			if string(disk.Record(p)) != string(seg.Record(p)) {
				t.Errorf("record %d: disk %q, memory %q", p, disk.Record(p), seg.Record(p))
			}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRouteIDStable(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ids := map[string]uint16{}
	for _, name := range []string{"alpha", "beta", "gamma", "beta"} {
		id, err := s.RouteID(name)
		if err != nil {
			t.Fatal(err)
		}
		if prev, ok := ids[name]; ok && prev != id {
			t.Errorf("RouteID(%q) = %d, then %d", name, prev, id)
		}
		ids[name] = id
	}
	mustClose(t, s)
	s = open(t, dir)
	defer mustClose(t, s)
	for name, want := range ids {
		if got, _ := s.RouteID(name); got != want {
			t.Errorf("RouteID(%q) after reopen = %d, want %d", name, got, want)
		}
	}
	if id, _ := s.RouteID("delta"); id == 0 || id == ids["alpha"] || id == ids["beta"] || id == ids["gamma"] {
		t.Errorf("RouteID(new) = %d, collides", id)
	}
	if got := s.Routes(); len(got) != 4 {
		t.Errorf("Routes() = %v, want 4 names", got)
	}
}

func TestCommitErrorFailsWholeCommit(t *testing.T) {
	var fail atomic.Bool
	store.SetCommitHook(func() error {
		if fail.Load() {
			return errors.New("no space left on device")
		}
		return nil
	})
	defer store.SetCommitHook(nil)
	dir := t.TempDir()
	s := open(t, dir)
	r, _ := s.RouteID("r")
	appendWait(t, s, frame("d", 1, 1, r))
	fail.Store(true)
	errs := make(chan error, 3)
	for seq := uint64(2); seq <= 4; seq++ {
		s.Append(frame("d", seq, 1, r), func(err error) { errs <- err })
	}
	for range 3 {
		if err := <-errs; err == nil {
			t.Fatal("done(nil) for a frame whose commit failed")
		}
	}
	if got := s.LastSeq("d"); got != 1 {
		t.Errorf("LastSeq after failed commit = %d, want 1", got)
	}
	if st := s.Stats(); st.CommitErrors == 0 {
		t.Errorf("Stats.CommitErrors = 0")
	}
	// Delivery marks survive a failed commit and are persisted later.
	s.MarkDelivered(r, pendingRefs(t, s, r))
	fail.Store(false)
	appendWait(t, s, frame("d", 5, 1, r))
	if got := s.LastSeq("d"); got != 5 {
		t.Errorf("LastSeq after recovery = %d, want 5", got)
	}
	mustClose(t, s)
	s = open(t, dir)
	defer mustClose(t, s)
	got := pendingSeqs(t, s, r)
	if !slices.Equal(got["d"], []uint64{5}) {
		t.Errorf("pending seqs after reopen = %v, want [5]", got["d"])
	}
}

func TestCheckpointSnapshot(t *testing.T) {
	defer store.SetSnapshotThresholds(2, 64, 128)()
	dir := t.TempDir()
	s := open(t, dir)
	r, _ := s.RouteID("r")
	for seq := uint64(1); seq <= 40; seq++ {
		appendWait(t, s, frame(fmt.Sprintf("dev%d", seq%5), seq, 1), frame("routed", seq, 1, r))
		s.MarkDelivered(r, pendingRefs(t, s, r))
	}
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if st := s.Stats(); st.SegmentsLive != 0 || st.Snapshots == 0 {
			return fmt.Errorf("SegmentsLive = %d, Snapshots = %d; want 0 and > 0", st.SegmentsLive, st.Snapshots)
		}
		return nil
	})
	st := s.Stats()
	if st.CheckpointKeys >= 40 { // without snapshots there would be one per commit, 80+
		t.Errorf("CheckpointKeys = %d after snapshots, want few", st.CheckpointKeys)
	}
	mustClose(t, s)
	s = open(t, dir)
	defer mustClose(t, s)
	for i := range 5 {
		dev := fmt.Sprintf("dev%d", i)
		want := uint64(40 - (40-i)%5)
		if i == 0 {
			want = 40
		}
		if got := s.LastSeq(dev); got != want {
			t.Errorf("LastSeq(%q) = %d, want %d", dev, got, want)
		}
	}
	if got := s.LastSeq("routed"); got != 40 {
		t.Errorf("LastSeq(routed) = %d, want 40", got)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := store.Open(context.Background(), store.Options{}); !errors.Is(err, store.ErrNoDir) {
		t.Errorf("Open(no dir) = %v, want ErrNoDir", err)
	}
	dir := t.TempDir()
	s := open(t, dir)
	defer mustClose(t, s)
	if _, err := store.Open(context.Background(), store.Options{Dir: dir}); err == nil {
		t.Error("second Open of the same dir succeeded")
	}
}

func TestLargeFrameAndValueLogGC(t *testing.T) {
	dir := t.TempDir()
	gc := func(o *store.Options) { o.GCInterval = 5 * time.Millisecond; o.MaxCommitBytes = 64 << 10 }
	s := open(t, dir, gc)
	r, _ := s.RouteID("r")
	big := frame("big", 1, 0, r)
	for i := range 3 {
		big.Records = append(big.Records, append(fmt.Appendf(nil, `{"i":%d,"pad":"`, i), bytes.Repeat([]byte("z"), 600<<10)...))
	}
	small := make([]*store.Frame, 0, 500)
	for seq := uint64(1); seq <= 500; seq++ {
		small = append(small, frame("small", seq, 1, r))
	}
	appendWait(t, s, append([]*store.Frame{big}, small...)...)
	if st := s.Stats(); st.Commits < 2 {
		t.Errorf("Stats.Commits = %d, want the 1.8 MB frame and the 64 KiB cap to split commits", st.Commits)
	}
	mustClose(t, s)
	s = open(t, dir, gc)
	defer mustClose(t, s)
	got := pendingSeqs(t, s, r)
	if len(got["big"]) != 1 || len(got["small"]) != 500 {
		t.Fatalf("pending after reopen: big %v, %d small frames", got["big"], len(got["small"]))
	}
	s.MarkDelivered(r, pendingRefs(t, s, r))
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := s.Stats().SegmentsLive; n != 0 {
			return fmt.Errorf("SegmentsLive = %d, want 0", n)
		}
		return nil
	})
}

func TestLastSeqAfterRetirementInAnyOrder(t *testing.T) {
	for _, order := range [][]int{{0, 1, 2}, {2, 1, 0}, {1, 0, 2}} {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir)
			r, _ := s.RouteID("r")
			for seq := uint64(1); seq <= 3; seq++ { // one segment per seq
				appendWait(t, s, frame("d", seq, 1, r))
			}
			refs := pendingRefs(t, s, r)
			for i, seg := range order {
				s.MarkDelivered(r, refs[seg:seg+1])
				mustClose(t, s)
				s = open(t, dir)
				if got := s.LastSeq("d"); got != 3 {
					t.Fatalf("after retiring %v: LastSeq = %d, want 3", order[:i+1], got)
				}
				if got := s.Stats().SegmentsLive; got != 2-i {
					t.Fatalf("after retiring %v: SegmentsLive = %d, want %d", order[:i+1], got, 2-i)
				}
			}
			mustClose(t, s)
		})
	}
}

// After a failed commit, a later frame whose PrevSeq was lost is refused with ErrGap, so LastSeq
// never moves past the hole and the device is told to resend it.
func TestPrevSeqRefusesGap(t *testing.T) {
	var fail atomic.Bool
	store.SetCommitHook(func() error {
		if fail.Load() {
			return errors.New("no space left on device")
		}
		return nil
	})
	defer store.SetCommitHook(nil)
	s := open(t, t.TempDir())
	defer mustClose(t, s)
	r, _ := s.RouteID("r")
	f1 := frame("d", 1, 1, r)
	appendWait(t, s, f1)

	fail.Store(true)
	f2 := frame("d", 2, 1, r)
	f2.PrevSeq = 1
	errc := make(chan error, 1)
	s.Append(f2, func(err error) { errc <- err })
	if err := <-errc; err == nil {
		t.Fatal("frame 2 stored although its commit failed")
	}
	fail.Store(false)

	f3 := frame("d", 3, 1, r)
	f3.PrevSeq = 2 // the writer does not know yet that 2 was lost
	s.Append(f3, func(err error) { errc <- err })
	if err := <-errc; !errors.Is(err, store.ErrGap) {
		t.Fatalf("frame 3 after the hole: err = %v, want ErrGap", err)
	}
	if got := s.LastSeq("d"); got != 1 {
		t.Fatalf("LastSeq = %d, want 1 (frame 2 was never stored)", got)
	}
	// The device resends from 2: accepted, in order, within one commit or several.
	f2 = frame("d", 2, 1, r)
	f2.PrevSeq = 1
	f3 = frame("d", 3, 1, r)
	f3.PrevSeq = 2
	appendWait(t, s, f2, f3)
	if got := s.LastSeq("d"); got != 3 {
		t.Errorf("LastSeq after resend = %d, want 3", got)
	}
}
