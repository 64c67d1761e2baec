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
// the publish, that is once a quorum of the stream's replicas has it.
//
// One device, one publish at a time. The frames of a device (DATA, windowed DATA, results: all
// on its subject) wait in a queue of its own and go out one by one, each as the previous one's
// acknowledgement arrives, each with Nats-Expected-Last-Subject-Sequence set to the stream
// sequence of the subject's last message: the one the previous acknowledgement named (a
// duplicate's names the original), or, for a device this node has not published for, the one
// LoadLastSeq read or the stream's leader answers (learn). JetStream stores a frame only if
// nothing else landed on the subject meanwhile, so a device's DATA frames are on its subject in
// the order of its chain (store.Frame.PrevSeq), with no hole, by construction: a frame whose
// predecessor was not stored is refused (store.ErrGap) before it is published, and a frame
// refused for a wrong last sequence (another node published for the device, or a publish of
// ours thought lost landed late) is published again only if what landed is no DATA frame
// beyond the device's lastSeq — else it is refused too. Devices publish in parallel (up to
// MaxPending frames on their way in all); notifications, on a subject of their own, are
// published as they come. One goroutine (the completer) takes the frames appended, the
// acknowledgements and what was learned, publishes, and calls the done callbacks: a device's
// outcomes come in the order its frames were appended. Device state (lastSeq, the UDP window,
// the subject's last sequence) lives in memory (devices.go), the route IDs in a bucket
// (routeids.go).

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
	js     jetstream.JetStream // the journal's own: its bound, timeout and handlers of async publishes
	stream jetstream.Stream
	name   string
	prefix string
	parts  int
	node   string
	log    *slog.Logger

	devicesKV jetstream.KeyValue
	routesKV  jetstream.KeyValue

	slots   chan struct{} // a token per frame appended and not answered (MaxPending)
	events  chan event    // to the completer; never full: one event at most per slot
	pending sync.Map      // *nats.Msg on its way → *entry

	closeMu sync.RWMutex // Append holds it shared while it enqueues; Close exclusively to close
	closed  bool
	closing chan struct{}
	once    sync.Once
	calls   sync.WaitGroup // accepted frames whose done is not called yet
	quit    chan struct{}  // stops the completer, once every frame is answered
	done    chan struct{}  // the completer ended
	stop    chan struct{}  // the flusher's last pass
	wg      sync.WaitGroup // the flusher and the learners

	failing atomic.Bool // the last publish answered failed for want of JetStream

	devs   devices // devices.go
	routes routeIDs
}

// entry is one appended frame on its way.
type entry struct {
	f     *store.Frame
	done  func(error)
	d     *devState // the device's state (nil for a notification): kept while the entry is on its way
	tries int       // publishes refused for a wrong last sequence
}

// event is what the completer takes: a frame appended, a publish answered, or what the stream's
// leader said of a device's subject.
type event struct {
	kind eventKind
	e    *entry
	ack  *jetstream.PubAck // published, err nil
	err  error
	seq  uint64 // learned: the subject's last stream sequence, 0: none
	last uint64 // learned: the device's lastSeq that message says
}

type eventKind uint8

const (
	appended eventKind = iota
	published
	learned
)

// maxTries bounds the publishes of one frame refused for a wrong last sequence while the
// device's lastSeq did not move (another node's result, a concurrent publish still in process).
const maxTries = 4

// OpenJournal creates or updates the journal's stream (file storage, the Conn's replicas,
// subjects <prefix>.j.>, the duplicate window, the partitions in its metadata) and the buckets
// devices and routes, and starts the journal.
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
	j := &Journal{c: c, name: JournalStream(c.opts.Prefix), prefix: c.opts.Prefix, parts: o.Partitions,
		node: o.Node, log: o.Logger.With("component", "journal"),
		slots: make(chan struct{}, o.MaxPending), events: make(chan event, o.MaxPending),
		closing: make(chan struct{}), quit: make(chan struct{}), done: make(chan struct{}), stop: make(chan struct{})}
	js, err := jetstream.New(c.nc,
		// Room for every frame on its way: a publish never stalls in the client.
		jetstream.WithPublishAsyncMaxPending(o.MaxPending+16),
		jetstream.WithPublishAsyncTimeout(ackTimeout),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
			j.answered(m, ack, nil)
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			j.answered(m, nil, err)
		}))
	if err != nil {
		return nil, fmt.Errorf("cluster: JetStream: %w", err)
	}
	j.js = js
	name := j.name
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
		Metadata:    map[string]string{metaPartitions: strconv.Itoa(o.Partitions)},
	}
	if st, err = retry(ctx, func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, cfg)
	}); err != nil {
		return nil, fmt.Errorf("cluster: journal stream %s: %w", name, err)
	}
	j.stream = st
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
	if j.devicesKV, err = bucket(BucketDevices, "fleetrelay: each device's lastSeq"); err != nil {
		return nil, err
	}
	if j.routesKV, err = bucket(BucketRoutes, "fleetrelay: the cluster's route IDs"); err != nil {
		return nil, err
	}
	j.devs.init()
	go j.complete()
	j.wg.Add(1)
	go j.flushLoop()
	return j, nil
}

// Partitions returns the journal's number of partitions.
func (j *Journal) Partitions() int { return j.parts }

// Append publishes f to the journal and calls done once: nil after JetStream acknowledged it
// (a duplicate's acknowledgement counts: that frame is stored), or the error — store.ErrGap
// for a DATA frame whose predecessor (Frame.PrevSeq) was not stored, or that another node's
// frames of the device overtook, store.ErrUnavailable while JetStream cannot store
// (unreachable, no answer within a few seconds), store.ErrClosed after Close (synchronously).
// Every frame is published, with or without routes and records, except a DATA frame at or below
// the device's lastSeq: that one is stored already, and answered nil at once. done runs on the
// journal's goroutine, in the order of Append for one device; it must not block and must not
// call Append or Close. Append waits while MaxPending frames are unanswered, at most a few
// seconds. The journal owns f from now on.
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
	if !f.Notice {
		dv := &j.devs
		dv.mu.Lock()
		e.d, _ = dv.stateLocked(f.Device)
		e.d.inflight++
		e.d.touched = time.Now().UnixNano()
		dv.mu.Unlock()
	}
	j.events <- event{kind: appended, e: e} // never blocks: as many places as slots
	j.closeMu.RUnlock()
}

// answered passes a publish's answer to the completer (the client's handlers: it must not
// block).
func (j *Journal) answered(m *nats.Msg, ack *jetstream.PubAck, err error) {
	v, ok := j.pending.LoadAndDelete(m)
	if !ok {
		return
	}
	j.events <- event{kind: published, e: v.(*entry), ack: ack, err: err}
}

// complete is the completer: it takes the events until Close.
func (j *Journal) complete() {
	defer close(j.done)
	for {
		select {
		case ev := <-j.events:
			switch ev.kind {
			case appended:
				j.appended(ev.e)
			case published:
				j.published(ev.e, ev.ack, ev.err)
			case learned:
				j.learned(ev)
			}
		case <-j.quit:
			return
		}
	}
}

// appended queues a device's frame, or publishes a notification.
func (j *Journal) appended(e *entry) {
	if e.f.Notice {
		j.send(e, nil)
		return
	}
	d := e.d
	dv := &j.devs
	dv.mu.Lock()
	d.queue = append(d.queue, e)
	start := !d.busy
	d.busy = true
	dv.mu.Unlock()
	if start {
		j.next(d)
	}
}

// next takes d's frames in order until one is on its way (a publish, or the stream's leader
// asked for the subject's last message), answering at once those that need no publish.
func (j *Journal) next(d *devState) {
	dv := &j.devs
	for {
		dv.mu.Lock()
		if len(d.queue) == 0 {
			d.busy = false
			dv.mu.Unlock()
			return
		}
		e := d.queue[0]
		f := e.f
		var out error
		switch {
		case sequenced(f) && !f.Window && f.Seq <= d.last:
			// Stored already: the subject holds the device's chain up to d.last. (A resend
			// after a WELCOME another node's lastSeq was behind; published, it could land
			// after the duplicate window.)
		case chained(f) && f.PrevSeq != d.last:
			out = fmt.Errorf("%w: device %q seq %d follows %d, stored %d", store.ErrGap, f.Device, f.Seq, f.PrevSeq, d.last)
		case !d.expKnown:
			dv.mu.Unlock()
			j.wg.Add(1)
			go j.learn(e)
			return
		default:
			hdr := nats.Header{}
			hdr.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(d.exp, 10))
			if f.Result {
				hdr.Set(LastSeqHeader, strconv.FormatUint(d.last, 10))
			}
			dv.mu.Unlock()
			j.send(e, hdr)
			return
		}
		d.pop()
		dv.mu.Unlock()
		j.answer(e, out)
	}
}

// send publishes e's frame asynchronously with hdr (and its msg ID); a publish that fails at
// once is answered at once.
func (j *Journal) send(e *entry, hdr nats.Header) {
	f := e.f
	if hdr == nil {
		hdr = nats.Header{}
	}
	if id := MsgID(f); id != "" {
		hdr.Set(jetstream.MsgIDHeader, id)
	}
	m := &nats.Msg{Subject: JournalSubject(j.prefix, f, j.parts), Data: EncodeFrame(nil, f), Header: hdr}
	j.pending.Store(m, e) // before: the answer may come before PublishMsgAsync returns
	if _, err := j.js.PublishMsgAsync(m); err != nil {
		j.pending.Delete(m)
		j.published(e, nil, err)
	}
}

// published takes the answer of e's publish.
func (j *Journal) published(e *entry, ack *jetstream.PubAck, err error) {
	f := e.f
	if f.Notice {
		j.answer(e, j.outcome(f, err))
		return
	}
	d := e.d
	dv := &j.devs
	dv.mu.Lock()
	switch {
	case err == nil:
		if ack.Duplicate {
			// The original's sequence: the subject's last is that or a later one.
			d.exp = max(d.exp, ack.Sequence)
		} else {
			d.exp = ack.Sequence
		}
		d.expKnown = true
		if sequenced(f) {
			dv.storedLocked(f, d)
		}
	case wrongLast(err) && e.tries < maxTries:
		// Something else is on the subject: learn what, then decide again (next).
		e.tries++
		d.expKnown = false
		dv.mu.Unlock()
		j.next(d)
		return
	case wrongLast(err):
		d.expKnown = false
		err = fmt.Errorf("%w: %w", store.ErrGap, err)
	default:
		d.expKnown = false // it may have landed all the same
	}
	d.pop()
	dv.mu.Unlock()
	j.answer(e, j.outcome(f, err))
	j.next(d)
}

// learn asks the stream's leader for the last message on the subject of e's device (the
// learner: a goroutine of its own, answering the completer).
func (j *Journal) learn(e *entry) {
	defer j.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	seq, last, err := j.lastOnSubject(ctx, e.f.Device)
	cancel()
	j.events <- event{kind: learned, e: e, seq: seq, last: last, err: err}
}

// learned takes what the leader said of the subject of ev.e's device, and goes on with it.
func (j *Journal) learned(ev event) {
	e, d := ev.e, ev.e.d
	dv := &j.devs
	if ev.err != nil {
		dv.mu.Lock()
		d.pop()
		dv.mu.Unlock()
		j.answer(e, j.outcome(e.f, ev.err))
		j.next(d)
		return
	}
	dv.mu.Lock()
	d.exp, d.expKnown = ev.seq, true
	dv.raiseLocked(d, ev.last)
	dv.mu.Unlock()
	j.next(d)
}

// answer calls e's done with out.
func (j *Journal) answer(e *entry, out error) {
	if e.d != nil {
		j.devs.mu.Lock()
		e.d.inflight--
		j.devs.mu.Unlock()
	}
	<-j.slots
	if e.done != nil {
		e.done(out)
	}
	j.calls.Done()
}

// errCodeDuplicateInProcess is nats-server's "duplicate message id is in process": a frame of
// the same msg ID, another node's, is being stored (a replicated stream).
const errCodeDuplicateInProcess jetstream.ErrorCode = 10158

// wrongLast tells a publish refused because the subject's last message is not the one
// expected, or because another one on the subject, or of the same msg ID, is being stored (a
// replicated stream): nothing was stored.
func wrongLast(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant ||
		apiErr.ErrorCode == errCodeDuplicateInProcess)
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
		return fmt.Errorf("cluster: publish %s seq %d: %w", f.Device, f.Seq, err)
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
	return transient(err) || errors.Is(err, store.ErrUnavailable) ||
		errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrTooManyStalledMsgs) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionDraining) ||
		errors.Is(err, nats.ErrReconnectBufExceeded)
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
		j.calls.Wait()
		close(j.quit)
		<-j.done
		close(j.stop)
		j.wg.Wait()
	})
	return err
}
