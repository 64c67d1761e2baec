package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

// The journal's ingest side: every frame a node's devices send is published to the journal
// stream (wire.go's layout) and its writer is told it is stored only once JetStream acknowledged
// the publish, that is once a quorum of the stream's replicas has it. Publishes are pipelined
// (asynchronous, a bounded number in flight); one goroutine takes their acknowledgements in the
// order of Append and calls the done callbacks, so a device's outcomes come in the order its
// frames were appended, and a frame whose predecessor failed is refused (store.ErrGap) as the
// store refuses it. Device state (lastSeq, the UDP window) lives in memory (devices.go), the
// route IDs in a bucket (routeids.go).

// JournalOptions configure a node's journal.
type JournalOptions struct {
	// Partitions of the journal (wire.go); 0: DefaultPartitions. It is fixed when the stream is
	// created: opening an existing journal of another number is an error.
	Partitions int
	// Node names this relay node in what it writes to the devices bucket.
	Node string
	// Duplicates is JetStream's duplicate window: a DATA frame resent within it is answered
	// as a duplicate and stored once. 0: 10 minutes. At most MaxAge.
	Duplicates time.Duration
	// MaxAge is the stream's age limit: older messages are removed whether delivered or not.
	// 0: none.
	MaxAge time.Duration
	// MaxPending bounds the publishes awaiting JetStream's answer; Append waits beyond it.
	// 0: 4096.
	MaxPending int
	Logger     *slog.Logger
}

// ackTimeout bounds the wait for one publish's acknowledgement: a frame JetStream did not
// acknowledge by then is refused (store.ErrUnavailable) and the device sends it again. A few
// seconds: a stream's new leader is elected within that after a NATS node's loss.
const ackTimeout = 4 * time.Second

// Journal is a node's side of the cluster's journal: Append, the devices' lastSeq and the route
// IDs. Its methods are safe for concurrent use; LastSeq, DeliveredSeq, WindowSeq, Forget and
// Known never wait for the network. Close it before its Conn.
type Journal struct {
	c      *Conn
	js     jetstream.JetStream // the journal's own: its bound and timeout of async publishes
	stream jetstream.Stream
	name   string
	prefix string
	parts  int
	node   string
	log    *slog.Logger

	devicesKV jetstream.KeyValue
	routesKV  jetstream.KeyValue

	slots   chan struct{} // a token per publish in flight (MaxPending)
	queue   chan *entry   // appended frames, in order, to the completer
	markers chan *marker  // to the marker goroutine (devices.go)

	closeMu sync.RWMutex // Append holds it shared while it enqueues; Close exclusively to close
	closed  bool
	closing chan struct{}
	once    sync.Once
	calls   sync.WaitGroup // accepted frames whose done is not called yet
	done    chan struct{}  // the completer ended
	stop    chan struct{}  // closed once every callback was called: the flusher's last pass
	wg      sync.WaitGroup // the marker goroutine and the flusher

	failing atomic.Bool // the last publish answered failed for want of JetStream

	devs   devices // devices.go
	routes routeIDs
}

// entry is one appended frame on its way.
type entry struct {
	f    *store.Frame
	done func(error)
	paf  jetstream.PubAckFuture // nil: not published (err says why)
	err  error
}

// OpenJournal creates or updates the journal's stream (file storage, the Conn's replicas,
// subjects <prefix>.j.>, the duplicate window, direct gets for the last message of a device,
// the partitions in its metadata) and the buckets devices and routes, and starts the journal.
func (c *Conn) OpenJournal(ctx context.Context, o JournalOptions) (*Journal, error) {
	if o.Partitions == 0 {
		o.Partitions = DefaultPartitions
	}
	if o.Partitions < 1 {
		return nil, fmt.Errorf("cluster: journal partitions %d", o.Partitions)
	}
	if o.Duplicates <= 0 {
		o.Duplicates = 10 * time.Minute
	}
	if o.MaxAge > 0 && o.Duplicates > o.MaxAge {
		o.Duplicates = o.MaxAge // JetStream refuses a duplicate window beyond the age limit
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 4096
	}
	if o.Logger == nil {
		o.Logger = c.log
	}
	js, err := jetstream.New(c.nc,
		// Markers (devices.go) are published beside the frames: room for them too, so that a
		// publish never stalls in the client.
		jetstream.WithPublishAsyncMaxPending(2*o.MaxPending+16),
		jetstream.WithPublishAsyncTimeout(ackTimeout))
	if err != nil {
		return nil, fmt.Errorf("cluster: JetStream: %w", err)
	}
	name := JournalStream(c.opts.Prefix)
	st, err := retry(ctx, func(ctx context.Context) (jetstream.Stream, error) { return js.Stream(ctx, name) })
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return nil, fmt.Errorf("cluster: journal stream %s: %w", name, err)
	default:
		if v, ok := st.CachedInfo().Config.Metadata[metaPartitions]; ok && v != strconv.Itoa(o.Partitions) {
			return nil, fmt.Errorf("cluster: journal stream %s has %s partitions, configured %d", name, v, o.Partitions)
		}
	}
	cfg := jetstream.StreamConfig{
		Name:        name,
		Description: "fleetrelay journal: the devices' frames",
		Subjects:    []string{c.opts.Prefix + ".j.>"},
		Storage:     jetstream.FileStorage,
		Replicas:    c.opts.Replicas,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      o.MaxAge,
		Duplicates:  o.Duplicates,
		AllowDirect: true,
		Metadata:    map[string]string{metaPartitions: strconv.Itoa(o.Partitions)},
	}
	if st, err = retry(ctx, func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, cfg)
	}); err != nil {
		return nil, fmt.Errorf("cluster: journal stream %s: %w", name, err)
	}
	bucket := func(what, desc string) (jetstream.KeyValue, error) {
		kcfg := jetstream.KeyValueConfig{Bucket: Bucket(c.opts.Prefix, what), Description: desc,
			Storage: jetstream.FileStorage, Replicas: c.opts.Replicas}
		kv, err := retry(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
			return js.CreateOrUpdateKeyValue(ctx, kcfg)
		})
		if err != nil {
			return nil, fmt.Errorf("cluster: bucket %s: %w", kcfg.Bucket, err)
		}
		return kv, nil
	}
	j := &Journal{c: c, js: js, stream: st, name: name, prefix: c.opts.Prefix, parts: o.Partitions,
		node: o.Node, log: o.Logger.With("component", "journal"),
		slots: make(chan struct{}, o.MaxPending), queue: make(chan *entry, o.MaxPending),
		markers: make(chan *marker, o.MaxPending), closing: make(chan struct{}), done: make(chan struct{}), stop: make(chan struct{})}
	if j.devicesKV, err = bucket(BucketDevices, "fleetrelay: each device's lastSeq"); err != nil {
		return nil, err
	}
	if j.routesKV, err = bucket(BucketRoutes, "fleetrelay: the cluster's route IDs"); err != nil {
		return nil, err
	}
	j.devs.init()
	go j.complete()
	j.wg.Add(2)
	go j.markLoop()
	go j.flushLoop()
	return j, nil
}

// Partitions returns the journal's number of partitions.
func (j *Journal) Partitions() int { return j.parts }

// Append publishes f to the journal and calls done once: nil after JetStream acknowledged it
// (a duplicate's acknowledgement counts: that frame is stored), or the error — store.ErrGap
// for a DATA frame whose predecessor (Frame.PrevSeq) was not stored, store.ErrUnavailable while
// JetStream cannot store (unreachable, no answer within a few seconds), store.ErrClosed after
// Close (synchronously). Every frame is published, with or without routes and records: a DATA
// frame's seq counts for LastSeq. done runs on the journal's goroutine, in the order of Append
// for one device; it must not block and must not call Append or Close. Append waits while
// MaxPending publishes are unanswered, at most a few seconds. The journal owns f from now on.
func (j *Journal) Append(f *store.Frame, done func(err error)) {
	select {
	case j.slots <- struct{}{}:
	case <-j.closing:
		if done != nil {
			done(store.ErrClosed)
		}
		return
	}
	j.closeMu.RLock()
	if j.closed {
		j.closeMu.RUnlock()
		<-j.slots
		if done != nil {
			done(store.ErrClosed)
		}
		return
	}
	j.calls.Add(1)
	e := &entry{f: f, done: done}
	if e.err = j.admit(f); e.err == nil {
		e.paf, e.err = j.publish(f, MsgID(f))
	}
	j.queue <- e // never blocks: as many places as slots
	j.closeMu.RUnlock()
}

// publish publishes frame f asynchronously, with msg ID id unless it is "".
func (j *Journal) publish(f *store.Frame, id string) (jetstream.PubAckFuture, error) {
	m := &nats.Msg{Subject: JournalSubject(j.prefix, f, j.parts), Data: EncodeFrame(nil, f)}
	if id != "" {
		m.Header = nats.Header{jetstream.MsgIDHeader: []string{id}}
	}
	return j.js.PublishMsgAsync(m)
}

// complete takes the answers of the publishes in the order of Append.
func (j *Journal) complete() {
	defer close(j.done)
	for e := range j.queue {
		err := e.err
		if e.paf != nil {
			// Bounded: the client answers ErrAsyncPublishTimeout after ackTimeout, and
			// ErrDisconnected at once when the connection is lost. An acknowledgement of a
			// duplicate counts: that frame is stored.
			select {
			case <-e.paf.Ok():
			case err = <-e.paf.Err():
			}
		}
		<-j.slots
		j.finish(e, err)
	}
}

// outcome maps a publish's error to what its writer is told, and notes the journal's health.
func (j *Journal) outcome(f *store.Frame, err error) error {
	if err == nil {
		if j.failing.CompareAndSwap(true, false) {
			j.log.Info("journal publishes acknowledged again")
		}
		return nil
	}
	if errors.Is(err, store.ErrGap) {
		return err
	}
	if unavailable(err) {
		if j.failing.CompareAndSwap(false, true) {
			j.log.Warn("journal publishes fail: devices are refused (ERROR 503) until JetStream answers", "err", err)
		}
		return fmt.Errorf("cluster: publish %s seq %d: %w: %w", f.Device, f.Seq, store.ErrUnavailable, err)
	}
	return fmt.Errorf("cluster: publish %s seq %d: %w", f.Device, f.Seq, err)
}

// unavailable tells the errors of a JetStream that cannot store for now.
func unavailable(err error) bool {
	return transient(err) || ambiguous(err) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrTooManyStalledMsgs) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionDraining) ||
		errors.Is(err, nats.ErrReconnectBufExceeded)
}

// ambiguous tells the errors after which a publish may have been stored all the same: its
// answer was lost, not refused.
func ambiguous(err error) bool {
	return errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrTimeout)
}

// Healthy reports whether the journal can store: connected to NATS, and the last publish
// answered was acknowledged (false from a publish that failed for want of JetStream until one
// is acknowledged again).
func (j *Journal) Healthy() bool { return j.c.Connected() && !j.failing.Load() }

// Close refuses new frames (store.ErrClosed), waits until every frame appended before got its
// answer and its done callback was called (a few seconds at most while JetStream does not
// answer), writes the devices' lastSeq to the devices bucket (a few seconds at most) and stops
// the journal's goroutines. Calls after the first return store.ErrClosed.
func (j *Journal) Close() error {
	err := store.ErrClosed
	j.once.Do(func() {
		err = nil
		close(j.closing)
		j.closeMu.Lock()
		j.closed = true
		j.closeMu.Unlock()
		close(j.queue)
		<-j.done
		close(j.markers)
		j.calls.Wait()
		close(j.stop)
		j.wg.Wait()
	})
	return err
}
