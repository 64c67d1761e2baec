package tasks

import (
	"fmt"
	"testing"
	"time"
)

// The order every node merges another node's version of a task by: along the task's life, the
// first final state reached, the latest send; and merging two versions in either order gives
// the same task, at least as far along as both.
func TestMergeOrder(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := t0.Add(d); return &v }
	code := func(c uint8) *uint8 { return &c }
	queued := Task{State: Queued}
	sent1 := Task{State: Sent, Sends: 1, SentAt: at(0)}
	sent2 := Task{State: Sent, Sends: 2, SentAt: at(time.Minute)}
	succeeded := Task{State: Succeeded, Sends: 1, SentAt: at(0), DoneAt: at(30 * time.Minute), Code: code(0), Result: []byte(`{}`)}
	expired := Task{State: Expired, Sends: 1, SentAt: at(0), DoneAt: at(time.Hour)}
	lateFailed := Task{State: Failed, Sends: 1, SentAt: at(0), DoneAt: at(2 * time.Hour), Code: code(1)}

	f := func(a, b Task, aheadWant, laterWant bool) {
		t.Helper()
		if got := ahead(&a, &b); got != aheadWant {
			t.Errorf("ahead(%s at %v, %s at %v) = %v, want %v", a.State, a.DoneAt, b.State, b.DoneAt, got, aheadWant)
		}
		if got := later(&a, &b); got != laterWant {
			t.Errorf("later(%d sends, %d sends) = %v, want %v", a.Sends, b.Sends, got, laterWant)
		}
	}
	f(sent1, queued, true, true)
	f(queued, sent1, false, false)
	f(sent2, sent1, false, true) // the same state: neither ahead
	f(succeeded, sent2, true, false)
	f(succeeded, expired, true, false)  // a RESULT before the ttl beats the expiry
	f(expired, lateFailed, true, false) // a RESULT after it loses
	f(expired, expired, false, false)

	// Merged in either order, two nodes end with the same task.
	versions := []Task{queued, sent1, sent2, succeeded, expired, lateFailed}
	for _, a := range versions {
		for _, b := range versions {
			ab, ba := merged(a, b), merged(b, a)
			if version(ab) != version(ba) {
				t.Errorf("merge(%s, %s) = %s, the other way %s", version(a), version(b), version(ab), version(ba))
			}
			if ahead(&a, &ab) || ahead(&b, &ab) || later(&a, &ab) || later(&b, &ab) {
				t.Errorf("merge(%s, %s) = %s, behind one of them", version(a), version(b), version(ab))
			}
		}
	}
}

// merged is t with in merged into it by a manager, as a node holding t hears in.
func merged(t, in Task) Task {
	m := &Manager{devices: map[string]*device{}, dirty: map[string]*Task{}, held: map[State]int{}}
	d := m.device("D")
	tt := t
	tt.Device, tt.ID = "D", 1
	m.insertLocked(d, &tt)
	in.Device, in.ID = "D", 1
	m.mergeLocked(d, &tt, &in)
	return tt
}

// version is what the merge decides of t: its state, sends, last send, end and code.
func version(t Task) string {
	s := fmt.Sprintf("%s sends=%d", t.State, t.Sends)
	if t.SentAt != nil {
		s += " sent=" + t.SentAt.Format(time.TimeOnly)
	}
	if t.DoneAt != nil {
		s += " done=" + t.DoneAt.Format(time.TimeOnly)
	}
	if t.Code != nil {
		s += fmt.Sprintf(" code=%d", *t.Code)
	}
	return s
}
