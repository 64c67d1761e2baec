package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// The registry's log: one JetStream stream, <prefix>_registry, whose messages are the
// registry's transactions — every op of one write in one message, so a write is atomic by
// construction. (JetStream's KV has no multi-key transaction; the server's atomic batch publish
// has no client API in nats.go 1.56.) Each write is published with the stream's expected last
// sequence set to the last one its node applied: a node that missed another's commit is refused
// (registry.ErrStale), catches up and stages again — optimistic concurrency over the whole log,
// which the registry's revisions need across nodes (and a control plane's write rate allows).
// A node's state is the log replayed: Load reads it all at start, Sync reads what follows.
// The log is never compacted in this slice (left: a snapshot rewritten into a KV bucket).

// RegistryBackend is the registry.Shared backend on JetStream. Open it with OpenRegistry; Close
// it before its Conn.
type RegistryBackend struct {
	c       *Conn
	stream  jetstream.Stream
	subject string
	// id tells this backend's commit notifications (committedSubject) from other nodes'.
	id string

	mu      sync.Mutex
	applied uint64 // the last sequence of the log this node holds (loaded, synced or written)

	follow sync.Once
	ctx    context.Context // ended by Close: the notification under way stops
	cancel context.CancelFunc
	stop   chan struct{}
	wake   chan struct{}
	wg     sync.WaitGroup
	sub    *nats.Subscription
}

var _ registry.Shared = (*RegistryBackend)(nil)

// RegistryStream returns the name of the registry's stream for prefix.
func RegistryStream(prefix string) string { return prefix + "_registry" }

// OpenRegistry creates the registry's stream if it does not exist (file storage, the Conn's
// replicas, no limits, no direct reads: every read goes to the stream's leader, so a node never
// reads a log shorter than one it wrote) or updates its replicas.
func (c *Conn) OpenRegistry(ctx context.Context) (*RegistryBackend, error) {
	cfg := jetstream.StreamConfig{
		Name:        RegistryStream(c.opts.Prefix),
		Description: "fleetrelay control plane: the registry's transactions",
		Subjects:    []string{c.opts.Prefix + ".registry"},
		Storage:     jetstream.FileStorage,
		Replicas:    c.opts.Replicas,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Duplicates:  2 * time.Minute,
	}
	st, err := retry(ctx, func(ctx context.Context) (jetstream.Stream, error) {
		return c.js.CreateOrUpdateStream(ctx, cfg)
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: registry stream %s: %w", cfg.Name, err)
	}
	b := &RegistryBackend{c: c, stream: st, subject: cfg.Subjects[0], id: nuid.Next(),
		stop: make(chan struct{}), wake: make(chan struct{}, 1)}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

// txOp is one op of a logged transaction.
type txOp struct {
	Kind  registry.Kind   `json:"k"`
	ID    string          `json:"i"`
	Value json.RawMessage `json:"v,omitempty"` // absent: deleted
}

func encodeTx(ops []registry.Op) ([]byte, error) {
	tx := make([]txOp, len(ops))
	for i, op := range ops {
		tx[i] = txOp{Kind: op.Kind, ID: op.ID, Value: op.Value}
	}
	return json.Marshal(tx)
}

func decodeTx(data []byte) ([]registry.Op, error) {
	var tx []txOp
	if err := json.Unmarshal(data, &tx); err != nil {
		return nil, fmt.Errorf("decode registry transaction: %w", err)
	}
	ops := make([]registry.Op, len(tx))
	for i, op := range tx {
		ops[i] = registry.Op{Kind: op.Kind, ID: op.ID}
		if len(op.Value) > 0 {
			ops[i].Value = []byte(op.Value)
		}
	}
	return ops, nil
}

// read returns the log's message seq, or ok false past its end.
func (b *RegistryBackend) read(ctx context.Context, seq uint64) (ops []registry.Op, ok bool, err error) {
	m, err := retry(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		return b.stream.GetMsg(ctx, seq)
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read registry log at %d: %w", seq, err)
	}
	ops, err = decodeTx(m.Data)
	if err != nil {
		return nil, false, fmt.Errorf("registry log at %d: %w", seq, err)
	}
	return ops, true, nil
}

// Load replays the log and hands the resulting state to fn. It reads the log through one
// ordered consumer, in batches, up to the last message the stream held when Load began (what
// came after is Sync's), rather than one request per message.
func (b *RegistryBackend) Load(ctx context.Context, fn func(kind registry.Kind, id string, value []byte) error) error {
	type key struct {
		kind registry.Kind
		id   string
	}
	state := make(map[key][]byte)
	var order []key // first-write order, so that fn sees a stable order
	b.mu.Lock()
	defer b.mu.Unlock()
	seq := b.applied
	err := b.replay(ctx, seq, func(s uint64, ops []registry.Op) {
		seq = s
		for _, op := range ops {
			k := key{op.Kind, op.ID}
			if _, seen := state[k]; !seen && op.Value != nil {
				order = append(order, k)
			}
			if op.Value == nil {
				delete(state, k)
			} else {
				state[k] = op.Value
			}
		}
	})
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	b.applied = seq
	for _, k := range order {
		if v, ok := state[k]; ok {
			if err := fn(k.kind, k.id, v); err != nil {
				return err
			}
			delete(state, k) // a key deleted and written again is in order twice
		}
	}
	return nil
}

// loadBatch is how many log messages one fetch of Load asks for.
const loadBatch = 1000

// replay calls fn with each transaction of the log after sequence from, in order, up to the
// stream's last sequence when it began.
func (b *RegistryBackend) replay(ctx context.Context, from uint64, fn func(seq uint64, ops []registry.Op)) error {
	info, err := retry(ctx, func(ctx context.Context) (*jetstream.StreamInfo, error) { return b.stream.Info(ctx) })
	if err != nil {
		return fmt.Errorf("registry log: %w", err)
	}
	last := info.State.LastSeq
	if last <= from {
		return nil
	}
	cons, err := retry(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
		return b.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from + 1})
	})
	if err != nil {
		return fmt.Errorf("registry log: consumer: %w", err)
	}
	defer func() {
		if ci := cons.CachedInfo(); ci != nil {
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = b.stream.DeleteConsumer(dctx, ci.Name)
			cancel()
		}
	}()
	seq, empty := from, 0
	for seq < last {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("registry log at %d of %d: %w", seq, last, err)
		}
		batch, err := cons.Fetch(int(min(last-seq, loadBatch)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("registry log after %d: %w", seq, err)
		}
		before := seq
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("registry log after %d: %w", seq, err)
			}
			ops, err := decodeTx(m.Data())
			if err != nil {
				return fmt.Errorf("registry log at %d: %w", meta.Sequence.Stream, err)
			}
			seq = meta.Sequence.Stream
			fn(seq, ops)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("registry log after %d: %w", seq, err)
		}
		if seq > before {
			empty = 0
		} else if empty++; empty == 3 {
			return fmt.Errorf("registry log: nothing after %d of %d in 15 s", seq, last)
		}
	}
	return nil
}

// seedChunk is how many resources one seeding transaction holds (well under NATS's 1 MB
// message limit for devices with their metadata).
const seedChunk = 500

// Seed writes ops — the resources of a relay's one-node registry, switching to cluster mode —
// as the log's first transactions, seedChunk at a time, if the log is empty; it reports
// whether it did. Call it before Load. Of relays seeding at once one wins: the others' first
// publish expects an empty log and is refused.
func (b *RegistryBackend) Seed(ctx context.Context, ops []registry.Op) (bool, error) {
	var last uint64
	for len(ops) > 0 {
		chunk := ops[:min(len(ops), seedChunk)]
		data, err := encodeTx(chunk)
		if err != nil {
			return last > 0, fmt.Errorf("cluster: %w", err)
		}
		popts := []jetstream.PublishOpt{jetstream.WithMsgID(nuid.Next()), jetstream.WithExpectStream(b.stream.CachedInfo().Config.Name),
			jetstream.WithExpectLastSequence(last)}
		ack, err := retry(ctx, func(ctx context.Context) (*jetstream.PubAck, error) {
			return b.c.js.Publish(ctx, b.subject, data, popts...)
		})
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			if last == 0 {
				return false, nil // not empty: another relay seeded it, or the cluster ran before
			}
			return true, fmt.Errorf("cluster: seeding the registry log: another write came after %d", last)
		}
		if err != nil {
			return last > 0, fmt.Errorf("cluster: seed the registry log: %w", err)
		}
		last = ack.Sequence
		ops = ops[len(chunk):]
	}
	return last > 0, nil
}

// Write publishes ops as one message. A write with a resource in it expects the log to end at
// the last sequence this node holds (else registry.ErrStale); one of outbox entries only (this
// node's own work, which no other node checks) is appended wherever the log ends; its message
// ID makes one tried again after a lost answer land once. (A resource write tried again so is
// refused as stale first — JetStream checks the expected sequence before the ID — and the
// registry then finds its own first attempt in the log: internal/DESIGN.md, "Known edge".)
func (b *RegistryBackend) Write(ctx context.Context, ops []registry.Op) error {
	data, err := encodeTx(ops)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	resources := false
	for _, op := range ops {
		resources = resources || op.Kind != "outbox"
	}
	b.mu.Lock()
	applied := b.applied
	b.mu.Unlock()
	popts := []jetstream.PublishOpt{jetstream.WithMsgID(nuid.Next()), jetstream.WithExpectStream(b.stream.CachedInfo().Config.Name)}
	if resources {
		popts = append(popts, jetstream.WithExpectLastSequence(applied))
	}
	ack, err := retry(ctx, func(ctx context.Context) (*jetstream.PubAck, error) {
		return b.c.js.Publish(ctx, b.subject, data, popts...)
	})
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("cluster: registry log moved past %d: %w", applied, registry.ErrStale)
	}
	if err != nil {
		return fmt.Errorf("cluster: publish registry transaction: %w", err)
	}
	b.mu.Lock()
	if ack.Sequence == b.applied+1 { // else others' transactions come first: Sync reads them and this one
		b.applied = ack.Sequence
	}
	b.mu.Unlock()
	// Tell the other nodes, now that the log has it (best effort: their ticker makes up for a
	// notification lost).
	_ = b.c.nc.Publish(b.committedSubject(), []byte(b.id))
	return nil
}

// committedSubject is where a node says it committed a transaction. Not the log's own subject:
// a core subscriber of that one hears a publish before the stream has stored it, and would
// read the log too early.
func (b *RegistryBackend) committedSubject() string { return b.subject + ".committed" }

// Sync reads the log past the last sequence this node holds and applies it.
func (b *RegistryBackend) Sync(ctx context.Context, apply func(ops []registry.Op)) error {
	for {
		b.mu.Lock()
		next := b.applied + 1
		b.mu.Unlock()
		ops, ok, err := b.read(ctx, next)
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		if !ok {
			return nil
		}
		apply(ops)
		b.mu.Lock()
		b.applied = max(b.applied, next)
		b.mu.Unlock()
	}
}

// followEvery is how often a node looks for other nodes' writes when nothing told it of one
// (a notification lost to a reconnection).
const followEvery = 5 * time.Second

// Follow calls notify whenever another node says it committed (committedSubject), every
// followEvery in any case, and once at once. The doorbell is a plain NATS subscription: nothing
// to recreate when a NATS node goes, and a notification lost (a reconnection, a writer gone
// between its commit and its notification) is made up by the ticker. (An ordered consumer of
// the log was tried first: its Stop could block for seconds while it was being reset after a
// NATS node's restart.)
func (b *RegistryBackend) Follow(notify func(ctx context.Context) error) {
	b.follow.Do(func() {
		var err error
		ring := func(m *nats.Msg) {
			if string(m.Data) != b.id {
				b.ring()
			}
		}
		if b.sub, err = b.c.nc.Subscribe(b.committedSubject(), ring); err != nil {
			b.c.log.Warn("registry: no notification of other nodes' writes; looking every "+followEvery.String(), "err", err)
		}
		b.wg.Add(1)
		go b.run(notify)
		b.ring()
	})
}

func (b *RegistryBackend) ring() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *RegistryBackend) run(notify func(ctx context.Context) error) {
	defer b.wg.Done()
	ctx := b.ctx
	t := time.NewTicker(followEvery)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-b.wake:
		case <-t.C:
		}
		if err := notify(ctx); err != nil && ctx.Err() == nil {
			b.c.log.Warn("registry: other nodes' writes not taken in yet", "err", err)
		}
	}
}

// Close stops following the log and waits for the notification under way.
func (b *RegistryBackend) Close() error {
	select {
	case <-b.stop:
		return nil
	default:
	}
	close(b.stop)
	b.cancel()
	if b.sub != nil {
		_ = b.sub.Unsubscribe()
	}
	b.wg.Wait()
	return nil
}
