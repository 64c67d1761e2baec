package store_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// DiscardRoute marks everything route a holds done, in resident and cold segments, deletes its
// dead letters and replays with exact counts, leaves the other routes alone, discards frames
// committed for it later (reported to late), persists all of it across a restart, and lets the
// segments retire once the other routes are done; ReviveRoute ends the discard.
func TestDiscardRoute(t *testing.T) {
	dir := t.TempDir()
	opts := func(o *store.Options) { o.MaxResident = 50; o.MaxCommitFrames = 10 }
	s := open(t, dir, opts)
	a, _ := s.RouteID("a")
	b, _ := s.RouteID("b")
	c, _ := s.RouteID("c")
	seq := map[string]uint64{}
	backlog(t, s, a, b, 3, 500, 10, seq) // a holds 500 records, b is done with them
	for i := range 10 {
		dev := fmt.Sprintf("dev%d", i%3)
		seq[dev]++
		appendWait(t, s, frame(dev, seq[dev], 2, a, c)) // 20 more for a, and 20 for c
	}
	checkfor.Check(t, hang, 10*time.Millisecond, func() error {
		if st := s.Stats(); st.ColdSegments == 0 {
			return fmt.Errorf("no cold segments (%d resident records)", st.ResidentRecords)
		}
		return nil
	})
	// Dead letters: 2 records replaying, 3 in the list.
	x := frame("x", 1, 5)
	if err := s.DeadLetter(&store.DeadLetter{Route: a, Items: []store.DeadItem{{Frame: x, Record: 0}, {Frame: x, Record: 1}}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Replay(a); err != nil {
		t.Fatal(err)
	}
	if err := s.DeadLetter(&store.DeadLetter{Route: a, Items: []store.DeadItem{{Frame: x, Record: 2}, {Frame: x, Record: 3}, {Frame: x, Record: 4}}}, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ReplayRecords(a); err != nil || n != 2 {
		t.Fatalf("ReplayRecords = %d, %v; want 2", n, err)
	}
	if got := s.Backlog(a); got != 520 {
		t.Fatalf("Backlog(a) = %d, want 520", got)
	}

	var late atomic.Int64
	records, dead, err := s.DiscardRoute(a, func(n int) { late.Add(int64(n)) })
	if err != nil || records != 520 || dead != 5 {
		t.Fatalf("DiscardRoute = %d, %d, %v; want 520, 5, nil", records, dead, err)
	}
	if got := s.Backlog(a); got != 0 {
		t.Errorf("Backlog(a) = %d after the discard, want 0", got)
	}
	if got := s.DeadLetterCount(a); got != 0 {
		t.Errorf("DeadLetterCount(a) = %d after the discard, want 0", got)
	}
	if n, err := s.ReplayRecords(a); err != nil || n != 0 {
		t.Errorf("ReplayRecords(a) = %d, %v after the discard, want 0", n, err)
	}
	if got := s.Backlog(c); got != 20 {
		t.Errorf("Backlog(c) = %d, want 20: another route's records stay", got)
	}

	// Frames routed to a before it went commit now: discarded as they commit, and reported.
	appendWait(t, s, frame("late", 1, 3, a, c), frame("late", 2, 1, a))
	checkfor.Check(t, hang, time.Millisecond, func() error {
		if n := late.Load(); n != 4 {
			return fmt.Errorf("late discards reported: %d, want 4", n)
		}
		return nil
	})
	if got, gotC := s.Backlog(a), s.Backlog(c); got != 0 || gotC != 23 {
		t.Errorf("Backlog = %d (a), %d (c); want 0, 23", got, gotC)
	}
	for dev, last := range seq {
		if got := s.DeliveredSeq(dev); got >= last {
			t.Errorf("DeliveredSeq(%s) = %d, want below %d: route c still has its records", dev, got, last)
		}
	}
	mustClose(t, s) // the marks are persisted like MarkDelivered's

	s = open(t, dir, opts)
	defer func() { mustClose(t, s) }()
	if got, gotC := s.Backlog(a), s.Backlog(c); got != 0 || gotC != 23 {
		t.Fatalf("after reopen: Backlog = %d (a), %d (c); want 0, 23", got, gotC)
	}
	if got := s.DeadLetterCount(a); got != 0 {
		t.Errorf("after reopen: DeadLetterCount(a) = %d, want 0", got)
	}
	s.MarkDelivered(c, pendingRefs(t, s, c))
	checkfor.Check(t, hang, 10*time.Millisecond, func() error {
		if st := s.Stats(); st.SegmentsLive != 0 {
			return fmt.Errorf("%d segments live after route c delivered everything, want 0 (%d cold)", st.SegmentsLive, st.ColdSegments)
		}
		return nil
	})
	for dev, last := range seq {
		if got := s.DeliveredSeq(dev); got != last {
			t.Errorf("DeliveredSeq(%s) = %d, want %d", dev, got, last)
		}
	}

	// A discard lasts for the run it was made in, and ReviveRoute ends it sooner.
	late.Store(0)
	if _, _, err := s.DiscardRoute(a, func(n int) { late.Add(int64(n)) }); err != nil {
		t.Fatal(err)
	}
	s.ReviveRoute(a)
	appendWait(t, s, frame("new", 1, 2, a))
	if got := s.Backlog(a); got != 2 || late.Load() != 0 {
		t.Errorf("after ReviveRoute: Backlog(a) = %d, late discards %d; want 2, 0", got, late.Load())
	}
}
