package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// result is a command result frame of dev, as the actors store it.
func result(dev string, task uint64, code uint8, routes ...uint16) *store.Frame {
	return &store.Frame{Device: dev, Serial: dev, IMEI: "35" + dev, ICCID: "89", ReceivedAt: 1234,
		Result: true, Task: task, Code: code, Routes: routes,
		Records: [][]byte{fmt.Appendf(nil, `{"task":%d}`, task)}}
}

// pendingResults returns the tasks of the result frames route has pending, with their codes.
func pendingResults(t testing.TB, s *store.Store, route uint16) map[uint64]uint8 {
	t.Helper()
	m := map[uint64]uint8{}
	err := s.Pending(route, 0, func(seg *store.Segment, pos []uint32) bool {
		for _, p := range pos {
			i, r, ok := seg.Locate(p)
			if !ok {
				t.Fatalf("segment %d: Locate(%d) failed", seg.ID, p)
			}
			if f := seg.Frames[i]; f.Result {
				if want := fmt.Sprintf(`{"task":%d}`, f.Task); string(f.Records[r]) != want {
					t.Errorf("result %d: record %s, want %s", f.Task, f.Records[r], want)
				}
				m[f.Task] = f.Code
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("Pending(%d) = %v", route, err)
	}
	return m
}

func checkSeqs(t testing.TB, s *store.Store, dev string, last, delivered uint64) {
	t.Helper()
	if got := s.LastSeq(dev); got != last {
		t.Errorf("LastSeq(%q) = %d, want %d", dev, got, last)
	}
	if got := s.DeliveredSeq(dev); got != delivered {
		t.Errorf("DeliveredSeq(%q) = %d, want %d", dev, got, delivered)
	}
}

// Result frames are stored and delivered per route like DATA records, survive a restart, and
// retire their segment once every route is done; they never move the device's last stored seq
// or its delivered watermark, and never write a checkpoint.
func TestResultFrames(t *testing.T) {
	dir := t.TempDir()
	g := installGate(t)
	var watermarks recorder
	s := openHooked(t, dir, store.Hooks{OnDelivered: watermarks.add})
	a, _ := s.RouteID("a")
	b, _ := s.RouteID("b")

	// DATA 1 and 2 with results between and after them, all in one segment. A result carries
	// no seq and is no link in the PrevSeq chain: DATA 2 follows DATA 1 across result 7, and
	// a result with a (stray) PrevSeq is not refused as a gap.
	d2 := frame("d", 2, 2, a, b)
	d2.PrevSeq = 1
	stray := result("d", 8, 0, a, b)
	stray.PrevSeq = 77
	appendTogether(t, s, g, frame("d", 1, 1, a, b), result("d", 7, 1, a, b), d2, stray,
		result("r", 9, 0, a)) // a device that never sent DATA
	checkSeqs(t, s, "d", 2, 0)
	checkSeqs(t, s, "r", 0, 0)
	if got := pendingResults(t, s, a); len(got) != 3 || got[7] != 1 || got[8] != 0 || got[9] != 0 {
		t.Fatalf("results pending on a = %v, want 7:1 8:0 9:0", got)
	}

	// Delivering the DATA records on both routes moves the watermark to 2 although the results
	// are not delivered yet.
	for _, rt := range []uint16{a, b} {
		var refs []store.Ref
		err := s.Pending(rt, 0, func(seg *store.Segment, pos []uint32) bool {
			for _, p := range pos {
				if i, _, _ := seg.Locate(p); !seg.Frames[i].Result {
					refs = append(refs, store.Ref{Seg: seg.ID, Pos: p})
				}
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(refs) != 3 {
			t.Fatalf("route %d: %d DATA records pending, want 3", rt, len(refs))
		}
		s.MarkDelivered(rt, refs)
	}
	checkSeqs(t, s, "d", 2, 2)
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if w := watermarks.last("d"); w != 2 {
			return fmt.Errorf("OnDelivered(d) = %d, want 2", w)
		}
		return nil
	})
	if w := watermarks.last("r"); w != 0 {
		t.Errorf("OnDelivered(r) = %d for a device with only results", w)
	}
	st := s.Stats()
	if st.SegmentsLive != 1 {
		t.Fatalf("SegmentsLive = %d, want 1 (results undelivered)", st.SegmentsLive)
	}
	if st.CheckpointKeys != 1 { // the gate frame's (it has no routes); none from results
		t.Fatalf("CheckpointKeys = %d, want 1", st.CheckpointKeys)
	}
	mustClose(t, s)

	// After a restart: the results are still pending on both routes, the device's seqs are as
	// before (the watermark recomputed from the live segment ignores the results).
	s = open(t, dir)
	checkSeqs(t, s, "d", 2, 2)
	checkSeqs(t, s, "r", 0, 0)
	if got := pendingResults(t, s, a); len(got) != 3 {
		t.Fatalf("results pending on a after reopen = %v, want 3", got)
	}
	if got := pendingResults(t, s, b); len(got) != 2 || got[7] != 1 || got[8] != 0 {
		t.Fatalf("results pending on b after reopen = %v, want 7:1 8:0", got)
	}
	s.MarkDelivered(a, pendingRefs(t, s, a))
	mustClose(t, s)

	// Route a is done (also after a restart); the segment waits for b.
	s = open(t, dir)
	if refs := pendingRefs(t, s, a); len(refs) != 0 {
		t.Fatalf("Pending(a) after reopen = %v, want none", refs)
	}
	if n := s.Stats().SegmentsLive; n != 1 {
		t.Fatalf("SegmentsLive = %d, want 1 (route b has results pending)", n)
	}
	s.MarkDelivered(b, pendingRefs(t, s, b))
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := s.Stats().SegmentsLive; n != 0 {
			return fmt.Errorf("SegmentsLive = %d, want 0", n)
		}
		return nil
	})
	checkSeqs(t, s, "d", 2, 2)
	checkSeqs(t, s, "r", 0, 0)
	mustClose(t, s)

	if n := segmentKeys(t, dir); n != 0 {
		t.Fatalf("%d segment and bitmap keys after retirement, want 0", n)
	}
	// The retirement checkpointed d's seq 2 (its highest seq left with the segment); r got none.
	s = open(t, dir)
	defer mustClose(t, s)
	checkSeqs(t, s, "d", 2, 2)
	checkSeqs(t, s, "r", 0, 0)
	if st := s.Stats(); st.Devices != 2 { // d and the gate
		t.Errorf("Devices = %d, want 2 (a device with only results has no seq state)", st.Devices)
	}
}

// A result no route takes is not stored and leaves no trace: no segment, no checkpoint, no seq.
// A segment holding only results retires without a checkpoint.
func TestResultWithoutRoutes(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	a, _ := s.RouteID("a")
	appendWait(t, s, result("x", 1, 0))
	appendWait(t, s, result("y", 2, 1, a))
	st := s.Stats()
	if st.SegmentsWritten != 1 || st.CheckpointKeys != 0 {
		t.Fatalf("SegmentsWritten, CheckpointKeys = %d, %d; want 1, 0", st.SegmentsWritten, st.CheckpointKeys)
	}
	s.MarkDelivered(a, pendingRefs(t, s, a))
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := s.Stats().SegmentsLive; n != 0 {
			return fmt.Errorf("SegmentsLive = %d, want 0", n)
		}
		return nil
	})
	if n := s.Stats().CheckpointKeys; n != 0 {
		t.Errorf("CheckpointKeys = %d after retiring a segment of results, want 0", n)
	}
	mustClose(t, s)

	s = open(t, dir)
	defer mustClose(t, s)
	checkSeqs(t, s, "x", 0, 0)
	checkSeqs(t, s, "y", 0, 0)
	if st := s.Stats(); st.Devices != 0 || st.SegmentsLive != 0 {
		t.Errorf("Devices, SegmentsLive = %d, %d after reopen; want 0, 0", st.Devices, st.SegmentsLive)
	}
}
