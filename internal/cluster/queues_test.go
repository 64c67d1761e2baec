package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fleetrelay/fleetrelay/internal/checkfor"
	"github.com/fleetrelay/fleetrelay/internal/cluster"
	"github.com/fleetrelay/fleetrelay/internal/natstest"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// journal is a test's journal stream, made as wire.go lays it out, and a publisher into it.
type journal struct {
	t      testing.TB
	prefix string
	parts  int
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
}

func newJournal(t testing.TB, ctx context.Context, c *natstest.Cluster, prefix string, parts int) *journal {
	t.Helper()
	nc, err := nats.Connect(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       cluster.JournalStream(prefix),
		Subjects:   []string{prefix + ".j.>"},
		Storage:    jetstream.FileStorage,
		Replicas:   3,
		Duplicates: 2 * time.Minute,
		Metadata:   map[string]string{"fleetrelay_partitions": strconv.Itoa(parts)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &journal{t: t, prefix: prefix, parts: parts, nc: nc, js: js, stream: st}
}

// publish stores one DATA frame of device with seq and records, for routes; it returns the
// frame's journal sequence.
func (j *journal) publish(ctx context.Context, device string, seq uint64, records int, routes ...uint16) uint64 {
	j.t.Helper()
	f := &store.Frame{Device: device, Serial: device, Seq: seq, ReceivedAt: time.Now().UnixMilli(), Routes: routes}
	for r := range records {
		f.Records = append(f.Records, fmt.Appendf(nil, `{"d":%q,"s":%d,"r":%d}`, device, seq, r))
	}
	m := &nats.Msg{Subject: cluster.JournalSubject(j.prefix, f, j.parts), Data: cluster.EncodeFrame(nil, f), Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, cluster.MsgID(f))
	// Tried again while a NATS node's loss moves the stream's leader: an answer lost then
	// would otherwise be waited for until ctx ends. The message ID makes a retry land once.
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ack, err := j.js.PublishMsg(actx, m)
		cancel()
		if err == nil {
			return ack.Sequence
		}
		if ctx.Err() != nil {
			j.t.Fatalf("publish %s/%d: %v", device, seq, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// handout is one record handed out by a node: the frame's device and seq, the record, the
// routes it was handed out for.
type handout struct {
	node   string
	device string
	seq    uint64
	rec    int
	routes []uint16
}

// qnode is one relay node's Queues with a tiny route behind it: every segment handed out is
// recorded, then, after delay, marked delivered for each of its routes — one segment at a time,
// in the order they came, as a route's lane keeps them — unless held.
type qnode struct {
	t     testing.TB
	name  string
	conn  *cluster.Conn
	q     *cluster.Queues
	delay time.Duration

	segs chan *store.Segment
	stop chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	handed   []handout
	marked   map[msgKey]bool // marked delivered, before any crash
	segCount int             // segments handed out
	hold     bool            // nothing marked while set
	held     []*store.Segment
	crashed  bool
}

func startNode(t testing.TB, ctx context.Context, c *natstest.Cluster, prefix, name string, o cluster.QueuesOptions, delay time.Duration) *qnode {
	t.Helper()
	conn, err := cluster.Connect(ctx, cluster.Options{URL: c.URL(), Replicas: 3, Prefix: prefix, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	o.Node = name
	q, err := conn.OpenQueues(ctx, o)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	n := &qnode{t: t, name: name, conn: conn, q: q, delay: delay, segs: make(chan *store.Segment, 1<<16), stop: make(chan struct{}),
		marked: make(map[msgKey]bool)}
	n.wg.Add(1)
	go n.route()
	if err := q.Start(n.onCommit); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.close)
	return n
}

func (n *qnode) onCommit(seg *store.Segment) {
	n.mu.Lock()
	n.segCount++
	for _, f := range seg.Frames {
		for r := range f.Records {
			n.handed = append(n.handed, handout{node: n.name, device: f.Device, seq: f.Seq, rec: r, routes: f.Routes})
		}
	}
	n.mu.Unlock()
	n.segs <- seg
}

func (n *qnode) route() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case seg := <-n.segs:
			if n.delay > 0 {
				select {
				case <-n.stop:
					return
				case <-time.After(n.delay):
				}
			}
			n.mu.Lock()
			switch {
			case n.crashed:
			case n.hold:
				n.held = append(n.held, seg)
			default:
				mark(n.q, seg)
				for _, f := range seg.Frames {
					n.marked[msgKey{f.Device, f.Seq}] = true
				}
			}
			n.mu.Unlock()
		}
	}
}

// mark marks every record of seg delivered for each of its frames' routes.
func mark(q *cluster.Queues, seg *store.Segment) {
	byRoute := make(map[uint16][]store.Ref)
	for fi, f := range seg.Frames {
		for _, r := range f.Routes {
			for ri := range f.Records {
				byRoute[r] = append(byRoute[r], store.Ref{Seg: seg.ID, Pos: seg.Pos(fi, ri)})
			}
		}
	}
	for r, refs := range byRoute {
		q.MarkDelivered(r, refs)
	}
}

// release marks what was held, and marks from now on.
func (n *qnode) release() {
	n.mu.Lock()
	held := n.held
	n.held, n.hold = nil, false
	n.mu.Unlock()
	for _, seg := range held {
		mark(n.q, seg)
	}
}

func (n *qnode) handouts() []handout {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.handed)
}

// crash stops the node as a crash would (no heartbeat, renewal, marks; leases kept).
func (n *qnode) crash() {
	n.mu.Lock()
	n.crashed = true
	n.mu.Unlock()
	n.q.Crash()
}

func (n *qnode) close() {
	select {
	case <-n.stop:
		return
	default:
	}
	_ = n.q.Close()
	close(n.stop)
	n.wg.Wait()
	_ = n.conn.Close()
}

// owned returns the partitions n owns, from its metrics.
func (n *qnode) owned() []int {
	var out []int
	for _, m := range gather(n.t, n.q, "fleetrelay_cluster_partition_owned") {
		if m.GetGauge().GetValue() == 1 {
			p, _ := strconv.Atoi(m.GetLabel()[0].GetValue())
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// metric returns the sum of a metric's series on q.
func metric(t testing.TB, q *cluster.Queues, name string) float64 {
	var sum float64
	for _, m := range gather(t, q, name) {
		sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
	}
	return sum
}

func gather(t testing.TB, q *cluster.Queues, name string) []*dto.Metric {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range q.Collectors() {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

// cover checks that the nodes' owned partitions are all n partitions, each owned once, by the
// node rendezvous hashing gives it among them.
func cover(nodes []*qnode, n int) error {
	seen := make(map[int]string)
	for _, nd := range nodes {
		for _, p := range nd.owned() {
			if other, ok := seen[p]; ok {
				return fmt.Errorf("partition %d owned by %s and %s", p, other, nd.name)
			}
			seen[p] = nd.name
		}
	}
	if len(seen) != n {
		return fmt.Errorf("%d of %d partitions owned: %v", len(seen), n, seen)
	}
	// Settled: each partition at the node rendezvous hashing gives it among these, so that
	// ownership no longer moves while the test publishes.
	names := make([]string, len(nodes))
	for i, nd := range nodes {
		names[i] = nd.name
	}
	for p, owner := range seen {
		if w := cluster.Winner(names, p); w != owner {
			return fmt.Errorf("partition %d still owned by %s, its place is %s", p, owner, w)
		}
	}
	return nil
}

type msgKey struct {
	device string
	seq    uint64
}

// sent is what a test published: per device, seqs 1..n, each frame of one record for routes.
func publishAll(ctx context.Context, j *journal, devices, perDevice int, first uint64, routes ...uint16) []msgKey {
	var keys []msgKey
	for s := first; s < first+uint64(perDevice); s++ {
		for d := range devices {
			dev := fmt.Sprintf("dev-%03d", d)
			j.publish(ctx, dev, s, 1, routes...)
			keys = append(keys, msgKey{dev, s})
		}
	}
	return keys
}

// deliveredOnce checks that every key was handed out (for route 1) by the nodes, and reports
// how many arrivals were beyond the first.
func received(nodes []*qnode, keys []msgKey) (missing []msgKey, dups int) {
	count := make(map[msgKey]int)
	for _, n := range nodes {
		for _, h := range n.handouts() {
			count[msgKey{h.device, h.seq}]++
		}
	}
	for _, k := range keys {
		switch c := count[k]; {
		case c == 0:
			missing = append(missing, k)
		case c > 1:
			dups += c - 1
		}
	}
	return missing, dups
}

// ordered checks that each node handed every device's frames out in increasing seq order, from
// each partition's take on (a node that takes a partition again starts again from its cursor).
func ordered(n *qnode) error {
	last := make(map[string]uint64)
	for _, h := range n.handouts() {
		if h.rec != 0 {
			continue
		}
		if h.seq <= last[h.device] {
			return fmt.Errorf("%s handed out %s seq %d after seq %d", n.name, h.device, h.seq, last[h.device])
		}
		last[h.device] = h.seq
	}
	return nil
}

const wait = 60 * time.Second // a bound against hanging, not a speed check

// Two nodes share the partitions, every message is handed out exactly once by the one owner of
// its partition, a device's messages in order; a third node joining takes its share; a node
// closing hands its partitions back at once (leases deleted, cursors written) and the others
// deliver what follows.
func TestQueuesShareAndRebalance(t *testing.T) {
	c := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const parts = 8
	j := newJournal(t, ctx, c, "qs", parts)
	o := cluster.QueuesOptions{Lease: time.Second}
	a := startNode(t, ctx, c, "qs", "a", o, 0)
	b := startNode(t, ctx, c, "qs", "b", o, 0)
	checkfor.Check(t, wait, 20*time.Millisecond, func() error {
		if len(a.owned()) == 0 || len(b.owned()) == 0 {
			return fmt.Errorf("owned: a %v, b %v; want both a share", a.owned(), b.owned())
		}
		return cover([]*qnode{a, b}, parts)
	})

	keys := publishAll(ctx, j, 40, 10, 1, 1)
	checkfor.Check(t, wait, 20*time.Millisecond, func() error {
		if m, _ := received([]*qnode{a, b}, keys); len(m) > 0 {
			return fmt.Errorf("%d of %d not handed out, e.g. %v", len(m), len(keys), m[0])
		}
		return nil
	})
	if _, dups := received([]*qnode{a, b}, keys); dups != 0 {
		t.Errorf("%d messages handed out more than once", dups)
	}
	for _, n := range []*qnode{a, b} {
		if err := ordered(n); err != nil {
			t.Error(err)
		}
		// Each message by the owner of its partition.
		mine := n.owned()
		for _, h := range n.handouts() {
			if p := cluster.Partition(h.device, parts); !slices.Contains(mine, p) {
				t.Fatalf("%s handed out %s (partition %d), owning %v", n.name, h.device, p, mine)
			}
		}
	}

	// A third node takes its share.
	cnode := startNode(t, ctx, c, "qs", "c", o, 0)
	checkfor.Check(t, wait, 20*time.Millisecond, func() error {
		if len(cnode.owned()) == 0 {
			return errors.New("c owns nothing")
		}
		return cover([]*qnode{a, b, cnode}, parts)
	})
	keys2 := publishAll(ctx, j, 40, 5, 11, 1)
	all := []*qnode{a, b, cnode}
	checkfor.Check(t, wait, 20*time.Millisecond, func() error {
		if m, _ := received(all, keys2); len(m) > 0 {
			return fmt.Errorf("%d of %d not handed out after c joined", len(m), len(keys2))
		}
		return nil
	})
	if _, dups := received(all, append(keys, keys2...)); dups != 0 {
		// Every segment was marked at once: a partition released had nothing out, so its next
		// owner starts after what was delivered.
		t.Errorf("%d messages handed out more than once across the rebalance", dups)
	}
	if len(cnode.handouts()) == 0 {
		t.Error("c handed nothing out")
	}

	// Close hands back at once: when it returns, none of c's leases is left.
	cowned := cnode.owned()
	cnode.close()
	lkv, err := j.js.KeyValue(ctx, cluster.Bucket("qs", cluster.BucketLeases))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range cowned {
		e, err := lkv.Get(ctx, "p"+strconv.Itoa(p))
		if err == nil && string(e.Value()) == "c" {
			t.Errorf("partition %d still leased to c after its Close", p)
		}
	}
	checkfor.Check(t, wait, 20*time.Millisecond, func() error { return cover([]*qnode{a, b}, parts) })
	keys3 := publishAll(ctx, j, 40, 5, 16, 1)
	checkfor.Check(t, wait, 20*time.Millisecond, func() error {
		if m, _ := received([]*qnode{a, b}, keys3); len(m) > 0 {
			return fmt.Errorf("%d of %d not handed out after c left", len(m), len(keys3))
		}
		return nil
	})
	if _, dups := received(all, append(append(keys, keys2...), keys3...)); dups != 0 {
		t.Errorf("%d messages handed out more than once across c's Close", dups)
	}
	for _, n := range all {
		if err := ordered(n); err != nil {
			t.Error(err)
		}
	}
}

// A node crashes (no heartbeat, renewal or mark any more, leases kept) with records out: the
// other node takes its partitions once their leases expire and delivers again from their
// cursors — nothing skipped, a device's messages in order, the redeliveries counted.
func TestQueuesFailover(t *testing.T) {
	c := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const parts = 4
	j := newJournal(t, ctx, c, "qf", parts)
	o := cluster.QueuesOptions{Lease: time.Second}
	a := startNode(t, ctx, c, "qf", "a", o, 20*time.Millisecond)
	b := startNode(t, ctx, c, "qf", "b", o, 0)
	checkfor.Check(t, wait, 20*time.Millisecond, func() error {
		if len(a.owned()) == 0 || len(b.owned()) == 0 {
			return fmt.Errorf("owned: a %v, b %v; want both a share", a.owned(), b.owned())
		}
		return cover([]*qnode{a, b}, parts)
	})
	aOwned := a.owned()
	keys := publishAll(ctx, j, 20, 20, 1, 1)
	// Let a deliver part of its share, slowly, then crash it with the rest out.
	checkfor.Check(t, wait, 5*time.Millisecond, func() error {
		if n := len(a.handouts()); n < 50 {
			return fmt.Errorf("a handed out %d", n)
		}
		return nil
	})
	a.crash()
	checkfor.Check(t, wait, 20*time.Millisecond, func() error {
		if got := b.owned(); len(got) != parts {
			return fmt.Errorf("b owns %v", got)
		}
		return nil
	})
	// Nothing skipped: every message a had not marked delivered when it crashed is handed out
	// by b.
	a.mu.Lock()
	aMarked := maps.Clone(a.marked)
	a.mu.Unlock()
	checkfor.Check(t, wait, 20*time.Millisecond, func() error {
		if m, _ := received([]*qnode{b}, keys); len(m) > 0 {
			var left []msgKey
			for _, k := range m {
				if !aMarked[k] {
					left = append(left, k)
				}
			}
			if len(left) > 0 {
				return fmt.Errorf("%d of %d neither marked by a nor handed out by b, e.g. %v", len(left), len(keys), left[0])
			}
		}
		return nil
	})
	for _, n := range []*qnode{a, b} {
		if err := ordered(n); err != nil {
			t.Error(err)
		}
	}
	// b's share of a device of a's partitions: from at or below the first seq a had not marked
	// up to the last, without a gap; the part a had handed out is handed out again.
	byDev := make(map[string][]uint64)
	for _, h := range b.handouts() {
		byDev[h.device] = append(byDev[h.device], h.seq)
	}
	redone := 0
	for d := range 20 {
		dev := fmt.Sprintf("dev-%03d", d)
		if !slices.Contains(aOwned, cluster.Partition(dev, parts)) {
			continue
		}
		firstUnmarked := uint64(21)
		for s := uint64(20); s >= 1; s-- {
			if !aMarked[msgKey{dev, s}] {
				firstUnmarked = s
			}
		}
		seqs := byDev[dev]
		if firstUnmarked == 21 {
			continue // a delivered all of it
		}
		if len(seqs) == 0 || seqs[0] > firstUnmarked || seqs[len(seqs)-1] != 20 {
			t.Fatalf("b handed out %s seqs %v, want from %d or below to 20", dev, seqs, firstUnmarked)
		}
		for i := 1; i < len(seqs); i++ {
			if seqs[i] != seqs[i-1]+1 {
				t.Errorf("b handed out %s seqs %v: a gap", dev, seqs)
				break
			}
		}
		var aLast uint64
		for _, h := range a.handouts() {
			if h.device == dev {
				aLast = max(aLast, h.seq)
			}
		}
		if seqs[0] <= aLast {
			redone += int(aLast - seqs[0] + 1)
		}
	}
	if redone == 0 {
		t.Error("b handed out nothing a had handed out: the crash left nothing out, the test proves little")
	}
	if got := metric(t, b.q, "fleetrelay_cluster_partition_redelivered_total"); got == 0 {
		t.Errorf("redelivered_total on b = 0, want > 0 (%d messages handed out again)", redone)
	}
	t.Logf("a handed out %d, b %d; %d handed out again by b", len(a.handouts()), len(b.handouts()), redone)
}

// A route this node does not run does not hold the cursor back; dead letters land in the
// stream and count as done; a discarded route's records are done and its dead letters purged;
// fetching pauses at MaxResident; the owner purges what every route is done with.
func TestQueuesRoutesDeadLettersResident(t *testing.T) {
	t.Cleanup(cluster.SetPurge(0, 100*time.Millisecond)) // after the node's Close
	c := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	j := newJournal(t, ctx, c, "qr", 1)
	n := startNode(t, ctx, c, "qr", "a", cluster.QueuesOptions{Lease: time.Second, MaxResident: 10,
		Routes: func() []uint16 { return []uint16{1, 3} }}, 0)
	n.mu.Lock()
	n.hold = true
	n.mu.Unlock()
	var last uint64
	for s := uint64(1); s <= 30; s++ {
		last = j.publish(ctx, "dev", s, 1, 1, 2) // route 2 is not run here
	}
	checkfor.Check(t, wait, 10*time.Millisecond, func() error {
		if h := len(n.handouts()); h != 10 {
			return fmt.Errorf("handed out %d, want MaxResident 10", h)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // a chance to overshoot, which the check below would see
	if h := len(n.handouts()); h != 10 {
		t.Fatalf("handed out %d with 10 resident and MaxResident 10", h)
	}
	for _, h := range n.handouts() {
		if !slices.Equal(h.routes, []uint16{1}) {
			t.Fatalf("%s/%d handed out for routes %v, want [1]", h.device, h.seq, h.routes)
		}
	}
	if b := n.q.Backlog(1); b != 10 {
		t.Errorf("Backlog(1) = %d, want 10", b)
	}
	// Pending serves the queue from memory.
	var pend []uint64
	if err := n.q.Pending(1, 0, func(seg *store.Segment, pos []uint32) bool {
		for _, p := range pos {
			fi, _, _ := seg.Locate(p)
			pend = append(pend, seg.Frames[fi].Seq)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if want := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}; !slices.Equal(pend, want) {
		t.Errorf("Pending(1, 0) seqs %v, want %v", pend, want)
	}

	// Seq 1 and 2 go to the dead letters; the rest is delivered.
	n.mu.Lock()
	held := n.held
	n.held = nil
	n.mu.Unlock()
	first := held[0]
	var dead *store.DeadLetter
	for fi, f := range first.Frames {
		if f.Seq <= 2 {
			if dead == nil {
				dead = &store.DeadLetter{Route: 1, Status: 500, Error: "gave up", Attempts: 3, At: time.Now().UnixMilli()}
			}
			dead.Items = append(dead.Items, store.DeadItem{Frame: f, Record: 0})
			dead.Refs = append(dead.Refs, store.Ref{Seg: first.ID, Pos: first.Pos(fi, 0)})
		}
	}
	if dead == nil || len(dead.Items) != 2 {
		t.Fatalf("first segment holds seqs %v", first.Frames)
	}
	if err := n.q.DeadLetter(dead, nil); err != nil {
		t.Fatal(err)
	}
	if dead.ID == 0 {
		t.Error("dead letter without an ID")
	}
	if got := n.q.DeadLetterCount(1); got != 2 {
		t.Errorf("DeadLetterCount(1) = %d, want 2", got)
	}
	var letters []*store.DeadLetter
	if err := n.q.DeadLetters(ctx, 1, func(d *store.DeadLetter) bool { letters = append(letters, d); return true }); err != nil {
		t.Fatal(err)
	}
	if len(letters) != 1 || len(letters[0].Items) != 2 || letters[0].Items[1].Frame.Seq != 2 || letters[0].Error != "gave up" {
		t.Fatalf("dead letters read back: %+v", letters)
	}
	n.mu.Lock()
	n.held = append(held, n.held...) // with what the room the dead letter made let in
	n.mu.Unlock()
	n.release() // marks seqs 1 and 2 again too: repeats are ignored
	checkfor.Check(t, wait, 10*time.Millisecond, func() error {
		if h := len(n.handouts()); h != 30 {
			return fmt.Errorf("handed out %d of 30", h)
		}
		return nil
	})
	// The cursor reaches the last message: route 2, not run here, did not hold it back.
	ckv, err := j.js.KeyValue(ctx, cluster.Bucket("qr", cluster.BucketCursors))
	if err != nil {
		t.Fatal(err)
	}
	checkfor.Check(t, wait, 20*time.Millisecond, func() error {
		e, err := ckv.Get(ctx, "p0")
		if err != nil {
			return err
		}
		if !strings.Contains(string(e.Value()), fmt.Sprintf(`"floor":%d`, last)) {
			return fmt.Errorf("cursor record %s, want floor %d", e.Value(), last)
		}
		return nil
	})
	// Everything done, older than the (test's) purge age: the owner purges it.
	checkfor.Check(t, wait, 50*time.Millisecond, func() error {
		info, err := j.stream.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != 0 {
			return fmt.Errorf("journal holds %d messages", info.State.Msgs)
		}
		return nil
	})

	// Discarding route 3: what is out for it is done, it is left out of what follows, its dead
	// letters go.
	n.mu.Lock()
	n.hold = true
	n.mu.Unlock()
	j.publish(ctx, "dev", 31, 2, 1, 3)
	checkfor.Check(t, wait, 10*time.Millisecond, func() error {
		if b := n.q.Backlog(3); b != 2 {
			return fmt.Errorf("Backlog(3) = %d", b)
		}
		return nil
	})
	d3 := &store.DeadLetter{Route: 3, Error: "x", Items: []store.DeadItem{{Frame: &store.Frame{Device: "dev", Seq: 9, Records: [][]byte{[]byte(`{}`)}}}}}
	if err := n.q.DeadLetter(d3, nil); err != nil {
		t.Fatal(err)
	}
	late := 0
	var lateMu sync.Mutex
	recs, deadRecs, err := n.q.DiscardRoute(3, func(k int) { lateMu.Lock(); late += k; lateMu.Unlock() })
	if err != nil || recs != 2 || deadRecs != 1 {
		t.Fatalf("DiscardRoute(3) = %d, %d, %v; want 2, 1", recs, deadRecs, err)
	}
	if b, d := n.q.Backlog(3), n.q.DeadLetterCount(3); b != 0 || d != 0 {
		t.Errorf("after the discard: Backlog(3) %d, DeadLetterCount(3) %d", b, d)
	}
	j.publish(ctx, "dev", 32, 1, 1, 3)
	checkfor.Check(t, wait, 10*time.Millisecond, func() error {
		lateMu.Lock()
		defer lateMu.Unlock()
		if late != 1 {
			return fmt.Errorf("late discards %d, want 1", late)
		}
		return nil
	})
	for _, h := range n.handouts() {
		if h.seq == 32 && slices.Contains(h.routes, 3) {
			t.Errorf("seq 32 handed out for the discarded route 3")
		}
	}
	n.release()

	// Replay: route 1's dead letters move to its replay entries (no longer listed), are read
	// back by Replaying, and are gone once done; a purge deletes the older letters only.
	letter := func(seq uint64) *store.DeadLetter {
		return &store.DeadLetter{Route: 1, Error: "x", At: int64(seq), Items: []store.DeadItem{{Frame: &store.Frame{Device: "dev", Seq: seq, Records: [][]byte{[]byte(`{}`)}}}}}
	}
	before := n.q.DeadLetterCount(1)
	if _, recs, err := n.q.Purge(ctx, 1, 0); err != nil || recs != before || n.q.DeadLetterCount(1) != 0 {
		t.Fatalf("Purge(1, all) = %d records, %v; had %d, left %d", recs, err, before, n.q.DeadLetterCount(1))
	}
	for _, s := range []uint64{40, 41} {
		if err := n.q.DeadLetter(letter(s), nil); err != nil {
			t.Fatal(err)
		}
	}
	if letters, recs, err := n.q.Replay(1); err != nil || letters != 2 || recs != 2 {
		t.Fatalf("Replay(1) = %d, %d, %v; want 2, 2", letters, recs, err)
	}
	if c := n.q.DeadLetterCount(1); c != 0 {
		t.Errorf("DeadLetterCount(1) after the replay = %d", c)
	}
	var ids []uint64
	if err := n.q.Replaying(1, func(d *store.DeadLetter) bool {
		ids = append(ids, d.ID)
		return true
	}); err != nil || len(ids) != 2 {
		t.Fatalf("Replaying(1): %v, %v; want two entries", ids, err)
	}
	if r, err := n.q.ReplayRecords(1); err != nil || r != 2 {
		t.Errorf("ReplayRecords(1) = %d, %v", r, err)
	}
	// The first delivered; the second dead again (a new letter, the entry finished).
	if err := n.q.ReplayDone(1, ids[:1]); err != nil {
		t.Fatal(err)
	}
	if err := n.q.DeadLetter(letter(42), ids[1:]); err != nil {
		t.Fatal(err)
	}
	if r, err := n.q.ReplayRecords(1); err != nil || r != 0 {
		t.Errorf("ReplayRecords(1) after done = %d, %v", r, err)
	}
	if err := n.q.DeadLetter(letter(43), nil); err != nil {
		t.Fatal(err)
	}
	if letters, recs, err := n.q.Purge(ctx, 1, 43); err != nil || letters != 1 || recs != 1 {
		t.Errorf("Purge(1, before 43) = %d, %d, %v; want 1, 1", letters, recs, err)
	}
	var left []uint64
	if err := n.q.DeadLetters(ctx, 1, func(d *store.DeadLetter) bool {
		left = append(left, d.Items[0].Frame.Seq)
		return true
	}); err != nil || !slices.Equal(left, []uint64{43}) {
		t.Errorf("dead letters left after the purge: %v, %v; want [43]", left, err)
	}
}

// A NATS node stops mid-stream: leaders move, the ordered consumers and the leases carry on
// on the others; every message published is handed out, each device's in order on each node.
func TestQueuesNATSNodeLoss(t *testing.T) {
	c := natstest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const parts = 4
	j := newJournal(t, ctx, c, "qn", parts)
	o := cluster.QueuesOptions{Lease: 3 * time.Second}
	a := startNode(t, ctx, c, "qn", "a", o, 0)
	b := startNode(t, ctx, c, "qn", "b", o, 0)
	keys := publishAll(ctx, j, 10, 10, 1, 1)
	c.Stop(0)
	stopped := time.Now()
	keys = append(keys, publishAll(ctx, j, 10, 10, 11, 1)...)
	published := time.Since(stopped)
	checkfor.Check(t, wait, 20*time.Millisecond, func() error {
		if m, _ := received([]*qnode{a, b}, keys); len(m) > 0 {
			return fmt.Errorf("%d of %d not handed out, e.g. %v", len(m), len(keys), m[0])
		}
		return cover([]*qnode{a, b}, parts)
	})
	for _, n := range []*qnode{a, b} {
		if err := ordered(n); err != nil {
			t.Error(err)
		}
	}
	_, dups := received([]*qnode{a, b}, keys)
	t.Logf("%d messages, %d handed out again; published %v after the node's stop, all handed out %v after",
		len(keys), dups, published, time.Since(stopped))
}
