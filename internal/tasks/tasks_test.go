package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fleetrelay/fleetrelay/internal/store"
	"github.com/fleetrelay/fleetrelay/internal/tasks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable clock, safe for concurrent use.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// notes records CommandsReady calls.
type notes struct {
	mu   sync.Mutex
	devs []string
}

func (n *notes) CommandsReady(dev string) {
	n.mu.Lock()
	n.devs = append(n.devs, dev)
	n.mu.Unlock()
}

// open opens the store in dir and a manager over it; closing them is registered.
func open(t *testing.T, dir string, c *clock) (*tasks.Manager, *store.Store) {
	t.Helper()
	st, err := store.Open(context.Background(), store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	m, err := tasks.Open(context.Background(), tasks.Options{Backend: st, Now: c.Now, Tick: time.Hour})
	if err != nil {
		_ = st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Close()
		_ = st.Close()
	})
	return m, st
}

// due collects what Due writes.
func due(m *tasks.Manager, dev string, resend bool) []string {
	var out []string
	m.Due(dev, resend, func(task uint64, payload []byte) { out = append(out, fmt.Sprintf("%d:%s", task, payload)) })
	return out
}

// A task's life through the manager and a real store: created queued (and the notifier told),
// sent by Due (again only with resend), completed by Result; a second Result changes nothing.
// After a reopen of the store every task comes back as it was flushed, and ids go on from the
// highest one, per device, case-insensitively.
func TestLifecycleAndRestart(t *testing.T) {
	dir := t.TempDir()
	c := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	m, st := open(t, dir, c)
	var n notes
	m.Attach(&n)
	ctx := context.Background()
	for i := range 3 {
		tk, err := m.Create(ctx, "dev-a", fmt.Appendf(nil, `{"i":%d}`, i), time.Hour)
		if err != nil || tk.ID != uint64(i+1) || tk.State != tasks.Queued || tk.Device != "DEV-A" {
			t.Fatalf("Create %d = %+v, %v; want id %d, queued, of DEV-A", i, tk, err, i+1)
		}
	}
	if tk, err := m.Create(ctx, "DEV-B", []byte(`{}`), 0); err != nil || tk.ID != 1 || !tk.ExpiresAt.Equal(c.Now().Add(24*time.Hour)) {
		t.Fatalf("Create on DEV-B = %+v, %v; want id 1 with the default ttl", tk, err)
	}
	if fmt.Sprint(n.devs) != "[DEV-A DEV-A DEV-A DEV-B]" {
		t.Errorf("notified %v", n.devs)
	}
	if got := due(m, "Dev-A", false); fmt.Sprint(got) != `[1:{"i":0} 2:{"i":1} 3:{"i":2}]` {
		t.Errorf("Due = %v", got)
	}
	if got := due(m, "DEV-A", false); len(got) != 0 {
		t.Errorf("Due again without resend = %v, want nothing", got)
	}
	if got := due(m, "DEV-A", true); len(got) != 3 {
		t.Errorf("Due with resend = %v, want the 3 sent tasks", got)
	}
	m.Result("dev-a", 2, 0, []byte(`{"ok":true}`))
	m.Result("DEV-A", 3, 1, []byte(`{"err":"busy"}`))
	m.Result("DEV-A", 3, 0, []byte(`{}`)) // final already
	m.Result("DEV-A", 9, 0, []byte(`{}`)) // unknown
	if got := due(m, "DEV-A", true); fmt.Sprint(got) != `[1:{"i":0}]` {
		t.Errorf("Due with resend after the results = %v, want task 1 only", got)
	}
	want := map[uint64]string{1: "sent 3 <nil> ", 2: `succeeded 2 0 {"ok":true}`, 3: `failed 2 1 {"err":"busy"}`}
	check := func(m *tasks.Manager, when string) {
		t.Helper()
		list, more := m.List("dev-a", 0, 10)
		if len(list) != 3 || more {
			t.Fatalf("%s: List = %d tasks (more %v), want 3", when, len(list), more)
		}
		for _, tk := range list {
			code := "<nil>"
			if tk.Code != nil {
				code = fmt.Sprint(*tk.Code)
			}
			got := fmt.Sprintf("%s %d %s %s", tk.State, tk.Sends, code, tk.Result)
			if got != want[tk.ID] {
				t.Errorf("%s: task %d = %q, want %q", when, tk.ID, got, want[tk.ID])
			}
		}
		if page, more := m.List("DEV-A", 1, 1); len(page) != 1 || page[0].ID != 2 || !more {
			t.Errorf("%s: List after 1, limit 1 = %+v (more %v), want task 2 and more", when, page, more)
		}
	}
	check(m, "before the restart")
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	m2, _ := open(t, dir, c)
	check(m2, "after the restart")
	if tk, err := m2.Create(ctx, "DEV-A", []byte(`{}`), time.Minute); err != nil || tk.ID != 4 {
		t.Errorf("Create after the restart = %+v, %v; want id 4", tk, err)
	}
	if tk, ok := m2.Get("dev-b", 1); !ok || tk.State != tasks.Queued {
		t.Errorf("DEV-B task 1 after the restart = %+v, %v; want queued", tk, ok)
	}
}

// A task past its ttl expires: Due does not send it, the writer's tick expires it, and a late
// RESULT does not revive it. Create refuses a payload that is not an object and a ttl out of
// range, and stores nothing for them.
func TestExpiryAndInvalid(t *testing.T) {
	c := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	st, err := store.Open(context.Background(), store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := tasks.Open(context.Background(), tasks.Options{Backend: st, Now: c.Now, Tick: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	for _, ttl := range []time.Duration{time.Second, time.Second, time.Hour} {
		if _, err := m.Create(ctx, "D", []byte(`{}`), ttl); err != nil {
			t.Fatal(err)
		}
	}
	if got := due(m, "D", false); len(got) != 3 {
		t.Fatalf("Due = %v, want 3 tasks", got)
	}
	c.add(2 * time.Second)
	if got := due(m, "D", true); fmt.Sprint(got) != "[3:{}]" {
		t.Errorf("Due with resend after 2s = %v, want task 3 only", got)
	}
	m.Result("D", 1, 0, []byte(`{}`))
	deadline := time.Now().Add(10 * time.Second)
	for m.Unfinished() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for id, want := range map[uint64]tasks.State{1: tasks.Expired, 2: tasks.Expired, 3: tasks.Sent} {
		if tk, _ := m.Get("D", id); tk.State != want || (want == tasks.Expired && (tk.DoneAt == nil || tk.Code != nil)) {
			t.Errorf("task %d = %+v, want %s", id, tk, want)
		}
	}
	for _, c := range []struct {
		payload string
		ttl     time.Duration
	}{{`[1]`, time.Hour}, {`null`, time.Hour}, {`{"a":1} {}`, time.Hour}, {`{}`, -time.Second}, {`{}`, 31 * 24 * time.Hour}} {
		if _, err := m.Create(ctx, "D", []byte(c.payload), c.ttl); !errors.Is(err, tasks.ErrInvalid) {
			t.Errorf("Create(%s, %s) = %v, want ErrInvalid", c.payload, c.ttl, err)
		}
	}
	if list, _ := m.List("D", 0, 100); len(list) != 3 {
		t.Errorf("D has %d tasks, want 3", len(list))
	}
}

// A payload over MaxPayload is refused; a RESULT's data over MaxResult completes its task with
// a note of its size instead of the data, so that the task is written (and read back) whole.
func TestBounds(t *testing.T) {
	c := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	dir := t.TempDir()
	m, st := open(t, dir, c)
	ctx := context.Background()
	big := []byte(`{"a":"` + strings.Repeat("x", tasks.MaxPayload) + `"}`)
	if _, err := m.Create(ctx, "D", big, time.Hour); !errors.Is(err, tasks.ErrInvalid) {
		t.Fatalf("Create of %d bytes = %v, want ErrInvalid", len(big), err)
	}
	fits := []byte(`{"a":"` + strings.Repeat("x", tasks.MaxPayload-8) + `"}`)
	if _, err := m.Create(ctx, "D", fits, time.Hour); err != nil {
		t.Fatalf("Create of %d bytes: %v", len(fits), err)
	}
	due(m, "D", false)
	result := []byte(`{"r":"` + strings.Repeat("y", 200<<10) + `"}`)
	m.Result("D", 1, 0, result)
	m.Close()
	_ = st.Close()
	m, _ = open(t, dir, c)
	tk, ok := m.Get("D", 1)
	if !ok || tk.State != tasks.Succeeded || string(tk.Result) != fmt.Sprintf(`{"truncated":true,"bytes":%d}`, len(result)) {
		t.Fatalf("task after a %d-byte result and a reopen: %v %s %.60s", len(result), ok, tk.State, tk.Result)
	}
}
