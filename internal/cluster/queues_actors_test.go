package cluster_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/fields"
	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// nodeJournal is what a relay node's actors get in cluster mode: the ingest (cluster.Journal)
// and the queues, both over the node's connection.
type nodeJournal struct {
	*cluster.Journal
	*cluster.Queues
}

var _ actors.Journal = nodeJournal{}

// postDeliverer POSTs a batch to its URL as lines "device seq index", slowly.
type postDeliverer struct {
	client *http.Client
	delay  time.Duration
}

func (d *postDeliverer) Deliver(ctx context.Context, b *actors.Batch) actors.Outcome {
	var sb strings.Builder
	var m format.Message
	for i := range b.Len() {
		b.Message(i, &m)
		fmt.Fprintf(&sb, "%s %d %d\n", m.Device, m.Seq, m.Index)
	}
	select {
	case <-ctx.Done():
		return actors.Outcome{Result: actors.Stopped, Err: ctx.Err()}
	case <-time.After(d.delay):
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.URL, strings.NewReader(sb.String()))
	if err != nil {
		return actors.Outcome{Result: actors.Stopped, Err: err}
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return actors.Outcome{Result: actors.Stopped, Err: err}
	}
	resp.Body.Close()
	return actors.Outcome{Result: actors.Delivered, Attempts: 1, Status: resp.StatusCode}
}

// endpoint is an HTTP server recording what arrives, in arrival order.
type endpoint struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []msgKey
}

func newEndpoint(t *testing.T) *endpoint {
	e := &endpoint{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sc := bufio.NewScanner(r.Body)
		var keys []msgKey
		for sc.Scan() {
			var k msgKey
			var idx int
			if _, err := fmt.Sscanf(sc.Text(), "%s %d %d", &k.device, &k.seq, &idx); err == nil {
				keys = append(keys, k)
			}
		}
		e.mu.Lock()
		e.got = append(e.got, keys...)
		e.mu.Unlock()
	}))
	t.Cleanup(e.srv.Close)
	return e
}

// actorNode is a relay node's route actors over its journal and queues, one route (route ID
// id) to the endpoint.
type actorNode struct {
	conn *cluster.Conn
	j    *cluster.Journal
	q    *cluster.Queues
	sys  *actors.System
}

func startActorNode(t *testing.T, ctx context.Context, c *natstest.Cluster, prefix, name string, route uint16, e *endpoint) *actorNode {
	t.Helper()
	conn, err := cluster.Connect(ctx, cluster.Options{URL: c.URL(), Replicas: 3, Prefix: prefix, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	j, err := conn.OpenJournal(ctx, cluster.JournalOptions{Partitions: 4, Node: name})
	if err != nil {
		t.Fatal(err)
	}
	q, err := conn.OpenQueues(ctx, cluster.QueuesOptions{Node: name, Lease: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	d := &postDeliverer{client: e.srv.Client(), delay: 20 * time.Millisecond}
	sys := actors.New(actors.Options{Journal: nodeJournal{j, q}, Routes: []*actors.Route{{
		ID: route, Name: "r", URL: fields.MustCompile(e.srv.URL), MaxMessages: 10, MaxBytes: 1 << 20,
		Linger: 5 * time.Millisecond, Concurrency: 2, Deliver: d,
	}}})
	if err := q.Start(sys.OnCommit); err != nil {
		t.Fatal(err)
	}
	n := &actorNode{conn: conn, j: j, q: q, sys: sys}
	t.Cleanup(func() { n.stop(false) })
	return n
}

// openIngest opens a relay node's journal alone: its devices' frames come in there.
func openIngest(t *testing.T, ctx context.Context, c *natstest.Cluster, prefix, name string) *cluster.Journal {
	t.Helper()
	conn, err := cluster.Connect(ctx, cluster.Options{URL: c.URL(), Replicas: 3, Prefix: prefix, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	j, err := conn.OpenJournal(ctx, cluster.JournalOptions{Partitions: 4, Node: name})
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = j.Close()
		_ = conn.Close()
	})
	return j
}

// stop stops the node: its actors first (crash: at once, abandoning what is in flight), then
// its queues (crash: without handing anything back).
func (n *actorNode) stop(crash bool) {
	if n.sys == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if crash {
		n.q.Crash()
		cancel()
	}
	_ = n.sys.Stop(ctx)
	cancel()
	_ = n.q.Close()
	_ = n.j.Close()
	_ = n.conn.Close()
	n.sys = nil
}

// The unchanged route actors deliver the partitions to a real HTTP endpoint from two nodes;
// one crashes mid-stream: every message arrives, each device's in order at its first arrival
// (redeliveries of a crashed owner's messages come again, in order, after it), and the
// survivor's partition gauges go back to zero.
func TestQueuesRouteActors(t *testing.T) {
	c := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const parts, devices, perDevice = 4, 12, 30
	// The devices' frames come in through a third node's journal (its devices' connections),
	// which delivers nothing itself.
	in := openIngest(t, ctx, c, "qa", "in")
	route, err := in.RouteID("r")
	if err != nil {
		t.Fatal(err)
	}
	e := newEndpoint(t)
	a := startActorNode(t, ctx, c, "qa", "a", route, e)
	b := startActorNode(t, ctx, c, "qa", "b", route, e)
	checkfor.Check(t, wait, 20*time.Millisecond, func() error {
		if metric(t, a.q, "fleetrelay_cluster_partition_owned") == 0 || metric(t, b.q, "fleetrelay_cluster_partition_owned") == 0 ||
			metric(t, a.q, "fleetrelay_cluster_partition_owned")+metric(t, b.q, "fleetrelay_cluster_partition_owned") != parts {
			return errors.New("the partitions are not shared yet")
		}
		return nil
	})
	var keys []msgKey
	var appended sync.WaitGroup
	var appendErr error
	var errMu sync.Mutex
	for seq := uint64(1); seq <= perDevice; seq++ {
		for d := range devices {
			dev := fmt.Sprintf("dev-%03d", d)
			f := &store.Frame{Device: dev, Serial: dev, Seq: seq, PrevSeq: seq - 1, ReceivedAt: time.Now().UnixMilli(),
				Records: [][]byte{fmt.Appendf(nil, `{"s":%d}`, seq)}, Routes: []uint16{route}}
			appended.Add(1)
			in.Append(f, func(err error) {
				if err != nil {
					errMu.Lock()
					appendErr = err
					errMu.Unlock()
				}
				appended.Done()
			})
			keys = append(keys, msgKey{dev, seq})
		}
	}
	appended.Wait()
	if appendErr != nil {
		t.Fatalf("append: %v", appendErr)
	}
	checkfor.Check(t, wait, 5*time.Millisecond, func() error {
		e.mu.Lock()
		defer e.mu.Unlock()
		if len(e.got) < len(keys)/4 {
			return fmt.Errorf("%d arrived", len(e.got))
		}
		return nil
	})
	a.stop(true)
	checkfor.Check(t, wait, 20*time.Millisecond, func() error {
		e.mu.Lock()
		defer e.mu.Unlock()
		seen := make(map[msgKey]bool)
		for _, k := range e.got {
			seen[k] = true
		}
		if len(seen) < len(keys) {
			return fmt.Errorf("%d of %d arrived", len(seen), len(keys))
		}
		return nil
	})
	e.mu.Lock()
	got := append([]msgKey(nil), e.got...)
	e.mu.Unlock()
	next := make(map[string]uint64)
	dups := 0
	for _, k := range got {
		switch {
		case k.seq == next[k.device]+1:
			next[k.device] = k.seq
		case k.seq <= next[k.device]:
			dups++ // again, after a first arrival in order
		default:
			t.Fatalf("%s seq %d arrived first after seq %d", k.device, k.seq, next[k.device])
		}
	}
	checkfor.Check(t, wait, 20*time.Millisecond, func() error {
		p, ap := metric(t, b.q, "fleetrelay_cluster_partition_pending"), metric(t, b.q, "fleetrelay_cluster_partition_ack_pending")
		if p != 0 || ap != 0 {
			return fmt.Errorf("on b: pending %v, ack pending %v", p, ap)
		}
		if o := metric(t, b.q, "fleetrelay_cluster_partition_owned"); o != parts {
			return fmt.Errorf("b owns %v partitions", o)
		}
		return nil
	})
	t.Logf("%d messages, %d arrivals, %d again after the crash; b redelivered %v journal messages",
		len(keys), len(got), dups, metric(t, b.q, "fleetrelay_cluster_partition_redelivered_total"))
}
