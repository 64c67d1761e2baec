package tasks_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/store"
	"github.com/fleetrelay/fleetrelay/internal/tasks"
)

// writes is the real store, recording the size of each task transaction and any error of one.
type writes struct {
	*store.Store
	mu   sync.Mutex
	ops  []int
	errs []error
}

func (w *writes) WriteTasks(ops []store.RegistryOp) error {
	err := w.Store.WriteTasks(ops)
	w.mu.Lock()
	w.ops = append(w.ops, len(ops))
	if err != nil {
		w.errs = append(w.errs, err)
	}
	w.mu.Unlock()
	return err
}

// openWith opens the store in dir and a manager over it with opts (Backend set here); closing
// them is registered, and safe to do earlier by the returned func.
func openWith(t testing.TB, dir string, opts tasks.Options) (*tasks.Manager, *writes, func()) {
	t.Helper()
	st, err := store.Open(context.Background(), store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	w := &writes{Store: st}
	opts.Backend = w
	m, err := tasks.Open(context.Background(), opts)
	if err != nil {
		_ = st.Close()
		t.Fatal(err)
	}
	var once sync.Once
	closeAll := func() {
		once.Do(func() {
			m.Close()
			if err := st.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(closeAll)
	return m, w, closeAll
}

// stored counts the task key space's keys by kind ("task", "last").
func stored(t *testing.T, st *store.Store) map[string]int {
	t.Helper()
	n := map[string]int{}
	if err := st.LoadTasks(func(k, _ []byte) error {
		n[string(k[:strings.IndexByte(string(k), '/')])]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// gather returns the manager's metrics as name{labels} → value.
func gather(t *testing.T, m *tasks.Manager) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	m.RegisterMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range mt.GetLabel() {
				name += fmt.Sprintf("{%s=%s}", l.GetName(), l.GetValue())
			}
			if mt.GetGauge() != nil {
				got[name] = mt.GetGauge().GetValue()
			} else {
				got[name] = mt.GetCounter().GetValue()
			}
		}
	}
	return got
}

// Finished tasks (succeeded, failed, expired) whose DoneAt is retention ago or more are deleted
// by the writer's tick, from memory (Get answers not found, List skips them) and from the
// store (a reopened manager does not have them); unfinished ones and recently finished ones
// stay. A device whose every task was deleted goes on from its last id, also after a restart.
// The metrics count the tasks held by state and those deleted.
func TestRetentionPrunesFinishedTasks(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := &clock{now: t0}
	opts := tasks.Options{Now: c.Now, Tick: time.Millisecond, Retention: time.Hour}
	m, w, closeAll := openWith(t, dir, opts)
	ctx := context.Background()
	create := func(m *tasks.Manager, dev string, ttl time.Duration) uint64 {
		t.Helper()
		tk, err := m.Create(ctx, dev, []byte(`{"op":"x"}`), ttl)
		if err != nil {
			t.Fatal(err)
		}
		return tk.ID
	}
	// A: 1 and 3 succeeded, 2 failed, 6 expired, all at t0; 4 sent, unfinished; 5 succeeded
	// 50 minutes later. B: 1..3 succeeded at t0. The retention is 1h.
	for range 5 {
		create(m, "A", 2*time.Hour)
	}
	for range 3 {
		create(m, "B", 2*time.Hour)
	}
	due(m, "A", false)
	due(m, "B", false)
	m.Result("A", 1, 0, []byte(`{}`))
	m.Result("A", 2, 3, []byte(`{}`))
	for id := range uint64(3) {
		m.Result("B", id+1, 0, []byte(`{}`))
	}
	// Task 6 of A expires at t0, by the writer's tick.
	c.add(-time.Hour)
	if id := create(m, "A", time.Hour); id != 6 {
		t.Fatalf("task = %d, want 6", id)
	}
	c.add(time.Hour)
	m.Result("A", 3, 0, []byte(`{}`))
	checkfor.Check(t, 10*time.Second, time.Millisecond, func() error {
		if tk, _ := m.Get("A", 6); tk.State != tasks.Expired {
			return fmt.Errorf("task 6 of A = %s, want expired by the tick", tk.State)
		}
		return nil
	})
	c.add(50 * time.Minute)
	m.Result("A", 5, 0, []byte(`{}`)) // finished at t0+50m: recent at t0+61m
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, w.Store); got["task"] != 9 || got["last"] != 0 {
		t.Fatalf("store holds %v before the retention passed, want 9 tasks", got)
	}
	if got := gather(t, m); got["fleetrelay_tasks{state=succeeded}"] != 6 || got["fleetrelay_tasks{state=expired}"] != 1 ||
		got["fleetrelay_tasks_pruned_total"] != 0 {
		t.Errorf("metrics before the retention passed = %v", got)
	}

	c.add(11 * time.Minute) // t0+61m
	checkfor.Check(t, 10*time.Second, time.Millisecond, func() error {
		if s := m.Stats(); s.Pruned != 7 {
			return fmt.Errorf("pruned %d tasks, want 7", s.Pruned)
		}
		return nil
	})
	check := func(m *tasks.Manager, when string) {
		t.Helper()
		for _, c := range []struct {
			dev  string
			id   uint64
			want tasks.State // "": deleted
		}{{"A", 1, ""}, {"A", 2, ""}, {"A", 3, ""}, {"A", 4, tasks.Sent}, {"A", 5, tasks.Succeeded}, {"A", 6, ""},
			{"B", 1, ""}, {"B", 2, ""}, {"B", 3, ""}} {
			tk, ok := m.Get(c.dev, c.id)
			if ok != (c.want != "") || tk.State != c.want {
				t.Errorf("%s: Get(%s, %d) = %s, %v; want %q", when, c.dev, c.id, tk.State, ok, c.want)
			}
		}
		if list, more := m.List("A", 0, 10); len(list) != 2 || more || list[0].ID != 4 || list[1].ID != 5 {
			t.Errorf("%s: List(A) = %+v (more %v), want tasks 4 and 5", when, list, more)
		}
		if list, more := m.List("B", 0, 10); len(list) != 0 || more {
			t.Errorf("%s: List(B) = %+v (more %v), want none", when, list, more)
		}
		if s := m.Stats(); s.Queued != 0 || s.Sent != 1 || s.Succeeded != 1 || s.Failed != 0 || s.Expired != 0 {
			t.Errorf("%s: Stats = %+v, want 1 sent and 1 succeeded held", when, s)
		}
	}
	check(m, "after the tick")
	got := gather(t, m)
	for name, want := range map[string]float64{
		"fleetrelay_tasks{state=queued}": 0, "fleetrelay_tasks{state=sent}": 1, "fleetrelay_tasks{state=succeeded}": 1,
		"fleetrelay_tasks{state=failed}": 0, "fleetrelay_tasks{state=expired}": 0, "fleetrelay_tasks_pruned_total": 7,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("metric %s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	// B's highest task (3) was deleted: its last id is stored; A's highest (6) too.
	if got := stored(t, w.Store); got["task"] != 2 || got["last"] != 2 {
		t.Errorf("store holds %v after the prune, want 2 tasks and 2 last ids", got)
	}
	closeAll()

	m2, w2, closeAll2 := openWith(t, dir, opts)
	check(m2, "after a restart")
	if id := create(m2, "b", time.Hour); id != 4 {
		t.Errorf("B's next task after a restart = %d, want 4", id)
	}
	if id := create(m2, "A", time.Hour); id != 7 {
		t.Errorf("A's next task after a restart = %d, want 7", id)
	}
	// B's task 4 finishes and is deleted in turn: B has no task again, twice over a restart.
	due(m2, "B", false)
	m2.Result("B", 4, 0, nil)
	c.add(2 * time.Hour)
	checkfor.Check(t, 10*time.Second, time.Millisecond, func() error {
		if _, ok := m2.Get("B", 4); ok {
			return fmt.Errorf("task 4 of B still held")
		}
		return nil
	})
	if len(w2.errs) > 0 {
		t.Errorf("task writes failed: %v", w2.errs)
	}
	closeAll2()
	m3, _, _ := openWith(t, dir, opts)
	if id := create(m3, "B", time.Hour); id != 5 {
		t.Errorf("B's next task after its every task was pruned twice and a restart = %d, want 5", id)
	}
}

// A large prune: 20,000 finished tasks of 20 devices, each with a payload of some size, are
// written (their final states) and deleted in batches that each fit one store transaction
// (Badger's limit for the store's memtable is ≈157KB), and none is left, in memory or on disk.
func TestRetentionLargePrune(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 tasks")
	}
	const devices, per = 20, 1000
	dir := t.TempDir()
	c := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	opts := tasks.Options{Now: c.Now, Tick: time.Hour, Retention: time.Hour}
	m, w, closeAll := openWith(t, dir, opts)
	ctx := context.Background()
	payload := []byte(`{"op":"set","value":"` + strings.Repeat("v", 200) + `"}`)
	for d := range devices {
		for range per {
			if _, err := m.Create(ctx, fmt.Sprint("dev-", d), payload, time.Hour); err != nil {
				t.Fatal(err)
			}
		}
	}
	for d := range devices {
		dev := fmt.Sprint("DEV-", d)
		due(m, dev, false)
		for id := range uint64(per) {
			m.Result(dev, id+1, 0, []byte(`{"done":true}`))
		}
	}
	// The 20,000 final states are written too, in batches of their own.
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	closeAll()

	opts.Tick = time.Millisecond
	m, w, closeAll = openWith(t, dir, opts)
	if s := m.Stats(); s.Succeeded != devices*per {
		t.Fatalf("Stats after reopening = %+v, want %d succeeded", s, devices*per)
	}
	c.add(time.Hour)
	checkfor.Check(t, time.Minute, 10*time.Millisecond, func() error {
		if s := m.Stats(); s.Pruned != devices*per || s.Succeeded != 0 {
			return fmt.Errorf("Stats = %+v, want all %d pruned", s, devices*per)
		}
		return nil
	})
	w.mu.Lock()
	calls, errs := w.ops, w.errs
	w.mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("task writes failed: %v", errs)
	}
	total := 0
	for _, n := range calls {
		if n > tasks.MaxBatch {
			t.Errorf("a transaction of %d writes, want at most %d", n, tasks.MaxBatch)
		}
		total += n
	}
	if want := devices*per + devices; total != want || len(calls) < 2 {
		t.Errorf("%d writes in %d transactions, want %d (every task, and each device's last id) in several", total, len(calls), want)
	}
	t.Logf("%d tasks deleted in %d transactions", devices*per, len(calls))
	if got := stored(t, w.Store); got["task"] != 0 || got["last"] != devices {
		t.Errorf("store holds %v, want no task and %d last ids", got, devices)
	}
	closeAll()
	m, _, _ = openWith(t, dir, opts)
	for d := range devices {
		if tk, err := m.Create(ctx, fmt.Sprint("DEV-", d), []byte(`{}`), time.Hour); err != nil || tk.ID != per+1 {
			t.Errorf("next task of DEV-%d = %d, %v; want %d", d, tk.ID, err, per+1)
		}
	}
}

// State changes of many tasks with payloads of some size at once are written in several
// transactions: one of 1,000 such tasks would exceed what Badger takes in one, and was retried
// for ever.
func TestFlushManyLargeTasks(t *testing.T) {
	c := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	m, w, _ := openWith(t, t.TempDir(), tasks.Options{Now: c.Now, Tick: time.Hour})
	ctx := context.Background()
	payload := []byte(`{"x":"` + strings.Repeat("a", 400) + `"}`)
	for range 2000 {
		if _, err := m.Create(ctx, "D", payload, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if got := due(m, "D", false); len(got) != 2000 {
		t.Fatalf("Due = %d tasks, want 2000", len(got))
	}
	if err := m.Flush(ctx); err != nil {
		t.Fatalf("Flush = %v, want every state written; store errors %v", err, w.errs)
	}
}

// BenchmarkRetentionMemory reports the heap that 100,000 finished tasks (100 devices, 1,000
// each, payloads of ≈50 bytes, results of ≈25) hold once loaded, and what the manager holds
// after they are pruned (the devices' last ids):
//
//	go test -run '^$' -bench RetentionMemory -benchtime 1x ./internal/tasks
func BenchmarkRetentionMemory(b *testing.B) {
	const devices, per = 100, 1000
	dir := b.TempDir()
	c := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	opts := tasks.Options{Now: c.Now, Tick: time.Hour, Retention: time.Hour}
	m, _, closeAll := openWith(b, dir, opts)
	ctx := context.Background()
	for d := range devices {
		dev := fmt.Sprint("DEV-", d)
		for range per {
			if _, err := m.Create(ctx, dev, []byte(`{"op":"setInterval","interval":60,"unit":"s"}`), time.Hour); err != nil {
				b.Fatal(err)
			}
		}
		due(m, dev, false)
		for id := range uint64(per) {
			m.Result(dev, id+1, 0, []byte(`{"ok":true,"interval":60}`))
		}
	}
	if err := m.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	closeAll()
	heap := func() float64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapAlloc)
	}
	// held opens the store and a manager over it, runs fn, closes both and returns the heap the
	// manager holds then (over the heap before): the store's own memory is not the tasks'.
	held := func(tick time.Duration, fn func(*tasks.Manager, *clock)) float64 {
		before := heap()
		st, err := store.Open(ctx, store.Options{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		c := &clock{now: c.Now()}
		m, err := tasks.Open(ctx, tasks.Options{Backend: st, Now: c.Now, Tick: tick, Retention: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		fn(m, c)
		m.Close()
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
		after := heap()
		runtime.KeepAlive(m)
		return (after - before) / (1 << 20)
	}
	for b.Loop() {
		loaded := held(time.Hour, func(m *tasks.Manager, _ *clock) {
			if s := m.Stats(); s.Succeeded != devices*per {
				b.Fatalf("Stats = %+v, want %d succeeded", s, devices*per)
			}
		})
		pruned := held(time.Millisecond, func(m *tasks.Manager, c *clock) {
			c.add(time.Hour)
			checkfor.Check(b, 5*time.Minute, 10*time.Millisecond, func() error {
				if s := m.Stats(); s.Succeeded != 0 {
					return fmt.Errorf("%d tasks not pruned", s.Succeeded)
				}
				return nil
			})
		})
		b.ReportMetric(loaded, "MiB-loaded")
		b.ReportMetric(pruned, "MiB-after-prune")
	}
}
