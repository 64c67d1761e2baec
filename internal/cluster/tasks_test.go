package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
	"github.com/fleetrelay/fleetrelay/internal/tasks"
)

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

// told records the notifier's calls.
type told struct {
	mu   sync.Mutex
	devs []string
}

func (n *told) CommandsReady(dev string) {
	n.mu.Lock()
	n.devs = append(n.devs, dev)
	n.mu.Unlock()
}

func (n *told) has(dev string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Contains(n.devs, dev)
}

// taskNode is one relay node's tasks: a manager over the shared bucket, on its own connection.
type taskNode struct {
	conn  *cluster.Conn
	b     *cluster.TasksBackend
	m     *tasks.Manager
	clock *clock
	told  *told
	once  sync.Once
}

func openTaskNode(t testing.TB, ctx context.Context, url string, c *clock) *taskNode {
	t.Helper()
	conn, err := cluster.Connect(ctx, cluster.Options{URL: url, Replicas: 3, Prefix: "t", Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := conn.OpenTasks(ctx)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	m, err := tasks.Open(ctx, tasks.Options{Shared: b, Now: c.Now, Tick: 5 * time.Millisecond, Retention: 24 * time.Hour})
	if err != nil {
		b.Close()
		conn.Close()
		t.Fatal(err)
	}
	n := &taskNode{conn: conn, b: b, m: m, clock: c, told: &told{}}
	m.Attach(n.told)
	t.Cleanup(n.close)
	return n
}

// close closes the node as the relay does: the manager (its last flush), the bucket's watch,
// the connection.
func (n *taskNode) close() {
	n.once.Do(func() {
		n.m.Close()
		_ = n.b.Close()
		_ = n.conn.Close()
	})
}

// show is a task as the test compares it across nodes.
func show(tk tasks.Task, ok bool) string {
	if !ok {
		return "none"
	}
	s := fmt.Sprintf("%s/%d %s sends=%d", tk.Device, tk.ID, tk.State, tk.Sends)
	if tk.DoneAt != nil {
		s += " done=" + tk.DoneAt.Format(time.TimeOnly)
	}
	if tk.Code != nil {
		s += fmt.Sprintf(" code=%d %s", *tk.Code, tk.Result)
	}
	return s
}

// waitTask waits until node n shows task id of dev as want.
func waitTask(t *testing.T, n *taskNode, name, dev string, id uint64, want string) {
	t.Helper()
	checkfor.Check(t, 30*time.Second, 5*time.Millisecond, func() error {
		if got := show(n.m.Get(dev, id)); got != want {
			return fmt.Errorf("%s shows %s/%d as %q, want %q", name, dev, id, got, want)
		}
		return nil
	})
}

// TestTasksAcrossNodes: two managers as two relay nodes, each on its own connection to a real
// 3-node JetStream cluster. A task created on A shows in B's Get and List and B's notifier is
// told (B would write it to the device's connection); B sends it and its RESULT comes: A shows
// both. Concurrent creates for one device on A and B never give one id twice. An expiry both
// nodes reach has one DoneAt. A, deaf to the others, writes an expiry after B wrote the
// device's RESULT from before the ttl: B writes its version back, and nodes opened later end
// with the RESULT. A closed and reopened on a new connection, with a NATS node stopped, holds
// every task as before and creates the next id; the others hear it (a watch whose consumer was
// on the stopped node is renewed). Finished tasks past their retention are deleted by every
// node without a fight, a node opened afterwards loads none, and ids go on from the counter.
func TestTasksAcrossNodes(t *testing.T) {
	nc := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := openTaskNode(t, ctx, nc.NodeURL(0)+","+nc.URL(), &clock{now: t0})
	b := openTaskNode(t, ctx, nc.NodeURL(1)+","+nc.URL(), &clock{now: t0})

	// Created on A: on B at once, B's notifier told.
	tk, err := a.m.Create(ctx, "dev-1", []byte(`{"op":"reboot"}`), 10*time.Hour)
	if err != nil || tk.ID != 1 || tk.Device != "DEV-1" {
		t.Fatalf("Create on A = %+v, %v; want DEV-1/1", tk, err)
	}
	waitTask(t, b, "B", "dev-1", 1, "DEV-1/1 queued sends=0")
	if list, more := b.m.List("DEV-1", 0, 10); len(list) != 1 || more || string(list[0].Payload) != `{"op":"reboot"}` {
		t.Fatalf("B's List = %+v (more %v)", list, more)
	}
	eventually(t, "B's notifier told of DEV-1", func() bool { return b.told.has("DEV-1") })

	// B holds the device's connection: it sends the task, the device answers.
	var wrote []uint64
	b.m.Due("DEV-1", false, func(id uint64, _ []byte) { wrote = append(wrote, id) })
	if fmt.Sprint(wrote) != "[1]" {
		t.Fatalf("B's Due wrote %v, want task 1", wrote)
	}
	waitTask(t, a, "A", "DEV-1", 1, "DEV-1/1 sent sends=1")
	b.m.Result("DEV-1", 1, 0, []byte(`{"ok":true}`))
	done := "DEV-1/1 succeeded sends=1 done=" + t0.Format(time.TimeOnly) + ` code=0 {"ok":true}`
	waitTask(t, a, "A", "DEV-1", 1, done)
	if a.m.Unfinished() != 0 {
		t.Errorf("A has %d unfinished tasks, want 0", a.m.Unfinished())
	}

	// Creates for one device on both nodes at once: 2×20 distinct ids, the same tasks on both.
	const per = 20
	var wg sync.WaitGroup
	ids := make([][]uint64, 2)
	for i, n := range []*taskNode{a, b} {
		wg.Go(func() {
			for j := range per {
				tk, err := n.m.Create(ctx, "X", fmt.Appendf(nil, `{"node":%d,"j":%d}`, i, j), 10*time.Hour)
				if err != nil {
					t.Error(err)
					return
				}
				ids[i] = append(ids[i], tk.ID)
			}
		})
	}
	wg.Wait()
	all := slices.Concat(ids[0], ids[1])
	slices.Sort(all)
	if len(slices.Compact(slices.Clone(all))) != 2*per {
		t.Fatalf("ids given on A %v and B %v: one given twice", ids[0], ids[1])
	}
	for _, n := range []*taskNode{a, b} {
		eventually(t, "every task of X on both nodes", func() bool {
			list, _ := n.m.List("X", 0, 100)
			got := make([]uint64, len(list))
			for i, tk := range list {
				got[i] = tk.ID
			}
			return slices.Equal(got, all)
		})
	}

	// An expiry both nodes reach on their own has one DoneAt, the ttl's: created on A, expiring
	// at t0+1h, which both clocks pass.
	if _, err := a.m.Create(ctx, "dev-3", []byte(`{}`), time.Hour); err != nil {
		t.Fatal(err)
	}
	waitTask(t, b, "B", "DEV-3", 1, "DEV-3/1 queued sends=0")
	a.clock.add(2 * time.Hour)
	b.clock.add(3 * time.Hour)
	expired := "DEV-3/1 expired sends=0 done=" + t0.Add(time.Hour).Format(time.TimeOnly)
	waitTask(t, a, "A", "DEV-3", 1, expired)
	waitTask(t, b, "B", "DEV-3", 1, expired)

	// A, no longer hearing the others (its watch stopped), writes an expiry after B wrote the
	// device's RESULT from before the ttl: the bucket's last write is behind B's. B hears it
	// and writes its own again: a node opened afterwards ends with the RESULT.
	if tk, err = b.m.Create(ctx, "dev-2", []byte(`{}`), time.Hour); err != nil { // at t0+3h
		t.Fatal(err)
	}
	waitTask(t, a, "A", "DEV-2", tk.ID, "DEV-2/1 queued sends=0")
	b.m.Due("DEV-2", false, func(uint64, []byte) {})
	waitTask(t, a, "A", "DEV-2", 1, "DEV-2/1 sent sends=1")
	_ = a.b.Close()
	b.clock.add(30 * time.Minute)
	b.m.Result("DEV-2", 1, 1, []byte(`{"err":"busy"}`))
	if err := b.m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	a.clock.add(3 * time.Hour) // t0+5h: past the ttl (t0+4h)
	waitTask(t, a, "A", "DEV-2", 1, "DEV-2/1 expired sends=1 done="+t0.Add(4*time.Hour).Format(time.TimeOnly))
	if err := a.m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	failed := "DEV-2/1 failed sends=1 done=" + t0.Add(3*time.Hour+30*time.Minute).Format(time.TimeOnly) + ` code=1 {"err":"busy"}`
	waitTask(t, b, "B", "DEV-2", 1, failed)

	// Nodes opened now load the bucket: the same tasks as B. A, closed and reopened on a new
	// connection with a NATS node stopped, too.
	snapshot := func(n *taskNode) []string {
		var s []string
		for _, dev := range []string{"DEV-1", "X", "DEV-2", "DEV-3"} {
			list, _ := n.m.List(dev, 0, 100)
			for _, tk := range list {
				s = append(s, show(tk, true))
			}
		}
		return s
	}
	want := snapshot(b)
	if len(want) != 2*per+3 {
		t.Fatalf("B holds %d tasks, want %d", len(want), 2*per+3)
	}
	c := openTaskNode(t, ctx, nc.URL(), &clock{now: b.clock.Now()})
	waitTask(t, c, "C", "DEV-2", 1, failed) // B's write back may follow C's load
	if got := snapshot(c); !equal(got, want) {
		t.Fatalf("a node opened anew holds\n%v\nwant\n%v", got, want)
	}
	a.close()
	nc.Stop(2)
	a = openTaskNode(t, ctx, nc.NodeURL(0)+","+nc.URL(), a.clock)
	if got := snapshot(a); !equal(got, want) {
		t.Fatalf("A reopened holds\n%v\nwant\n%v", got, want)
	}
	if tk, err := a.m.Create(ctx, "DEV-1", []byte(`{}`), 10*time.Hour); err != nil || tk.ID != 2 {
		t.Fatalf("Create on the reopened A with a NATS node stopped = %+v, %v; want DEV-1/2", tk, err)
	}
	waitTask(t, b, "B", "DEV-1", 2, "DEV-1/2 queued sends=0")
	waitTask(t, c, "C", "DEV-1", 2, "DEV-1/2 queued sends=0")

	// Far past every ttl and the retention: every node expires and deletes every task, each on
	// its own tick (deleting what another deleted already changes nothing); a node opened
	// afterwards has none, and ids go on.
	for _, n := range []*taskNode{a, b, c} {
		n.clock.add(100 * time.Hour)
	}
	for name, n := range map[string]*taskNode{"A": a, "B": b, "C": c} {
		eventually(t, name+" deleted every task", func() bool {
			s := n.m.Stats()
			return s.Queued+s.Sent+s.Succeeded+s.Failed+s.Expired == 0
		})
		if got := snapshot(n); len(got) != 0 {
			t.Errorf("%s still lists %v", name, got)
		}
	}
	d := openTaskNode(t, ctx, nc.URL(), &clock{now: c.clock.Now()})
	if got := snapshot(d); len(got) != 0 {
		t.Errorf("a node opened after the deletion loads %v, want nothing", got)
	}
	if tk, err := d.m.Create(ctx, "x", []byte(`{}`), time.Hour); err != nil || tk.ID <= all[len(all)-1] {
		t.Errorf("next task of X after every one was deleted = %+v, %v; want an id above %d", tk, err, all[len(all)-1])
	}
}
