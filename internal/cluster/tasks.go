package cluster

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetrelay/fleetrelay/internal/store"
	"github.com/fleetrelay/fleetrelay/internal/tasks"
)

// The commands (tasks) of every node of a prefix: one key-value bucket, <prefix>_tasks (file
// storage, the Conn's replicas, one revision a key), which every node loads at start and then
// watches, so that each node holds every task in memory (internal/tasks) and hears the others'
// writes in the bucket's order.
//
//   - t.<device>.<id>: a task, its JSON as internal/tasks writes it. Written whole: created
//     (before the API answers: a Put acknowledged once replicated), then its state changes,
//     written behind by the node that made them; last writer wins, and tasks.Manager's merge
//     makes that safe (a node never writes a task backwards, and writes its own version again
//     when it hears one behind it).
//   - n.<device>: the device's task counter, the highest id given (a decimal). A new id is the
//     counter's increment written with the revision it was read at (compare and set), so two
//     nodes creating tasks for one device at once never give one id twice; the counter is never
//     deleted, so neither does a task deleted long ago give its id again.
//
// <device> is the identity when it is made of letters, digits, - and _ only (1 to 128), else
// "=" and its bytes in hex: key tokens take no '.', '*', '>' or white space (and, unlike the
// journal's subjects, no '~').
//
// Deleting a task (its retention passed; every node prunes, idempotently) purges its key: a
// purge marker the other nodes' watchers hear, which JetStream itself removes after markerTTL,
// so deleted tasks leave nothing behind for good.

// BucketTasks is the tasks' key-value bucket (Bucket).
const BucketTasks = "tasks"

// markerTTL is how long a deleted task's purge marker stays in the bucket: long enough for every
// node following the bucket to hear it; a node started later loads the bucket without the key.
const markerTTL = time.Hour

// writers bounds the writes of one batch in flight at once.
const writers = 16

// TasksBackend is the tasks.Shared backend on JetStream. Open it with OpenTasks. Close stops
// following the bucket (before the device actors stop, or after the tasks.Manager over it);
// writes work until the Conn closes, so the manager's last flush may come after Close. Its
// methods are safe for concurrent use.
type TasksBackend struct {
	c  *Conn
	kv jetstream.KeyValue

	// The bucket's watch, used by Load, then by the follower's goroutine only (or Close's, if
	// nothing follows): w, the end of its context, the last revision it delivered.
	w       jetstream.KeyWatcher
	unwatch context.CancelFunc
	seen    uint64

	mu       sync.Mutex
	counters map[string]counter // by key: what this node last heard or wrote of each counter

	follow  sync.Once
	stopped sync.Once
	stop    chan struct{}
	ctx     context.Context // ended by Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

type counter struct{ last, rev uint64 }

var _ tasks.Shared = (*TasksBackend)(nil)

// OpenTasks creates the tasks' bucket if it does not exist (or updates its replicas) and starts
// watching it; Load reads what it holds, Follow what comes after.
func (c *Conn) OpenTasks(ctx context.Context) (*TasksBackend, error) {
	cfg := jetstream.KeyValueConfig{
		Bucket:         Bucket(c.opts.Prefix, BucketTasks),
		Description:    "fleetrelay commands to devices: tasks and each device's task counter",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       c.opts.Replicas,
		LimitMarkerTTL: markerTTL,
	}
	kv, err := retry(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
		return c.js.CreateOrUpdateKeyValue(ctx, cfg)
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: tasks bucket %s: %w", cfg.Bucket, err)
	}
	b := &TasksBackend{c: c, kv: kv, counters: make(map[string]counter), stop: make(chan struct{})}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if err := b.watch(ctx, 0); err != nil {
		b.cancel()
		return nil, fmt.Errorf("cluster: watch tasks bucket %s: %w", cfg.Bucket, err)
	}
	return b, nil
}

// watch starts the bucket's watch: every key's last value, then every write; with from, every
// write from that revision on.
func (b *TasksBackend) watch(ctx context.Context, from uint64) error {
	type watch struct {
		w      jetstream.KeyWatcher
		cancel context.CancelFunc
	}
	var opts []jetstream.WatchOpt
	if from > 0 {
		opts = append(opts, jetstream.IncludeHistory(), jetstream.ResumeFromRevision(from))
	}
	// The watch's context lasts as long as the watch (nats.go unsubscribes when it ends), until
	// unwatch; an attempt that outlasts its time ends it.
	wa, err := retry(ctx, func(actx context.Context) (watch, error) {
		wctx, cancel := context.WithCancel(context.Background())
		stop := context.AfterFunc(actx, cancel)
		w, err := b.kv.WatchAll(wctx, opts...)
		if err == nil && !stop() {
			err = actx.Err()
		}
		if err != nil {
			cancel()
			return watch{}, err
		}
		return watch{w, cancel}, nil
	})
	if err != nil {
		return err
	}
	b.w, b.unwatch = wa.w, wa.cancel
	return nil
}

// endWatch stops the watch and waits until its channel is closed.
func (b *TasksBackend) endWatch() {
	if _, ok := b.w.(closedWatch); ok {
		return
	}
	if err := b.w.Stop(); err != nil && !errors.Is(err, nats.ErrBadSubscription) {
		b.c.log.Warn("tasks: stop watching the bucket", "err", err)
	}
	b.unwatch()
	for range b.w.Updates() { // its delivery may wait on the channel
	}
}

// Load calls fn with every task and counter the bucket holds: the watch's initial values.
func (b *TasksBackend) Load(ctx context.Context, fn func(key, value []byte) error) error {
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case e, ok = <-b.w.Updates():
		case <-ctx.Done():
			return fmt.Errorf("cluster: load tasks: %w", ctx.Err())
		}
		if !ok {
			return errors.New("cluster: load tasks: the bucket's watch stopped")
		}
		if e == nil { // the initial values are all in
			return nil
		}
		b.seen = max(b.seen, e.Revision())
		k, v, ok := b.entry(e)
		if ok && v != nil {
			if err := fn(k, v); err != nil {
				return err
			}
		}
	}
}

// checkEvery is how often the follower compares the bucket's last revision with the last one
// its watch delivered. The watch is an ordered consumer, whose server may be the NATS node
// that was lost: nats.go notices by missed heartbeats after ≈20 s. A watch found behind the
// bucket at two checks in a row, without delivering anything in between, is renewed from the
// revision after the last one it delivered.
const checkEvery = time.Second

// Follow calls apply with every write after Load, from one goroutine, until Close.
func (b *TasksBackend) Follow(apply func(key, value []byte)) {
	b.follow.Do(func() {
		b.wg.Add(1)
		go b.run(apply)
	})
}

func (b *TasksBackend) run(apply func(key, value []byte)) {
	defer b.wg.Done()
	t := time.NewTicker(checkEvery)
	defer t.Stop()
	var behind uint64 // what the watch had delivered at the last check that found it behind; 0: none
	for {
		select {
		case <-b.stop:
			b.endWatch()
			return
		case e, ok := <-b.w.Updates():
			switch {
			case !ok: // ended by nats.go: renewed once the bucket is found ahead of it
				b.unwatch()
				b.w = closedWatch{}
			case e != nil:
				b.seen = max(b.seen, e.Revision())
				if k, v, ok := b.entry(e); ok {
					apply(k, v)
				}
			}
		case <-t.C:
			last, err := b.lastRevision()
			switch {
			case err != nil || last <= b.seen:
				behind = 0
			case behind == 0 || behind != b.seen:
				behind = b.seen
			default:
				began := time.Now()
				b.endWatch()
				b.w = closedWatch{}
				if err := b.watch(b.ctx, b.seen+1); err != nil {
					b.c.log.Warn("tasks: renew the bucket's watch; tried again", "err", err)
				} else {
					b.c.log.Warn("tasks: the bucket's watch fell behind; renewed", "delivered", b.seen, "bucket", last,
						"took", time.Since(began))
				}
				behind = 0
			}
		}
	}
}

// lastRevision is the bucket's last revision (its stream's last sequence).
func (b *TasksBackend) lastRevision() (uint64, error) {
	ctx, cancel := context.WithTimeout(b.ctx, attemptTimeout)
	defer cancel()
	st, err := b.kv.Status(ctx)
	if err != nil {
		return 0, err
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return 0, fmt.Errorf("bucket status %T", st)
	}
	return bs.StreamInfo().State.LastSeq, nil
}

// Close stops following the bucket. Writes still work until the Conn closes (the manager's last
// flush comes after).
func (b *TasksBackend) Close() error {
	b.stopped.Do(func() {
		close(b.stop)
		b.cancel()
		b.follow.Do(b.endWatch) // nobody follows
		b.wg.Wait()
	})
	return nil
}

// closedWatch stands for a watch that ended until the follower renews it.
type closedWatch struct{}

func (closedWatch) Updates() <-chan jetstream.KeyValueEntry { return nil }
func (closedWatch) Stop() error                             { return nil }

// entry translates a bucket entry into the manager's key and value (nil: deleted); a counter is
// noted first. ok is false for a key that is not one of the tasks'.
func (b *TasksBackend) entry(e jetstream.KeyValueEntry) (key, value []byte, ok bool) {
	if e == nil {
		return nil, nil, false
	}
	deleted := e.Operation() != jetstream.KeyValuePut
	kind, rest, _ := strings.Cut(e.Key(), ".")
	switch kind {
	case "n":
		dev, ok := tokenDevice(rest)
		if !ok || deleted {
			return nil, nil, false
		}
		last, err := strconv.ParseUint(string(e.Value()), 10, 64)
		if err != nil {
			return nil, nil, false
		}
		b.noteCounter(e.Key(), counter{last: last, rev: e.Revision()})
		return []byte("last/" + dev), e.Value(), true
	case "t":
		tok, idText, _ := strings.Cut(rest, ".")
		dev, ok := tokenDevice(tok)
		id, err := strconv.ParseUint(idText, 10, 64)
		if !ok || err != nil {
			return nil, nil, false
		}
		k := fmt.Appendf(nil, "task/%s/%020d", dev, id)
		if deleted {
			return k, nil, true
		}
		return k, e.Value(), true
	}
	return nil, nil, false
}

func (b *TasksBackend) noteCounter(key string, c counter) {
	b.mu.Lock()
	if c.rev > b.counters[key].rev {
		b.counters[key] = c
	}
	b.mu.Unlock()
}

// Write writes ops, several at once (at most writers in flight), each tried again while the
// cluster cannot answer (retry); it returns once every one is acknowledged — replicated — or
// with the first error, once the ops under way gave up (a batch fails as soon as one op does:
// its caller writes it again later). A nil Value purges the task's key.
func (b *TasksBackend) Write(ctx context.Context, ops []store.RegistryOp) error {
	if len(ops) == 1 {
		return b.write(ctx, ops[0])
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg   sync.WaitGroup
		slot = make(chan struct{}, writers)
	)
	for _, op := range ops {
		slot <- struct{}{}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slot }()
			if err := b.write(ctx, op); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

func (b *TasksBackend) write(ctx context.Context, op store.RegistryOp) error {
	if op.Kind != "task" {
		return nil // "last": the counter keeps it
	}
	i := strings.LastIndexByte(op.ID, '/')
	id, err := strconv.ParseUint(op.ID[i+1:], 10, 64)
	if i < 0 || err != nil {
		return fmt.Errorf("cluster: task key %q", op.ID)
	}
	key := "t." + deviceToken(op.ID[:i]) + "." + strconv.FormatUint(id, 10)
	if op.Value == nil {
		_, err = retry(ctx, func(ctx context.Context) (struct{}, error) {
			return struct{}{}, b.kv.Purge(ctx, key, jetstream.PurgeTTL(markerTTL))
		})
	} else {
		_, err = retry(ctx, func(ctx context.Context) (uint64, error) { return b.kv.Put(ctx, key, op.Value) })
	}
	if err != nil {
		return fmt.Errorf("cluster: write task %s: %w", key, err)
	}
	return nil
}

// Seed carries one device's tasks from one-node mode into the bucket — ops as a store holds
// them (kind "task", ID "<device>/<id>"), last its highest id given — unless the bucket has the
// device's counter: then the cluster knows the device and keeps its own tasks. The tasks are
// written first, the counter created last, so that a seed cut short (a crash, an answer lost)
// is done again whole at the next start. It reports whether it seeded the device.
func (b *TasksBackend) Seed(ctx context.Context, device string, last uint64, ops []store.RegistryOp) (bool, error) {
	key := "n." + deviceToken(device)
	_, err := retry(ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) { return b.kv.Get(ctx, key) })
	switch {
	case err == nil:
		return false, nil
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return false, fmt.Errorf("cluster: task counter %s: %w", key, err)
	}
	if err := b.Write(ctx, ops); err != nil {
		return false, err
	}
	rev, err := retry(ctx, func(ctx context.Context) (uint64, error) {
		return b.kv.Create(ctx, key, strconv.AppendUint(nil, last, 10))
	})
	if errors.Is(err, jetstream.ErrKeyExists) {
		// This attempt's answer lost after it was made, or another relay gave the device a task
		// meanwhile (whose id may then be one of the seeded ones).
		b.c.log.Warn("tasks: the device's task counter was made while its one-node tasks were seeded", "device", device)
		return true, nil
	}
	if err != nil {
		return true, fmt.Errorf("cluster: task counter %s: %w", key, err)
	}
	b.noteCounter(key, counter{last: last, rev: rev})
	return true, nil
}

// NextID increments device's counter from what this node last knew of it, with the revision it
// knew (compare and set), reading the counter again when another node moved it first.
func (b *TasksBackend) NextID(ctx context.Context, device string, after uint64) (uint64, error) {
	key := "n." + deviceToken(device)
	b.mu.Lock()
	c := b.counters[key]
	b.mu.Unlock()
	for {
		next := max(c.last, after) + 1
		rev, err := retry(ctx, func(ctx context.Context) (uint64, error) {
			return b.kv.Update(ctx, key, strconv.AppendUint(nil, next, 10), c.rev)
		})
		if err == nil {
			b.noteCounter(key, counter{last: next, rev: rev})
			return next, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("cluster: task counter %s: %w", key, err)
		}
		e, err := retry(ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) { return b.kv.Get(ctx, key) })
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			c = counter{}
		case err != nil:
			return 0, fmt.Errorf("cluster: task counter %s: %w", key, err)
		default:
			last, err := strconv.ParseUint(string(e.Value()), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cluster: task counter %s: %q: %w", key, e.Value(), err)
			}
			c = counter{last: last, rev: e.Revision()}
			b.noteCounter(key, c)
		}
	}
}

// deviceToken is device's key token: itself when safeToken, else "=" and its bytes in hex.
func deviceToken(device string) string {
	if safeToken(device) {
		return device
	}
	return "=" + hex.EncodeToString([]byte(device))
}

// tokenDevice is deviceToken's inverse.
func tokenDevice(tok string) (string, bool) {
	h, ok := strings.CutPrefix(tok, "=")
	if !ok {
		return tok, safeToken(tok)
	}
	b, err := hex.DecodeString(h)
	return string(b), err == nil && len(b) > 0
}
