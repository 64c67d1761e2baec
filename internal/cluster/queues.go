package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

// The delivery side of the journal (wire.go's layout). Choices, and what they cost:
//
//   - Leases in a KV bucket and cursors, not JetStream's priority groups with pinned clients.
//     A pinned durable consumer per partition would need one ack per message for all its
//     routes (so the slowest route sets when a message is acked, and a per-route view needs a
//     consumer per route and partition), and after a takeover it redelivers what the dead owner
//     fetched and never acked when the ack wait ends — by then newer messages may have gone out
//     to the new pinned client, and redeliveries past MaxAckPending interleave with them.
//     With a lease and a cursor record per partition, a new owner starts an ordered consumer at
//     the lowest route cursor: it hands out in sequence order from there, so a device's order
//     holds across a takeover by construction, and every route keeps its own progress.
//   - At least once: cursors are written by the owner every 200 ms and at release; a new
//     owner delivers again what was delivered after the last write (counted, per partition, in
//     fleetrelay_cluster_partition_redelivered_total: the messages it hands out at or below the
//     previous owner's fetched mark, itself written with the cursors, so a lower bound). A
//     cursor record only ever says what was done, whoever wrote it last, so a record written
//     late by an owner that lost its lease makes a takeover deliver again, never skip.
//   - A release (another node now wins the partition) stops fetching and gives what the route
//     actors hold Lease to be delivered; past that the cursors say what was done, and the rest
//     is delivered again by the next owner while the route actors here deliver it too.
//   - Memory, not disk: every segment handed out stays in memory until every route is done
//     with it, and a node's partitions stop fetching at MaxResident. A route whose endpoint is
//     down therefore holds its partitions' cursors and, at MaxResident, pauses fetching for the
//     node's other routes too — the single-node store instead pages a stalled route's segments
//     out to disk. Left: a stalled route reading its backlog back from the journal on its own.
//   - Dead letters go to the stream <prefix>_deadletters (subject <prefix>.dlq.<route>, the
//     store's dead-letter encoding, the Conn's replicas, file storage) before their records
//     count as done. Replay moves them to the replay subject (replay.go).
//   - Purges: an owner purges its partition's messages every route is done with once they are
//     a minute old, or older than the journal's duplicate window when that is longer (the
//     ingest's devices bucket holds each device's last seq within a second or so; within the
//     window a device's resent frames are answered as duplicates); the stream's MaxAge is only
//     a safety net.

// Queues is the delivery side of the cluster's journal: the per-route queues of the
// partitions this node owns, served to the route actors through the same methods the Badger
// store serves them with (actors.Journal's MarkDelivered, Pending, Spilled, DeadLetter,
// Replaying, ReplayDone, Replay, Backlog, DeadLetterCount, ReplayRecords, DiscardRoute,
// ReviveRoute), so the unchanged route actors, batching, lanes and delivery pipeline deliver
// cluster mode too.
//
// Each partition is owned by one node at a time (lease.go) and read by its owner from its
// cursor on (partition.go). Every fetched batch becomes one store.Segment, with IDs increasing
// on this node, handed to the onCommit given to Start; segments are kept in memory until every
// route is done with them (at most MaxResident records handed out and not done: fetching
// pauses above it), so Pending serves a route's queue from memory. Segment refs map back to
// (partition, journal sequence); each route's cursor advances over its longest done prefix.
//
// Its methods are safe for concurrent use. MarkDelivered, Pending and Spilled never wait for
// NATS; DeadLetter, DeadLetterCount and DiscardRoute do (opTimeout at most).
type Queues struct {
	c    *Conn
	opts QueuesOptions
	log  *slog.Logger

	journal  jetstream.Stream
	dlq      jetstream.Stream
	nodes    jetstream.KeyValue
	leases   jetstream.KeyValue
	cursors  jetstream.KeyValue
	nodeKey  string
	parts    []*partition
	purgeAge time.Duration // a message every route is done with is purged once this old
	metrics  queueMetrics

	ctx    context.Context // ended by Close (or the crash hook): every goroutine stops
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{}
	sub    *nats.Subscription
	joined bool // ownLoop's: announced after its first heartbeat

	commitMu sync.Mutex // hands segments to onCommit one at a time, in ID order
	onCommit func(*store.Segment)
	nextSeg  uint64 // guarded by commitMu and mu

	mu        sync.Mutex
	started   bool
	stopped   bool
	crashed   bool
	segs      map[uint64]*heldSeg
	order     []*heldSeg // segs in ID order, some gone
	gone      int        // gone entries in order
	resident  int        // records handed out and not done (frames of which a route is not done)
	room      chan struct{}
	discarded map[uint16]func(records int)
	unknown   map[uint16]time.Time // routes frames went to that this node does not run: since when

	warnMu sync.Mutex
	warned map[string]warned
}

// QueuesOptions configure a node's Queues.
type QueuesOptions struct {
	// Node names this node among those of the prefix; unique per process. Required.
	Node string
	// Lease is how long a dead owner keeps its partitions (the leases' and the heartbeats'
	// TTL); leases are renewed every Lease/3. 0: 3s. Every node of a prefix should use the
	// same: the last to start sets the buckets' TTL.
	Lease time.Duration
	// MaxResident is how many records handed out and not yet done by every route this node
	// keeps before its partitions pause fetching. 0: 65536.
	MaxResident int
	// Routes returns the IDs of the routes this node runs. A frame's route not among them is
	// done for it (a deleted route must not hold a partition back). nil: every route.
	Routes func() []uint16
	Logger *slog.Logger
}

// DeadLetterStream returns the name of the dead letters' stream for prefix.
func DeadLetterStream(prefix string) string { return prefix + "_deadletters" }

// DeadLetterSubject returns the subject of route's dead letters.
func DeadLetterSubject(prefix string, route uint16) string {
	return prefix + ".dlq." + strconv.Itoa(int(route))
}

// OpenQueues opens this node's queues over the journal, which must exist (the ingest creates
// it): the number of partitions is read from its metadata. It creates (or updates) the nodes,
// leases and cursors buckets and the dead letters' stream. Nothing is fetched before Start.
func (c *Conn) OpenQueues(ctx context.Context, o QueuesOptions) (*Queues, error) {
	if o.Node == "" {
		return nil, errors.New("cluster: queues: no node name")
	}
	if o.Lease <= 0 {
		o.Lease = 3 * time.Second
	}
	if o.MaxResident <= 0 {
		o.MaxResident = 65536
	}
	if o.Logger == nil {
		o.Logger = c.log
	}
	q := &Queues{c: c, opts: o, log: o.Logger.With("component", "cluster", "node", o.Node),
		nodeKey: nodeKey(o.Node), wake: make(chan struct{}, 1), segs: make(map[uint64]*heldSeg),
		room: make(chan struct{}), discarded: make(map[uint16]func(int)), unknown: make(map[uint16]time.Time), warned: make(map[string]warned),
		metrics: newQueueMetrics()}
	name := JournalStream(c.opts.Prefix)
	st, err := retry(ctx, func(ctx context.Context) (jetstream.Stream, error) { return c.js.Stream(ctx, name) })
	if err != nil {
		return nil, fmt.Errorf("cluster: queues: journal stream %s: %w", name, err)
	}
	q.journal = st
	q.purgeAge = purgeAge
	if d := st.CachedInfo().Config.Duplicates; !purgeExact && d > q.purgeAge {
		q.purgeAge = d
	}
	n, err := strconv.Atoi(st.CachedInfo().Config.Metadata[metaPartitions])
	if err != nil || n < 1 {
		return nil, fmt.Errorf("cluster: queues: journal stream %s: metadata %s = %q, want a number of partitions",
			name, metaPartitions, st.CachedInfo().Config.Metadata[metaPartitions])
	}
	for p := range n {
		q.parts = append(q.parts, &partition{id: p, key: leaseKey(p), filter: PartitionFilter(c.opts.Prefix, p)})
	}
	for _, b := range []struct {
		kv   *jetstream.KeyValue
		what string
		ttl  time.Duration
	}{{&q.nodes, BucketNodes, o.Lease}, {&q.leases, BucketLeases, o.Lease}, {&q.cursors, BucketCursors, 0}} {
		cfg := jetstream.KeyValueConfig{Bucket: Bucket(c.opts.Prefix, b.what), TTL: b.ttl,
			Storage: jetstream.FileStorage, Replicas: c.opts.Replicas}
		kv, err := retry(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
			return c.js.CreateOrUpdateKeyValue(ctx, cfg)
		})
		if err != nil {
			return nil, fmt.Errorf("cluster: queues: bucket %s: %w", cfg.Bucket, err)
		}
		*b.kv = kv
	}
	dcfg := jetstream.StreamConfig{
		Name:        DeadLetterStream(c.opts.Prefix),
		Description: "fleetrelay dead letters: per route, the records it gave up on",
		Subjects:    []string{c.opts.Prefix + ".dlq.>"},
		Storage:     jetstream.FileStorage,
		Replicas:    c.opts.Replicas,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
	}
	dlq, err := retry(ctx, func(ctx context.Context) (jetstream.Stream, error) { return c.js.CreateOrUpdateStream(ctx, dcfg) })
	if err != nil {
		return nil, fmt.Errorf("cluster: queues: dead-letter stream %s: %w", dcfg.Name, err)
	}
	q.dlq = dlq
	q.ctx, q.cancel = context.WithCancel(context.Background())
	return q, nil
}

// Partitions returns the number of the journal's partitions.
func (q *Queues) Partitions() int { return len(q.parts) }

// Start joins the nodes sharing the partitions and hands every segment of the partitions this
// node comes to own to onCommit (the actor system's OnCommit), one at a time, in ID order.
// onCommit must not block.
func (q *Queues) Start(onCommit func(*store.Segment)) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.started || q.stopped {
		return errors.New("cluster: queues started twice, or closed")
	}
	q.started = true
	q.onCommit = onCommit
	sub, err := q.c.nc.Subscribe(q.leasesChanged(), func(*nats.Msg) {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("cluster: queues: subscribe to %s: %w", q.leasesChanged(), err)
	}
	q.sub = sub
	q.wg.Add(2)
	go q.ownLoop(q.ctx)
	go q.cursorLoop(q.ctx)
	return nil
}

// Close stops fetching and hands back every partition this node holds — its cursors written,
// its lease deleted — so that other nodes take them over at once; then it leaves the live
// nodes. What the route actors still hold is delivered again by the next owners: stop the
// actors first. Close the Queues before their Conn.
func (q *Queues) Close() error {
	q.mu.Lock()
	if q.stopped {
		q.mu.Unlock()
		return nil
	}
	q.stopped = true
	crashed := q.crashed
	q.mu.Unlock()
	q.cancel()
	if q.sub != nil {
		_ = q.sub.Unsubscribe()
	}
	q.wg.Wait()
	if crashed {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	released := false
	for _, p := range q.parts {
		q.mu.Lock()
		held := p.state != partFree
		q.mu.Unlock()
		if held {
			q.handBack(ctx, p)
			released = true
		}
	}
	actx, acancel := context.WithTimeout(ctx, attemptTimeout)
	err := q.nodes.Delete(actx, q.nodeKey)
	acancel()
	if err != nil {
		q.log.Warn("leave the live nodes; the heartbeat expires by itself", "err", err)
	}
	if released {
		q.announce()
		_ = q.c.nc.FlushTimeout(time.Second)
	}
	return nil
}

// closeTimeout bounds Close's hand-backs: with NATS unreachable, the leases expire instead.
const closeTimeout = 5 * time.Second

// crash stops this node as a crash would (tests): no heartbeat, renewal, fetch or cursor write
// from now on, nothing handed back, marks ignored; its leases expire after Lease.
func (q *Queues) crash() {
	q.mu.Lock()
	q.crashed = true
	for _, p := range q.parts {
		if p.run != nil {
			p.run.ended = true // no cursor record from it any more, no segment handed out
		}
	}
	q.mu.Unlock()
	q.cancel()
	if q.sub != nil {
		_ = q.sub.Unsubscribe()
	}
	q.wg.Wait()
}

// MarkDelivered records that route is done with refs (delivered, or dead-lettered by
// DeadLetter). Refs of segments no longer held (done, or of a partition this node lost or
// released) and repeated marks are ignored. It never waits for NATS.
func (q *Queues) MarkDelivered(route uint16, refs []store.Ref) {
	if len(refs) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.crashed {
		return
	}
	var h *heldSeg
	for i, r := range refs {
		if i == 0 || refs[i-1].Seg != r.Seg {
			h = q.segs[r.Seg]
		}
		if h == nil || h.gone || h.run.ended {
			continue
		}
		fi, ri, ok := h.seg.Locate(r.Pos)
		if !ok {
			continue
		}
		q.markLocked(h, fi, ri, route)
	}
}

// Pending calls fn, in segment-ID order, for every segment held with ID > after that has
// records for route not done yet, with their sorted positions; it stops when fn returns false.
// Segments handed out while it runs may or may not be visited. fn is called without locks
// held.
func (q *Queues) Pending(route uint16, after uint64, fn func(seg *store.Segment, pos []uint32) bool) error {
	cursor := after
	for {
		q.mu.Lock()
		i := sort.Search(len(q.order), func(i int) bool { return q.order[i].seg.ID > cursor })
		var seg *store.Segment
		var pos []uint32
		for ; i < len(q.order) && seg == nil; i++ {
			h := q.order[i]
			cursor = h.seg.ID
			if h.gone {
				continue
			}
			pos = undonePositions(h, route, pos[:0])
			if len(pos) > 0 {
				seg = h.seg
			}
		}
		q.mu.Unlock()
		if seg == nil {
			return nil
		}
		if !fn(seg, pos) {
			return nil
		}
		pos = nil // fn may keep it
	}
}

// undonePositions appends the positions of h's records route is not done with.
func undonePositions(h *heldSeg, route uint16, dst []uint32) []uint32 {
	for fi, pm := range h.msgs {
		for _, rt := range pm.routes {
			if rt.route != route || rt.left == 0 {
				continue
			}
			for r := range pm.nrec {
				if rt.done[r/64]&(1<<(r%64)) == 0 {
					dst = append(dst, h.seg.Pos(fi, r))
				}
			}
		}
	}
	return dst
}

// Spilled does nothing: every segment handed out stays in memory until it is done (fetching
// pauses at MaxResident instead), so Pending serves it from there.
func (q *Queues) Spilled(route uint16, upTo uint64) {}

// Backlog returns how many records handed out on this node route is not done with.
func (q *Queues) Backlog(route uint16) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, h := range q.order {
		if h.gone {
			continue
		}
		for _, pm := range h.msgs {
			for _, rt := range pm.routes {
				if rt.route == route {
					n += rt.left
				}
			}
		}
	}
	return n
}

// DeadLetter publishes d to the dead letters' stream (subject DeadLetterSubject of its route;
// d.ID becomes its stream sequence), then marks d.Refs done as MarkDelivered does. Nothing is
// marked when the publish fails. The replayed dead letters finished (whose records are all
// delivered or dead again) are deleted after the publish.
func (q *Queues) DeadLetter(d *store.DeadLetter, finished []uint64) error {
	if len(d.Items) == 0 {
		return nil
	}
	letter := *d
	letter.Refs = nil // this node's segment refs mean nothing elsewhere
	body := store.EncodeDeadLetter(&letter)
	subj := DeadLetterSubject(q.c.opts.Prefix, d.Route)
	msg := &nats.Msg{Subject: subj, Data: body, Header: nats.Header{}}
	msg.Header.Set(deadRecordsHeader, strconv.Itoa(len(d.Items)))
	ack, err := retry(context.Background(), func(ctx context.Context) (*jetstream.PubAck, error) {
		return q.c.js.PublishMsg(ctx, msg)
	})
	if err != nil {
		return fmt.Errorf("cluster: write dead letter of route %d: %w", d.Route, err)
	}
	d.ID = ack.Sequence
	if err := q.ReplayDone(d.Route, finished); err != nil {
		// Left on the replay subject, they are delivered again later: never lost.
		q.warn("delete replayed dead letters", err)
	}
	q.MarkDelivered(d.Route, d.Refs)
	return nil
}

// DeadLetters calls fn for each dead letter of route, oldest first, until fn returns false.
func (q *Queues) DeadLetters(ctx context.Context, route uint16, fn func(*store.DeadLetter) bool) error {
	if err := q.letters(ctx, DeadLetterSubject(q.c.opts.Prefix, route), route, fn); err != nil {
		return fmt.Errorf("cluster: read dead letters of route %d: %w", route, err)
	}
	return nil
}

// DeadLetterCount returns how many records route's dead letters hold (0 when the stream
// cannot be read now). It reads every dead letter's header: dead letters are few, and this is
// asked when a route is removed.
func (q *Queues) DeadLetterCount(route uint16) int {
	n, err := q.deadRecords(context.Background(), route)
	if err != nil {
		q.warn("count dead letters", err)
	}
	return n
}

// deadRecordsHeader holds a dead letter's number of records.
const deadRecordsHeader = "Fleetrelay-Records"

func (q *Queues) deadRecords(ctx context.Context, route uint16) (int, error) {
	n, err := q.records(ctx, DeadLetterSubject(q.c.opts.Prefix, route))
	if err != nil {
		return n, fmt.Errorf("cluster: count dead letters of route %d: %w", route, err)
	}
	return n, nil
}

// DiscardRoute marks every record handed out on this node and not done for route done,
// purges route's dead letters, and leaves route out of what this node hands out until
// ReviveRoute (records left out are reported to late, nil: not reported). It returns the
// records discarded and the dead letters purged.
func (q *Queues) DiscardRoute(route uint16, late func(records int)) (records, deadLetters int, err error) {
	if late == nil {
		late = func(int) {}
	}
	q.mu.Lock()
	q.discarded[route] = late
	var pos []uint32
	for _, h := range q.order {
		if h.gone || h.run.ended {
			continue
		}
		pos = undonePositions(h, route, pos[:0])
		for _, p := range pos {
			fi, r, _ := h.seg.Locate(p)
			q.markLocked(h, fi, r, route)
		}
		records += len(pos)
	}
	q.mu.Unlock()
	subj := DeadLetterSubject(q.c.opts.Prefix, route)
	n := q.DeadLetterCount(route)
	_, err = retry(context.Background(), func(ctx context.Context) (struct{}, error) {
		if err := q.dlq.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, q.dlq.Purge(ctx, jetstream.WithPurgeSubject(ReplaySubject(q.c.opts.Prefix, route)))
	})
	if err != nil {
		return records, 0, fmt.Errorf("cluster: discard route %d: purge dead letters: %w", route, err)
	}
	return records, n, nil
}

// ReviveRoute ends DiscardRoute's leaving route out.
func (q *Queues) ReviveRoute(route uint16) {
	q.mu.Lock()
	delete(q.discarded, route)
	q.mu.Unlock()
}

// queueMetrics are the partitions' metrics on this node.
type queueMetrics struct {
	owned       *prometheus.GaugeVec
	pending     *prometheus.GaugeVec
	ackPending  *prometheus.GaugeVec
	redelivered *prometheus.CounterVec
	moves       prometheus.Counter
}

func newQueueMetrics() queueMetrics {
	part := []string{"partition"}
	return queueMetrics{
		owned: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetrelay_cluster_partition_owned",
			Help: "1 for each journal partition this node owns."}, part),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetrelay_cluster_partition_pending",
			Help: "Journal messages of the partition after its cursor (not yet done by every route), on its owner."}, part),
		ackPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fleetrelay_cluster_partition_ack_pending",
			Help: "Records of the partition handed to the routes and not done yet, per route, on its owner."}, part),
		redelivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetrelay_cluster_partition_redelivered_total",
			Help: "Journal messages of the partition handed out again by this node after taking it over (at least once)."}, part),
		moves: prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetrelay_cluster_partition_moves_total",
			Help: "Partitions this node took (at start, after a release or after their owner's loss)."}),
	}
}

// Collectors returns the partitions' metrics for the relay's registry.
func (q *Queues) Collectors() []prometheus.Collector {
	m := q.metrics
	return []prometheus.Collector{m.owned, m.pending, m.ackPending, m.redelivered, m.moves}
}
