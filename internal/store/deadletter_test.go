package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

func deadLetters(t *testing.T, s *store.Store, route uint16, replaying bool) []*store.DeadLetter {
	t.Helper()
	var out []*store.DeadLetter
	scan := s.DeadLetters
	if replaying {
		scan = s.Replaying
	}
	if err := scan(route, func(d *store.DeadLetter) bool { out = append(out, d); return true }); err != nil {
		t.Fatalf("scan dead letters: %v", err)
	}
	return out
}

// describe renders a dead letter's records as device/seq/record=body.
func describe(d *store.DeadLetter) string {
	s := fmt.Sprintf("status=%d attempts=%d at=%d err=%q:", d.Status, d.Attempts, d.At, d.Error)
	for _, it := range d.Items {
		s += fmt.Sprintf(" %s/%d/%d=%s", it.Frame.Device, it.Frame.Seq, it.Record, it.Frame.Records[it.Record])
	}
	return s
}

func TestDeadLetterReplayLifecycle(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	a, b := frame("a", 1, 3, 1, 2), frame("b", 7, 1, 1)
	appendWait(t, s, a, b)
	refs := pendingRefs(t, s, 1)
	if len(refs) != 4 {
		t.Fatalf("pending refs %v, want 4", refs)
	}
	if b1, b2 := s.Backlog(1), s.Backlog(2); b1 != 4 || b2 != 3 {
		t.Fatalf("Backlog = %d, %d; want 4 for route 1, 3 for route 2", b1, b2)
	}
	// Route 1 gives up on a's records 1 and 2 and on b's record.
	d := &store.DeadLetter{Route: 1, Status: 503, Error: "gave up", Attempts: 4, At: 1700000000000,
		Items: []store.DeadItem{{Frame: a, Record: 1}, {Frame: a, Record: 2}, {Frame: b, Record: 0}},
		Refs:  []store.Ref{refs[1], refs[2], refs[3]}}
	if err := s.DeadLetter(d, nil); err != nil {
		t.Fatal(err)
	}
	want := `status=503 attempts=4 at=1700000000000 err="gave up": a/1/1={"dev":"a","seq":1,"i":1} a/1/2={"dev":"a","seq":1,"i":2} b/7/0={"dev":"b","seq":7,"i":0}`
	if got := pendingRefs(t, s, 1); len(got) != 1 || got[0] != refs[0] {
		t.Fatalf("pending after dead-lettering = %v, want only %v", got, refs[0])
	}
	mustClose(t, s)

	s = open(t, dir)
	if got := pendingRefs(t, s, 1); len(got) != 1 {
		t.Fatalf("pending after reopen = %v, want 1 ref", got)
	}
	if b1 := s.Backlog(1); b1 != 1 {
		t.Fatalf("Backlog(1) after dead-lettering 3 of 4 = %d, want 1", b1)
	}
	dl := deadLetters(t, s, 1, false)
	if len(dl) != 1 || describe(dl[0]) != want {
		t.Fatalf("dead letters after reopen = %d, first %q; want 1, %q", len(dl), describe(dl[0]), want)
	}
	if other := deadLetters(t, s, 2, false); len(other) != 0 {
		t.Fatalf("route 2 has %d dead letters, want 0", len(other))
	}
	letters, records, err := s.Replay(1)
	if err != nil || letters != 1 || records != 3 {
		t.Fatalf("Replay = %d, %d, %v; want 1, 3, nil", letters, records, err)
	}
	if letters, records, err := s.Replay(1); err != nil || letters != 0 || records != 0 {
		t.Fatalf("second Replay = %d, %d, %v; want nothing moved", letters, records, err)
	}
	if n := len(deadLetters(t, s, 1, false)); n != 0 {
		t.Fatalf("%d dead letters after replay, want 0", n)
	}
	mustClose(t, s)

	s = open(t, dir)
	rp := deadLetters(t, s, 1, true)
	if len(rp) != 1 || describe(rp[0]) != want {
		t.Fatalf("replaying after reopen = %d entries, want the dead letter", len(rp))
	}
	// The replay delivers a's records and gives up on b's again: b's goes back to the list
	// and the replay entry is deleted in the same write.
	again := &store.DeadLetter{Route: 1, Status: 500, Error: "again", Attempts: 2, At: 1700000001000,
		Items: []store.DeadItem{rp[0].Items[2]}}
	if err := s.DeadLetter(again, []uint64{rp[0].ID}); err != nil {
		t.Fatal(err)
	}
	if again.ID <= rp[0].ID {
		t.Errorf("new dead letter ID %d not above the replayed one's %d", again.ID, rp[0].ID)
	}
	mustClose(t, s)

	s = open(t, dir)
	defer mustClose(t, s)
	if n := len(deadLetters(t, s, 1, true)); n != 0 {
		t.Fatalf("%d replay entries left, want 0", n)
	}
	dl = deadLetters(t, s, 1, false)
	if len(dl) != 1 || describe(dl[0]) != `status=500 attempts=2 at=1700000001000 err="again": b/7/0={"dev":"b","seq":7,"i":0}` {
		t.Fatalf("dead letters = %d, want b's record again", len(dl))
	}
	if _, _, err := s.Replay(1); err != nil {
		t.Fatal(err)
	}
	rp = deadLetters(t, s, 1, true)
	if err := s.ReplayDone(1, []uint64{rp[0].ID}); err != nil {
		t.Fatal(err)
	}
	if n := len(deadLetters(t, s, 1, true)) + len(deadLetters(t, s, 1, false)); n != 0 {
		t.Fatalf("%d entries left after ReplayDone, want 0", n)
	}
}

// A dead letter written just before a crash, before its records were marked done, is
// repaired at Open: its records are not delivered again.
func TestDeadLetterMarksRepairedAtOpen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	f := frame("a", 1, 2, 1)
	appendWait(t, s, f)
	refs := pendingRefs(t, s, 1)
	d := &store.DeadLetter{Route: 1, Error: "retention exceeded", Items: []store.DeadItem{{f, 0}, {f, 1}}, Refs: refs}
	if err := store.WriteDeadLetterOnly(s, d); err != nil {
		t.Fatal(err)
	}
	if n := len(pendingRefs(t, s, 1)); n != 2 {
		t.Fatalf("%d pending before reopen, want 2 (not marked)", n)
	}
	mustClose(t, s)
	s = open(t, dir)
	if got := pendingRefs(t, s, 1); len(got) != 0 {
		t.Fatalf("pending after reopen = %v, want none: the dead letter's refs are done", got)
	}
	mustClose(t, s)
	if n := segmentKeys(t, dir); n != 0 {
		t.Fatalf("%d segment keys left, want the segment retired", n)
	}
}

func FuzzDecodeDeadLetter(f *testing.F) {
	fr := frame("a", 3, 2, 1)
	f.Add(store.EncodeDeadLetter(&store.DeadLetter{Route: 1, Status: 503, Error: "x", Items: []store.DeadItem{{fr, 1}}, Refs: []store.Ref{{Seg: 1, Pos: 2}}}))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, v []byte) {
		d, err := store.DecodeDeadLetter(1, 1, v)
		if err == nil && d == nil {
			t.Fatal("nil dead letter without error")
		}
	})
}

// Purge deletes dead letters older than a time (or all), and the count follows every change,
// also across a reopen.
func TestDeadLetterPurgeAndCount(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	f := frame("a", 1, 3, 1)
	appendWait(t, s, f)
	refs := pendingRefs(t, s, 1)
	for i, at := range []int64{1000, 2000, 3000} {
		d := &store.DeadLetter{Route: 1, At: at, Items: []store.DeadItem{{Frame: f, Record: i}}, Refs: refs[i : i+1]}
		if err := s.DeadLetter(d, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.DeadLetterCount(1); n != 3 {
		t.Fatalf("count = %d, want 3", n)
	}
	letters, records, err := s.Purge(1, time.UnixMilli(2500))
	if err != nil || letters != 2 || records != 2 {
		t.Fatalf("Purge(before 2.5 s) = %d, %d, %v; want the two older ones", letters, records, err)
	}
	mustClose(t, s)
	s = open(t, dir)
	defer mustClose(t, s)
	if n := s.DeadLetterCount(1); n != 1 {
		t.Fatalf("count after reopen = %d, want 1", n)
	}
	if _, _, err := s.Replay(1); err != nil {
		t.Fatal(err)
	}
	if n := s.DeadLetterCount(1); n != 0 {
		t.Fatalf("count after replay = %d, want 0 (replays are not in the list)", n)
	}
	if letters, _, err := s.Purge(1, time.Time{}); err != nil || letters != 0 {
		t.Fatalf("Purge(all) after the replay = %d, %v; want nothing (replays are not purged)", letters, err)
	}
	if n := len(deadLetters(t, s, 1, true)); n != 1 {
		t.Fatalf("%d replay entries, want 1", n)
	}
}
