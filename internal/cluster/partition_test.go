package cluster

import (
	"reflect"
	"testing"
)

// A run's cursor record: the floor below the first message not done by every route, the routes
// ahead of it (done up to their first undone message, or up to what was fetched), a route ahead
// when the run started kept ahead until the run passes it.
func TestPartitionCursorRecord(t *testing.T) {
	q := &Queues{}
	msg := func(seq uint64, undone ...uint16) *pmsg {
		pm := &pmsg{seq: seq, nrec: 1}
		for _, r := range undone {
			pm.routes = append(pm.routes, rtrack{route: r, left: 1, done: make([]uint64, 1)})
			pm.left++
		}
		return pm
	}
	f := func(loaded cursorRecord, fetched uint64, seen []uint16, window []*pmsg, want cursorRecord) {
		t.Helper()
		run := &partRun{loaded: loaded, fetched: fetched, window: window, seen: make(map[uint16]bool)}
		for _, r := range seen {
			run.seen[r] = true
		}
		if got := q.recordLocked(run); !reflect.DeepEqual(got, want) {
			t.Errorf("record(loaded %+v, fetched %d, seen %v) = %+v, want %+v", loaded, fetched, seen, got, want)
		}
	}
	// Nothing out: every route at what was fetched.
	f(cursorRecord{}, 9, []uint16{1, 2}, nil, cursorRecord{Floor: 9, Fetched: 9})
	// Route 1 holds the floor at 11; route 2 is done up to 15, route 3 with everything fetched.
	f(cursorRecord{Floor: 10, Routes: map[uint16]uint64{2: 15}}, 20, []uint16{1, 2, 3},
		[]*pmsg{msg(12, 1), msg(14), msg(16, 2)},
		cursorRecord{Floor: 11, Routes: map[uint16]uint64{2: 15, 3: 20}, Fetched: 20})
	// Done messages at the front are trimmed: the floor is the first message not done.
	f(cursorRecord{}, 30, []uint16{1}, []*pmsg{msg(21), msg(25, 1)}, cursorRecord{Floor: 24, Fetched: 30})
	// A route ahead of where the run is now (loaded ahead, not fetched up to yet) stays ahead,
	// and so does the previous owner's fetched mark.
	f(cursorRecord{Floor: 5, Routes: map[uint16]uint64{4: 40}, Fetched: 45}, 8, nil, nil,
		cursorRecord{Floor: 8, Routes: map[uint16]uint64{4: 40}, Fetched: 45})
}
