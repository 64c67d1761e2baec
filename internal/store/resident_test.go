package store_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// backlog appends n one-record frames for devices dev0..dev<devs-1> (seqs counting from 1 per
// device) to routes a and b in commits of about batch frames, marking b done as it goes, as a
// healthy route does while route a's endpoint is down. Route a has spilled: it holds nothing.
func backlog(t testing.TB, s *store.Store, a, b uint16, devs, n, batch int, seq map[string]uint64) {
	t.Helper()
	backlogFrames(t, s, a, b, devs, n, batch, 1, seq)
}

// backlogFrames is backlog with recs records per frame (n counts records).
func backlogFrames(t testing.TB, s *store.Store, a, b uint16, devs, n, batch, recs int, seq map[string]uint64) {
	t.Helper()
	s.Spilled(a, 0)
	for sent, k := 0, 0; sent < n; {
		var frames []*store.Frame
		for i := 0; i < batch && sent < n; i++ {
			dev := fmt.Sprintf("dev%d", k%devs)
			k++
			seq[dev]++
			frames = append(frames, frame(dev, seq[dev], recs, a, b))
			sent += recs
		}
		appendWait(t, s, frames...)
		s.MarkDelivered(b, pendingRefs(t, s, b))
	}
}

// checkOrder reads route's whole queue with Pending and checks that every device's seqs come in
// order, 1..want[dev].
func checkOrder(t testing.TB, s *store.Store, route uint16, want map[string]uint64) []store.Ref {
	t.Helper()
	got := map[string]uint64{}
	var refs []store.Ref
	var last uint64
	err := s.Pending(route, 0, func(seg *store.Segment, pos []uint32) bool {
		if seg.ID <= last {
			t.Fatalf("Pending: segment %d after %d", seg.ID, last)
		}
		last = seg.ID
		for _, p := range pos {
			i, _, _ := seg.Locate(p)
			f := seg.Frames[i]
			if f.Seq != got[f.Device]+1 {
				t.Fatalf("Pending: %s seq %d after %d", f.Device, f.Seq, got[f.Device])
			}
			got[f.Device] = f.Seq
			refs = append(refs, store.Ref{Seg: seg.ID, Pos: p})
		}
		return true
	})
	if err != nil {
		t.Fatalf("Pending(%d) = %v", route, err)
	}
	for dev, n := range want {
		if got[dev] != n {
			t.Errorf("Pending(%d): %s up to seq %d, want %d", route, dev, got[dev], n)
		}
	}
	return refs
}

// TestColdSegments: with route a down and route b delivering, the segments beyond the resident
// budget go cold; the backlog is counted and read back in order, also after a restart, and once
// delivered everything retires and every watermark reaches the last seq.
func TestColdSegments(t *testing.T) {
	dir := t.TempDir()
	const budget, devs, n = 500, 7, 12000
	opts := func(o *store.Options) { o.MaxResident = budget; o.MaxCommitFrames = 40 }
	s := open(t, dir, opts)
	a, _ := s.RouteID("a")
	b, _ := s.RouteID("b")
	seq := map[string]uint64{}
	backlog(t, s, a, b, devs, n, 40, seq)

	check := func(when string) {
		t.Helper()
		checkfor.Check(t, hang, 10*time.Millisecond, func() error {
			st := s.Stats()
			if st.ResidentRecords > budget+40 || st.ColdRecords == 0 || st.ResidentRecords+st.ColdRecords != n {
				return fmt.Errorf("%s: resident %d + cold %d records, want at most %d resident, %d in all", when,
					st.ResidentRecords, st.ColdRecords, budget+40, n)
			}
			return nil
		})
		if got := s.Backlog(a); got != n {
			t.Errorf("%s: Backlog(a) = %d, want %d", when, got, n)
		}
		if got := s.Backlog(b); got != 0 {
			t.Errorf("%s: Backlog(b) = %d, want 0", when, got)
		}
		for dev, last := range seq {
			if got := s.LastSeq(dev); got != last {
				t.Errorf("%s: LastSeq(%s) = %d, want %d", when, dev, got, last)
			}
			if got := s.DeliveredSeq(dev); got != 0 {
				t.Errorf("%s: DeliveredSeq(%s) = %d, want 0 (route a has everything)", when, dev, got)
			}
		}
	}
	check("cold")
	checkOrder(t, s, a, seq)
	s.Spilled(a, 0) // Pending counted everything as taken; let it go cold again
	mustClose(t, s)

	s = open(t, dir, opts)
	defer func() { mustClose(t, s) }()
	check("after reopen")
	refs := checkOrder(t, s, a, seq)
	s.MarkDelivered(a, refs)
	checkfor.Check(t, hang, 10*time.Millisecond, func() error {
		if st := s.Stats(); st.SegmentsLive != 0 {
			return fmt.Errorf("%d segments live after delivering everything, want 0 (%d cold)", st.SegmentsLive, st.ColdSegments)
		}
		return nil
	})
	for dev, last := range seq {
		if got := s.DeliveredSeq(dev); got != last {
			t.Errorf("DeliveredSeq(%s) = %d, want %d", dev, got, last)
		}
	}
}

// TestColdPagingDelivers pages route a's queue the way a route actor does — a window of records
// at a time, delivered (marked) before the next page — while new frames keep arriving, and
// checks that every record is handed out exactly once and the store ends empty.
func TestColdPagingDelivers(t *testing.T) {
	const budget, devs, n, window = 300, 5, 6000, 250
	s := open(t, t.TempDir(), func(o *store.Options) { o.MaxResident = budget; o.MaxCommitFrames = 25 })
	defer func() { mustClose(t, s) }()
	a, _ := s.RouteID("a")
	b, _ := s.RouteID("b")
	seq := map[string]uint64{}
	backlog(t, s, a, b, devs, n, 25, seq)

	seen := map[store.Ref]bool{}
	var cursor uint64
	for round := 0; ; round++ {
		var page []store.Ref
		err := s.Pending(a, cursor, func(seg *store.Segment, pos []uint32) bool {
			cursor = seg.ID
			for _, p := range pos {
				page = append(page, store.Ref{Seg: seg.ID, Pos: p})
			}
			return len(page) < window
		})
		if err != nil {
			t.Fatalf("Pending = %v", err)
		}
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			if seen[r] {
				t.Fatalf("round %d: %v handed out twice", round, r)
			}
			seen[r] = true
		}
		s.MarkDelivered(a, page)
		if round%4 == 0 { // more arrives meanwhile, to both routes
			backlog(t, s, a, b, devs, 100, 25, seq)
			s.Spilled(a, cursor)
		}
	}
	var total uint64
	for _, v := range seq {
		total += v
	}
	if uint64(len(seen)) != total {
		t.Errorf("handed out %d records, want %d (cursor %d)", len(seen), total, cursor)
		t.Logf("%s", store.DebugResidency(s))
		_ = s.Pending(a, 0, func(seg *store.Segment, pos []uint32) bool {
			t.Logf("from 0: segment %d positions %v", seg.ID, pos)
			return true
		})
	}
	checkfor.Check(t, hang, 10*time.Millisecond, func() error {
		if st := s.Stats(); st.SegmentsLive != 0 {
			return fmt.Errorf("%d segments live, want 0", st.SegmentsLive)
		}
		return nil
	})
}

// TestColdMarks: a mark for a segment that went cold (a route that held records past its
// Spilled call, or dead-letter repair at Open) is applied once the committer reads it back.
func TestColdMarks(t *testing.T) {
	const budget = 100
	s := open(t, t.TempDir(), func(o *store.Options) { o.MaxResident = budget; o.MaxCommitFrames = 10 })
	defer func() { mustClose(t, s) }()
	a, _ := s.RouteID("a")
	b, _ := s.RouteID("b")
	seq := map[string]uint64{}
	refs := checkOrder(t, s, a, nil) // nothing yet; a is now counted as holding all
	if len(refs) != 0 {
		t.Fatalf("Pending on an empty store = %v", refs)
	}
	backlog(t, s, a, b, 3, 1000, 10, seq)
	refs = checkOrder(t, s, a, seq)
	s.Spilled(a, 0) // a lies: it still has refs
	checkfor.Check(t, hang, 10*time.Millisecond, func() error {
		if st := s.Stats(); st.ColdRecords == 0 {
			return fmt.Errorf("no cold records")
		}
		return nil
	})
	s.MarkDelivered(a, refs)
	checkfor.Check(t, hang, 10*time.Millisecond, func() error {
		if st := s.Stats(); st.SegmentsLive != 0 || s.Backlog(a) != 0 {
			return fmt.Errorf("%d segments live, backlog %d, want none", st.SegmentsLive, s.Backlog(a))
		}
		return nil
	})
	for dev, last := range seq {
		if got := s.DeliveredSeq(dev); got != last {
			t.Errorf("DeliveredSeq(%s) = %d, want %d", dev, got, last)
		}
	}
}

// TestBacklogMemoryFlat: the store's heap does not grow with a backlog of a million messages
// beyond its resident budget. It fails when the budget is not enforced: the same backlog held
// resident costs several times the allowance.
func TestBacklogMemoryFlat(t *testing.T) {
	const budget, n, recs = 20000, 1000000, 4
	s := open(t, t.TempDir(), func(o *store.Options) { o.MaxResident = budget })
	defer func() { mustClose(t, s) }()
	a, _ := s.RouteID("a")
	b, _ := s.RouteID("b")
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	seq := map[string]uint64{}
	backlogFrames(t, s, a, b, 100, 2*budget, 1000, recs, seq) // warm up to the budget
	base := heap()
	backlogFrames(t, s, a, b, 100, n, 1000, recs, seq)
	checkfor.Check(t, hang, 10*time.Millisecond, func() error {
		if st := s.Stats(); st.ResidentRecords > budget+1000*recs {
			return fmt.Errorf("%d resident records, want at most %d", st.ResidentRecords, budget+1000*recs)
		}
		return nil
	})
	grew := int64(heap()) - int64(base)
	// Resident, these records would take ≥ 17 bytes each (frame state, pending lists, bitmaps).
	if limit := int64(n) * 17 / 4; grew > limit {
		t.Errorf("heap grew %d bytes over a backlog of %d records (%.1f B/record), want under %d", grew, n,
			float64(grew)/n, limit)
	}
	t.Logf("heap grew %d bytes over a backlog of %d records beyond the budget (%.2f B/record)", grew, n, float64(grew)/n)
	if got := s.Backlog(a); got != n+2*budget {
		t.Errorf("Backlog(a) = %d, want %d", got, n+2*budget)
	}
}
