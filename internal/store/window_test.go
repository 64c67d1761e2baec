package store_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

const W = store.WindowSize

// seqModel is what a device's window must say, computed the plain way: a seq counts as stored
// if it was stored windowed, is at or below a cumulative seq, or is older than the window.
type seqModel struct {
	top, fill uint64
	stored    map[uint64]bool
}

func newSeqModel() *seqModel { return &seqModel{stored: map[uint64]bool{}} }

func (m *seqModel) add(seq uint64) { m.stored[seq] = true; m.top = max(m.top, seq) }
func (m *seqModel) cum(seq uint64) { m.fill = max(m.fill, seq); m.top = max(m.top, seq) }

func (m *seqModel) has(seq uint64) bool {
	return seq <= m.top && (seq <= m.fill || seq+W <= m.top || m.stored[seq])
}

// check compares has against the model for every seq up to a little above the top.
func (m *seqModel) check(t *testing.T, what string, has func(uint64) bool) {
	t.Helper()
	bad := 0
	for s := uint64(1); s <= m.top+3; s++ {
		if got, want := has(s), m.has(s); got != want {
			if bad++; bad <= 5 {
				t.Errorf("%s: seq %d stored = %v, want %v (top %d)", what, s, got, want, m.top)
			}
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d seqs wrong in all", what, bad)
	}
}

// Random windowed and cumulative seqs, near the top and far above it: the window answers like
// the model, and so does its checkpoint entry decoded again, and two windows of the same device
// merged (in either order) answer like one that saw both.
func TestWindowModel(t *testing.T) {
	for round := range 40 {
		rnd := rand.New(rand.NewPCG(uint64(round), 7))
		base := uint64(rnd.IntN(3)) * uint64(rnd.IntN(5000))
		all, ma, mb := newSeqModel(), newSeqModel(), newSeqModel()
		for _, m := range []*seqModel{all, ma, mb} {
			m.cum(base)
		}
		wall, wa, wb := store.NewTestWindow(base), store.NewTestWindow(base), store.NewTestWindow(base)
		top := base
		for range 1 + rnd.IntN(3000) {
			var seq uint64
			switch r := rnd.IntN(100); {
			case r < 2:
				seq = top + W + uint64(rnd.IntN(3*W)) // far above: the window moves past everything
			case r < 60:
				seq = top + 1 + uint64(rnd.IntN(4))
			default:
				seq = top + 2 - uint64(rnd.IntN(int(min(top+1, 1500))))
			}
			if seq == 0 {
				continue
			}
			top = max(top, seq)
			cumulative := rnd.IntN(50) == 0
			m, w := ma, wa
			if rnd.IntN(2) == 0 {
				m, w = mb, wb
			}
			for _, x := range []struct {
				m *seqModel
				w *store.TestWindow
			}{{all, wall}, {m, w}} {
				if cumulative {
					x.m.cum(seq)
					x.w.Fill(seq)
				} else {
					x.m.add(seq)
					x.w.Add(seq)
				}
			}
		}
		name := fmt.Sprintf("round %d", round)
		all.check(t, name, wall.Has)
		_, wins, err := store.LoadCheckpoints(wall.Checkpoint("d"))
		if err != nil || wins["d"] == nil {
			t.Fatalf("%s: LoadCheckpoints = %v, %v", name, wins, err)
		}
		all.check(t, name+" after encoding", wins["d"].Has)
		ca, cb := wa.Checkpoint("d"), wb.Checkpoint("d")
		for _, order := range [][][]byte{{ca, cb}, {cb, ca}} {
			last, wins, err := store.LoadCheckpoints(order...)
			if err != nil || wins["d"] == nil {
				t.Fatalf("%s: LoadCheckpoints = %v, %v", name, wins, err)
			}
			if last["d"] != all.top {
				t.Errorf("%s: merged last seq %d, want %d", name, last["d"], all.top)
			}
			all.check(t, name+" merged", wins["d"].Has)
		}
		if t.Failed() {
			return
		}
	}
}

// A window without holes is written as a floor alone: its entry is a few bytes, not a bitmap.
func TestWindowEntryPacksContiguousSeqs(t *testing.T) {
	w := store.NewTestWindow(0)
	for s := uint64(1); s <= 5000; s++ {
		w.Add(s)
	}
	if n := len(w.Checkpoint("dev")); n > 16 {
		t.Errorf("checkpoint of a window without holes is %d bytes", n)
	}
	w.Add(5002) // one hole
	if n := len(w.Checkpoint("dev")); n > 17 {
		t.Errorf("checkpoint of a window with one hole is %d bytes", n)
	}
}

// Checkpoint values of version 1, written before windows existed, decode as they did: every
// entry is a device's last seq, everything up to it stored.
func TestOldCheckpointDecodes(t *testing.T) {
	// Version 1: "SN1" last seq 300, "u" last seq 5.
	v1 := []byte{1, 3, 'S', 'N', '1', 0xac, 0x02, 1, 'u', 5}
	got, err := store.DecodeCheckpoint(v1)
	if err != nil || got["SN1"] != 300 || got["u"] != 5 || len(got) != 2 {
		t.Fatalf("DecodeCheckpoint(v1) = %v, %v", got, err)
	}
	last, wins, err := store.LoadCheckpoints(v1)
	if err != nil || last["SN1"] != 300 || wins["SN1"] != nil || wins["u"] != nil {
		t.Fatalf("LoadCheckpoints(v1) = %v, %v, %v", last, wins, err)
	}
	// A version-1 entry and a window of the same device merge: the plain one is cumulative.
	w := store.NewTestWindow(0)
	w.Add(10)
	w.Add(7)
	last, wins, err = store.LoadCheckpoints(v1, w.Checkpoint("u"))
	if err != nil || last["u"] != 10 {
		t.Fatalf("LoadCheckpoints(v1, v2) = %v, %v", last, err)
	}
	for s, want := range map[uint64]bool{1: true, 5: true, 6: false, 7: true, 8: false, 9: false, 10: true, 11: false} {
		if got := wins["u"].Has(s); got != want {
			t.Errorf("merged window: seq %d stored = %v, want %v", s, got, want)
		}
	}
	// Windows are left out by the callers that ask only for last seqs.
	if got, err := store.DecodeCheckpoint(w.Checkpoint("u")); err != nil || got["u"] != 10 {
		t.Errorf("DecodeCheckpoint(v2) = %v, %v", got, err)
	}
	for _, bad := range [][]byte{{3, 1, 'u', 5}, {2, 1, 'u', 5}, {2, 1, 'u', 5, 2}, {2, 1, 'u', 5, 1, 6, 0}, {2, 1, 'u', 5, 1, 2, 0, 2, 1, 1}, {2, 1, 'u', 5, 1, 2, 4, 0}} {
		if _, err := store.DecodeCheckpoint(bad); err == nil {
			t.Errorf("DecodeCheckpoint(% x) = nil error", bad)
		}
	}
}

// A store written before windows existed (version-1 checkpoints, segments without the window
// flag) opens with its devices' last seqs; windowed frames then start from them.
func TestOldStoreOpens(t *testing.T) {
	dir := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		if err := txn.Set([]byte("m/format"), []byte{1}); err != nil {
			return err
		}
		seg := store.AppendSegment(nil, []*store.Frame{frame("tcp", 4, 1, 1)})
		if err := txn.Set(append([]byte("j/"), 0, 0, 0, 0, 0, 0, 0, 1), seg); err != nil {
			return err
		}
		if err := txn.Set([]byte("n/r"), []byte{0, 1}); err != nil {
			return err
		}
		return txn.Set(append([]byte("s/"), 0, 0, 0, 0, 0, 0, 0, 1), []byte{1, 1, 'u', 20, 3, 't', 'c', 'p', 2})
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, dir)
	defer func() { mustClose(t, s) }()
	if s.LastSeq("u") != 20 || s.LastSeq("tcp") != 4 {
		t.Fatalf("LastSeq = %d, %d, want 20, 4", s.LastSeq("u"), s.LastSeq("tcp"))
	}
	wantSeqs(t, s, "u", map[uint64]bool{1: true, 20: true, 21: false})
	appendWait(t, s, wframe("u", 23), wframe("tcp", 6, 1))
	wantSeqs(t, s, "u", map[uint64]bool{20: true, 21: false, 22: false, 23: true})
	wantSeqs(t, s, "tcp", map[uint64]bool{3: true, 4: true, 5: false, 6: true})
	mustClose(t, s)
	s = open(t, dir)
	wantSeqs(t, s, "u", map[uint64]bool{20: true, 21: false, 22: false, 23: true})
	wantSeqs(t, s, "tcp", map[uint64]bool{3: true, 4: true, 5: false, 6: true})
}

func wframe(dev string, seq uint64, routes ...uint16) *store.Frame {
	f := frame(dev, seq, 1, routes...)
	f.Window = true
	return f
}

func wantSeqs(t *testing.T, s *store.Store, dev string, want map[uint64]bool) {
	t.Helper()
	for _, seq := range slices.Sorted(mapKeys(want)) {
		if got, _ := s.WindowSeq(dev, seq); got != want[seq] {
			t.Errorf("WindowSeq(%q, %d) stored = %v, want %v", dev, seq, got, want[seq])
		}
	}
}

func mapKeys(m map[uint64]bool) func(func(uint64) bool) {
	return func(yield func(uint64) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// Windowed frames stored out of order: holes stay holes until they are stored, a hole below the
// highest seq can be stored later, PrevSeq does not apply, and cumulative frames of the same
// device fill everything below them.
func TestWindowSeqHoles(t *testing.T) {
	s := open(t, t.TempDir())
	defer func() { mustClose(t, s) }()
	r, _ := s.RouteID("r")
	f := wframe("u", 2, r)
	f.PrevSeq = 1 // ignored for a windowed frame: nothing is chained
	appendWait(t, s, wframe("u", 5, r), f, wframe("u", 9))
	wantSeqs(t, s, "u", map[uint64]bool{1: false, 2: true, 3: false, 4: false, 5: true, 6: false, 8: false, 9: true, 10: false})
	if s.LastSeq("u") != 9 {
		t.Errorf("LastSeq = %d, want 9", s.LastSeq("u"))
	}
	appendWait(t, s, wframe("u", 3, r), wframe("u", 8))
	wantSeqs(t, s, "u", map[uint64]bool{1: false, 3: true, 4: false, 8: true, 9: true})

	// A TCP device that starts sending windowed frames: its TCP seqs are cumulative.
	appendWait(t, s, frame("m", 1, 1, r), frame("m", 3, 1, r))
	wantSeqs(t, s, "m", map[uint64]bool{1: true, 2: true, 3: true, 4: false})
	appendWait(t, s, wframe("m", 6, r))
	wantSeqs(t, s, "m", map[uint64]bool{3: true, 4: false, 5: false, 6: true, 7: false})
	appendWait(t, s, frame("m", 8, 1)) // a cumulative frame again: everything below counts
	wantSeqs(t, s, "m", map[uint64]bool{4: true, 5: true, 7: true, 8: true, 9: false})

	// Far above: seqs older than the window count as stored.
	appendWait(t, s, wframe("u", 9+W+5))
	wantSeqs(t, s, "u", map[uint64]bool{4: true, 10: true, 14: true, 15: false, 9 + W + 4: false, 9 + W + 5: true})
}

// windowScenario stores frames of device "u" as a lossy UDP device would (datagrams lost, some
// resent later below the highest seq, some never) in the given way, and returns the model.
func windowScenario(t *testing.T, s *store.Store, routes func(seq uint64) []uint16) *seqModel {
	m := newSeqModel()
	var late, batch []*store.Frame
	for seq := uint64(1); seq <= 3*W; seq++ {
		switch {
		case seq%97 == 0 || (seq%10 == 3 && seq > 2*W):
			continue // lost for good
		case seq%10 == 3:
			late = append(late, wframe("u", seq, routes(seq)...)) // stored later
			continue
		}
		batch = append(batch, wframe("u", seq, routes(seq)...))
		m.add(seq)
		if seq%25 == 0 {
			appendWait(t, s, batch...)
			batch = batch[:0]
		}
		if len(late) > 0 && seq%50 == 0 {
			appendWait(t, s, late...)
			for _, f := range late {
				m.add(f.Seq)
			}
			late = late[:0]
		}
	}
	appendWait(t, s, batch...)
	return m
}

// The window survives Close and Open whatever holds its seqs: live segments, retired segments
// (device checkpoints), frames without routes (checkpoints), and snapshots of the checkpoints.
// Holes stored after a reopen are remembered too.
func TestWindowSurvivesReopen(t *testing.T) {
	for _, tc := range []struct {
		name     string
		deliver  bool // mark everything delivered: segments retire
		routes   func(r uint16) func(uint64) []uint16
		snapshot bool
	}{
		{name: "live segments", routes: allRoutes},
		{name: "retired segments", deliver: true, routes: allRoutes},
		{name: "no routes", routes: func(uint16) func(uint64) []uint16 { return func(uint64) []uint16 { return nil } }},
		{name: "mixed, snapshots", deliver: true, snapshot: true, routes: func(r uint16) func(uint64) []uint16 {
			return func(seq uint64) []uint16 {
				if seq%3 == 0 {
					return nil
				}
				return []uint16{r}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.snapshot {
				defer store.SetSnapshotThresholds(2, 0, 256)()
			}
			dir := t.TempDir()
			var deliverer *segDeliverer
			var hooks store.Hooks
			if tc.deliver {
				deliverer = &segDeliverer{}
				hooks = deliverer.hooks()
			}
			s := openHooked(t, dir, hooks)
			deliverer.attach(s)
			r, _ := s.RouteID("r")
			m := windowScenario(t, s, tc.routes(r))
			m.check(t, "before close", func(seq uint64) bool { ok, _ := s.WindowSeq("u", seq); return ok })
			deliverer.wait(t)
			st := s.Stats()
			mustClose(t, s)
			t.Logf("%d segments live, %d retired, %d checkpoint keys, %d snapshots", st.SegmentsLive, st.SegmentsRetired, st.CheckpointKeys, st.Snapshots)
			if tc.deliver && st.SegmentsRetired == 0 || tc.snapshot && st.Snapshots == 0 {
				t.Fatalf("scenario did not exercise what it is named for: %+v", st)
			}

			s = openHooked(t, dir, hooks)
			deliverer.attach(s)
			m.check(t, "after reopen", func(seq uint64) bool { ok, _ := s.WindowSeq("u", seq); return ok })
			if s.LastSeq("u") != m.top {
				t.Errorf("LastSeq = %d, want %d", s.LastSeq("u"), m.top)
			}
			// Holes in the window stored now, after the reopen.
			var holes []*store.Frame
			for seq := m.top - W + 1; seq <= m.top; seq++ {
				if !m.has(seq) && len(holes) < 20 {
					holes = append(holes, wframe("u", seq, tc.routes(r)(seq)...))
					m.add(seq)
				}
			}
			if len(holes) == 0 {
				t.Fatal("no holes in the window")
			}
			appendWait(t, s, holes...)
			deliverer.wait(t)
			mustClose(t, s)
			s = open(t, dir)
			m.check(t, "after the second reopen", func(seq uint64) bool { ok, _ := s.WindowSeq("u", seq); return ok })
			mustClose(t, s)
		})
	}
}

func allRoutes(r uint16) func(uint64) []uint16 {
	return func(uint64) []uint16 { return []uint16{r} }
}

// segDeliverer marks every committed segment delivered for all its routes, from OnCommit (which
// MarkDelivered, never waiting, may be called from). A nil *segDeliverer does nothing.
type segDeliverer struct {
	mu sync.Mutex
	s  *store.Store
}

func (d *segDeliverer) hooks() store.Hooks {
	return store.Hooks{OnCommit: func(seg *store.Segment) {
		d.mu.Lock()
		s := d.s
		d.mu.Unlock()
		byRoute := map[uint16][]store.Ref{}
		for i, f := range seg.Frames {
			for _, r := range f.Routes {
				for j := range f.Records {
					byRoute[r] = append(byRoute[r], store.Ref{Seg: seg.ID, Pos: seg.Pos(i, j)})
				}
			}
		}
		for r, refs := range byRoute {
			s.MarkDelivered(r, refs)
		}
	}}
}

func (d *segDeliverer) attach(s *store.Store) {
	if d != nil {
		d.mu.Lock()
		d.s = s
		d.mu.Unlock()
	}
}

// wait waits for the segments to retire.
func (d *segDeliverer) wait(t *testing.T) {
	t.Helper()
	if d == nil {
		return
	}
	d.mu.Lock()
	s := d.s
	d.mu.Unlock()
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := s.Stats().SegmentsLive; n != 0 {
			return fmt.Errorf("%d segments live", n)
		}
		return nil
	})
}

// OnWindowDelivered names each windowed frame once, when it is done on every route (at commit
// without routes); WindowSeq's delivered follows each frame, also for one stored late below the
// delivered watermark, which the watermark cannot tell.
func TestWindowDelivered(t *testing.T) {
	var mu sync.Mutex
	var got []uint64
	s := openHooked(t, t.TempDir(), store.Hooks{OnWindowDelivered: func(dev string, seq uint64) {
		mu.Lock()
		got = append(got, seq)
		mu.Unlock()
	}})
	defer func() { mustClose(t, s) }()
	r1, _ := s.RouteID("r1")
	r2, _ := s.RouteID("r2")
	appendWait(t, s, wframe("u", 1, r1), wframe("u", 3, r1, r2), wframe("u", 4))
	events := func(want ...uint64) {
		t.Helper()
		checkfor.Check(t, hang, time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(got, want) {
				return fmt.Errorf("OnWindowDelivered for %v, want %v", got, want)
			}
			return nil
		})
	}
	delivered := func(want map[uint64]bool) {
		t.Helper()
		for seq, w := range want {
			if _, d := s.WindowSeq("u", seq); d != w {
				t.Errorf("WindowSeq(u, %d) delivered = %v, want %v", seq, d, w)
			}
		}
	}
	events(4)
	delivered(map[uint64]bool{1: false, 3: false, 4: true})
	refs := pendingRefs(t, s, r1)
	s.MarkDelivered(r1, refs)
	events(4, 1)
	delivered(map[uint64]bool{1: true, 3: false, 4: true})
	s.MarkDelivered(r2, pendingRefs(t, s, r2))
	events(4, 1, 3)
	delivered(map[uint64]bool{1: true, 3: true, 4: true})
	if w := s.DeliveredSeq("u"); w != 4 {
		t.Fatalf("DeliveredSeq = %d, want 4", w)
	}
	// Seq 2 stored late, below the watermark: not delivered until it is.
	appendWait(t, s, wframe("u", 2, r1))
	delivered(map[uint64]bool{2: false})
	s.MarkDelivered(r1, pendingRefs(t, s, r1))
	events(4, 1, 3, 2)
	delivered(map[uint64]bool{2: true})
}

// With the store reopened, a windowed frame still pending is not delivered, and its event comes
// when it is.
func TestWindowDeliveredAfterReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	r, _ := s.RouteID("r")
	appendWait(t, s, wframe("u", 5, r), wframe("u", 2, r))
	s.MarkDelivered(r, pendingRefs(t, s, r)[:1]) // seq 5's record
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if _, d := s.WindowSeq("u", 5); !d {
			return fmt.Errorf("seq 5 not delivered")
		}
		return nil
	})
	mustClose(t, s)
	events := make(chan uint64, 4)
	s = openHooked(t, dir, store.Hooks{OnWindowDelivered: func(_ string, seq uint64) { events <- seq }})
	defer func() { mustClose(t, s) }()
	for seq, want := range map[uint64][2]bool{2: {true, false}, 5: {true, true}, 3: {false, false}} {
		if st, d := s.WindowSeq("u", seq); st != want[0] || d != want[1] {
			t.Errorf("WindowSeq(u, %d) = %v, %v, want %v, %v", seq, st, d, want[0], want[1])
		}
	}
	s.MarkDelivered(r, pendingRefs(t, s, r))
	if seq := <-events; seq != 2 {
		t.Errorf("OnWindowDelivered for %d, want 2", seq)
	}
	if _, d := s.WindowSeq("u", 2); !d {
		t.Errorf("seq 2 not delivered")
	}
}

// FuzzDecodeCheckpoint: decoding never panics, and what decodes encodes back to the same seqs.
func FuzzDecodeCheckpoint(f *testing.F) {
	w := store.NewTestWindow(3)
	for _, s := range []uint64{9, 5, 7, 2000, 1990, 1500} {
		w.Add(s)
	}
	seeds := [][]byte{{1, 3, 'S', 'N', '1', 0xac, 0x02, 1, 'u', 5}, w.Checkpoint("dev"), {2, 1, 'u', 5, 0}}
	for _, s := range seeds {
		for i := range s {
			f.Add(s[:i])
		}
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		last, wins, err := store.LoadCheckpoints(data)
		if err != nil {
			return
		}
		for dev, w := range wins {
			if w == nil {
				continue
			}
			if w.Top() != last[dev] {
				t.Fatalf("%q: window top %d, last seq %d", dev, w.Top(), last[dev])
			}
			_, again, err := store.LoadCheckpoints(w.Checkpoint(dev))
			if err != nil {
				t.Fatalf("re-decode: %v", err)
			}
			for s := w.Top() - min(w.Top(), W+2); s <= w.Top()+1; s++ {
				if again[dev].Has(s) != w.Has(s) {
					t.Fatalf("%q seq %d: %v after re-encoding, %v before", dev, s, again[dev].Has(s), w.Has(s))
				}
			}
		}
	})
}

// Windowed frames in cold segments (route a down, its backlog beyond the resident budget): the
// window holds them, also after a restart that counts those segments without reading them into
// memory; they are not delivered until route a marks them, and each is announced delivered once,
// not again when its segment warms.
func TestWindowColdSegments(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	events := map[uint64]int{}
	opts := func(o *store.Options) {
		o.MaxResident = 100
		o.MaxCommitFrames = 20
	}
	hooks := store.Hooks{OnWindowDelivered: func(_ string, seq uint64) { mu.Lock(); events[seq]++; mu.Unlock() }}
	s := openHooked(t, dir, hooks, opts)
	a, _ := s.RouteID("a")
	b, _ := s.RouteID("b")
	s.Spilled(a, 0)
	m := windowScenario(t, s, func(seq uint64) []uint16 {
		if seq%5 == 0 {
			return []uint16{b} // done once b is: cold segments hold done frames too
		}
		return []uint16{a, b}
	})
	s.MarkDelivered(b, pendingRefs(t, s, b))
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if st := s.Stats(); st.ColdSegments == 0 {
			return fmt.Errorf("no cold segments: %+v", st)
		}
		return nil
	})
	stored := func(seq uint64) bool { ok, _ := s.WindowSeq("u", seq); return ok }
	undelivered := func(when string) {
		t.Helper()
		for seq := m.top - W + 1; seq <= m.top; seq++ {
			if _, d := s.WindowSeq("u", seq); d != (m.stored[seq] && seq%5 == 0) {
				t.Fatalf("%s: seq %d delivered = %v, but route a has it unless seq%%5 == 0", when, seq, d)
			}
		}
	}
	m.check(t, "cold", stored)
	undelivered("cold")
	s.Spilled(a, 0)
	mustClose(t, s)

	s = openHooked(t, dir, hooks, opts)
	defer func() { mustClose(t, s) }()
	st := s.Stats()
	if st.ColdSegments == 0 {
		t.Fatalf("no cold segments after reopen: %+v", st)
	}
	m.check(t, "after reopen with cold segments", stored)
	undelivered("after reopen")
	s.MarkDelivered(a, pendingRefs(t, s, a))
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if st := s.Stats(); st.SegmentsLive != 0 {
			return fmt.Errorf("%d segments live", st.SegmentsLive)
		}
		return nil
	})
	checkfor.Check(t, hang, time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(events) != len(m.stored) {
			return fmt.Errorf("%d frames announced delivered, want %d", len(events), len(m.stored))
		}
		return nil
	})
	mu.Lock()
	for seq, n := range events {
		if n != 1 || !m.stored[seq] {
			t.Errorf("seq %d announced delivered %d times (stored: %v)", seq, n, m.stored[seq])
		}
	}
	mu.Unlock()
	for seq := m.top - W + 1; seq <= m.top; seq++ {
		if ok, d := s.WindowSeq("u", seq); ok && !d {
			t.Errorf("seq %d not delivered after route a delivered everything", seq)
		}
	}
	m.check(t, "delivered", stored)
}
