package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// ants' default pool, a package variable of a library gnet (netio, via the actors the
		// queues' tests run) uses, started at init.
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"))
}

// node is one relay's registry over the shared log, with what its watchers saw.
type node struct {
	conn *cluster.Conn
	b    *cluster.RegistryBackend
	reg  *registry.Registry

	mu   sync.Mutex
	seen []registry.Change
}

func openNode(t testing.TB, ctx context.Context, url string) *node {
	t.Helper()
	conn, err := cluster.Connect(ctx, cluster.Options{URL: url, Replicas: 3, Prefix: "t", Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := conn.OpenRegistry(ctx)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	reg, err := registry.Open(ctx, b)
	if err != nil {
		b.Close()
		conn.Close()
		t.Fatal(err)
	}
	n := &node{conn: conn, b: b, reg: reg}
	reg.Watch(func(c registry.Change) {
		n.mu.Lock()
		n.seen = append(n.seen, c)
		n.mu.Unlock()
	})
	reg.Follow()
	t.Cleanup(n.close)
	return n
}

func (n *node) close() {
	_ = n.b.Close()
	_ = n.conn.Close()
}

// changes returns what n's watchers saw, as "kind/id rev" or "kind/id deleted".
func (n *node) changes() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var s []string
	for _, c := range n.seen {
		switch {
		case c.Deleted:
			s = append(s, fmt.Sprintf("%s/%s deleted", c.Kind, c.ID))
		case c.Route != nil:
			s = append(s, fmt.Sprintf("%s/%s %d %s", c.Kind, c.ID, c.Route.Revision, c.Route.Spec.URL))
		default:
			s = append(s, fmt.Sprintf("%s/%s", c.Kind, c.ID))
		}
	}
	return s
}

// eventually waits until cond holds; the cluster's notification is asynchronous.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func route(name, url string) *registry.Route {
	r := &registry.Route{Spec: config.DefaultRoute()}
	r.Spec.Name, r.Spec.URL = name, url
	return r
}

func equal(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// TestRegistryAcrossNodes: three registries on one JetStream cluster, each over its own
// connection to a different NATS node. A write through any of them reaches the others' index and
// watchers in commit order and not back to its writer's watchers twice; a stale revision is
// refused whichever node wrote last; a reopened registry loads everything; with one NATS node
// stopped the registry still writes and follows.
func TestRegistryAcrossNodes(t *testing.T) {
	c := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a := openNode(t, ctx, c.NodeURL(0)+","+c.URL())
	b := openNode(t, ctx, c.NodeURL(1)+","+c.URL())
	d := openNode(t, ctx, c.NodeURL(2)+","+c.URL())

	if err := a.reg.Create(ctx, route("r1", "http://a/1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "r1 on b", func() bool { r, ok := b.reg.Route("r1"); return ok && r.Revision == 1 })
	upd := route("r1", "http://b/2")
	if err := b.reg.Update(ctx, upd, 1); err != nil {
		t.Fatal(err)
	}
	if upd.Revision != 2 {
		t.Fatalf("update: revision %d", upd.Revision)
	}
	// a has not necessarily taken b's update in yet: its stale revision must still lose.
	err := a.reg.Update(ctx, route("r1", "http://a/3"), 1)
	if !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("update at a stale revision through another node: %v, want ErrConflict", err)
	}
	if r, _ := a.reg.Route("r1"); r.Revision != 2 || r.Spec.URL != "http://b/2" {
		t.Fatalf("a after the conflict: revision %d, %s", r.Revision, r.Spec.URL)
	}
	// Writes of different resources through different nodes at once all land, each once.
	var wg sync.WaitGroup
	for i, n := range []*node{a, b, d} {
		wg.Go(func() {
			for j := range 5 {
				if err := n.reg.Create(ctx, route(fmt.Sprintf("n%d-%d", i, j), "http://x/")); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if err := d.reg.Delete(ctx, registry.Routes, "r1"); err != nil {
		t.Fatal(err)
	}
	want := []string{"routes/r1 1 http://a/1", "routes/r1 2 http://b/2"}
	for _, n := range []*node{a, b, d} {
		eventually(t, "every node has every write", func() bool {
			page, _ := n.reg.ListRoutes(registry.ListOptions{})
			_, r1 := n.reg.Route("r1")
			return len(page) == 15 && !r1
		})
	}
	// Every node's watchers saw every change once, in one order: the log's.
	ref := a.changes()
	if len(ref) != 18 || !equal(ref[:2], want) || ref[17] != "routes/r1 deleted" {
		t.Fatalf("a saw %d changes: %v", len(ref), ref)
	}
	for _, n := range []*node{b, d} {
		if got := n.changes(); !equal(got, ref) {
			t.Fatalf("watchers saw\n%v\nnot, as a's did,\n%v", got, ref)
		}
	}

	// A registry opened anew loads the log's state.
	e := openNode(t, ctx, c.URL())
	if page, _ := e.reg.ListRoutes(registry.ListOptions{}); len(page) != 15 {
		t.Fatalf("reopened: %d routes, want 15", len(page))
	}
	if _, ok := e.reg.Route("r1"); ok {
		t.Fatal("reopened: the deleted route is back")
	}

	// One NATS node stopped (not the one a, b and d connect to first, so it is the cluster that
	// is tested, not the client's failover — which d then needs): writes still commit and
	// reach every node.
	c.Stop(2)
	if err := d.reg.Create(ctx, route("after-stop", "http://d/")); err != nil {
		t.Fatal(err)
	}
	if err := a.reg.Update(ctx, route("n0-0", "http://a/after-stop"), 0); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{a, b, d, e} {
		eventually(t, "writes with a NATS node stopped reach every node", func() bool {
			r, ok := n.reg.Route("n0-0")
			_, ok2 := n.reg.Route("after-stop")
			return ok && ok2 && r.Spec.URL == "http://a/after-stop"
		})
	}
}

// TestRegistryRemoteBehindStatic: a route the local config file declares stays declared when
// another node stores one of the same name (its watchers hear nothing of it); once the config
// drops it, the stored one — as the other node last wrote it — comes back.
func TestRegistryRemoteBehindStatic(t *testing.T) {
	c := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := openNode(t, ctx, c.URL())
	b := openNode(t, ctx, c.URL())
	b.reg.SetStatic([]registry.Route{*route("s", "http://config/")}, nil)

	if err := a.reg.Create(ctx, route("s", "http://a/1")); err != nil {
		t.Fatal(err)
	}
	if err := a.reg.Update(ctx, route("s", "http://a/2"), 1); err != nil {
		t.Fatal(err)
	}
	if err := a.reg.Create(ctx, route("marker", "http://a/")); err != nil { // written after s: once b has it, b has s's writes
		t.Fatal(err)
	}
	eventually(t, "marker on b", func() bool { _, ok := b.reg.Route("marker"); return ok })
	if r, _ := b.reg.Route("s"); r.Source != registry.SourceConfig || r.Spec.URL != "http://config/" {
		t.Fatalf("b's s = %s from %s, want the config file's", r.Spec.URL, r.Source)
	}
	// (The first is SetStatic's own: the watchers were registered before it.)
	if got := b.changes(); !equal(got, []string{"routes/s 1 http://config/", "routes/marker 1 http://a/"}) {
		t.Fatalf("b's watchers saw %v, want nothing of a's s", got)
	}
	if err := b.reg.ReplaceStatic(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	if r, _ := b.reg.Route("s"); r.Source != registry.SourceAPI || r.Spec.URL != "http://a/2" || r.Revision != 2 {
		t.Fatalf("b's s after the config dropped it = %s rev %d from %s, want a's http://a/2 at 2", r.Spec.URL, r.Revision, r.Source)
	}
}
