// Package tasks owns the relay's commands to devices: durable tasks, each with an id unique per
// device across restarts, a state (queued, sent, succeeded, failed, expired), its timestamps,
// the device's result data and a time to live. Tasks are kept in memory and persisted in the
// store's task key space (store.WriteTasks): a new task is written before Create returns, so an
// answered POST survives a crash; its later state changes are written behind, in batches, by one
// writer goroutine, so that the device actors, which report sends and results, never wait for
// the disk. A state change lost in a crash is harmless: the task comes back as sent or queued,
// is sent again when its device connects, and the device, which treats a task id it already
// executed as done, answers its RESULT again.
//
// A task in a final state is kept for a retention period (Options.Retention) after its DoneAt,
// then the writer deletes it, from the store and from memory, in batches that fit one store
// transaction. Task ids stay unique per device across restarts although a device's tasks may all
// be deleted: a batch that deletes a device's highest stored task also writes the device's
// highest id given ("last/<device>" in the task key space), which Open reads back.
//
// In cluster mode (Options.Shared, internal/cluster's bucket) several relay nodes hold the same
// tasks: ids come from a per-device counter every node shares (Shared.NextID), and every node
// follows the others' writes (apply, in shared.go), so that a task created through any node's
// API reaches the device on whichever node holds its connection, and its states show through
// every node's API.
package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/store"
	"github.com/fleetrelay/fleetrelay/internal/throttle"
)

// State is where a task stands.
type State string

// The states of a task: queued until it is written to its device, sent until the device's
// RESULT (succeeded for code 0, failed otherwise), expired when its ttl passed before.
const (
	Queued    State = "queued"
	Sent      State = "sent"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Expired   State = "expired"
)

// Done reports whether the state is final.
func (s State) Done() bool { return s == Succeeded || s == Failed || s == Expired }

// Bounds of what a task holds, so that a task's stored form always fits one store transaction
// (with its payload, result and times, well under the ≈150 KB one takes) and its COMMAND frame
// the default devices.max_frame (64 KiB). A RESULT's data larger than MaxResult is delivered
// whole to the routes; the task's result then only says how large it was.
const (
	MaxPayload = 48 << 10
	MaxResult  = 64 << 10
)

// ErrInvalid is returned by Create for a payload that is not one JSON object or a ttl out of
// range.
var ErrInvalid = errors.New("invalid task")

// Task is one command to one device, as the API shows it.
type Task struct {
	Device    string          `json:"device"`
	ID        uint64          `json:"task"`
	State     State           `json:"state"`
	Payload   json.RawMessage `json:"payload"`
	CreatedAt time.Time       `json:"created_at"`
	ExpiresAt time.Time       `json:"expires_at"`
	// SentAt is when the task was last written to its device; Sends counts those writes (one
	// per connection that got it).
	SentAt *time.Time `json:"sent_at,omitempty"`
	Sends  int        `json:"sends"`
	// DoneAt is when the task reached a final state; Code and Result are the device's RESULT.
	DoneAt *time.Time      `json:"done_at,omitempty"`
	Code   *uint8          `json:"code,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Notifier is told when a task is created, so that a connected device gets it at once
// (actors.System implements it). CommandsReady must not block.
type Notifier interface {
	CommandsReady(device string)
}

// Backend is what the manager needs of the store (store.Store implements it).
type Backend interface {
	LoadTasks(fn func(key, value []byte) error) error
	WriteTasks(ops []store.RegistryOp) error
}

// Options configure a Manager.
type Options struct {
	// Backend is the node's own store (one node); Shared, when set instead, is what every relay
	// node of a cluster shares.
	Backend Backend
	Shared  Shared
	Logger  *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Tick is how often the writer flushes state changes and tasks past their ttl expire
	// (default 100ms).
	Tick time.Duration
	// MaxTTL bounds a task's ttl (default 30 days); DefaultTTL is the ttl of a task created
	// without one (default 24h).
	MaxTTL, DefaultTTL time.Duration
	// Retention is how long a task in a final state is kept after its DoneAt before the writer
	// deletes it (default 168h).
	Retention time.Duration
}

// Stats are counters for metrics: the tasks held (in memory and in the store) by state, and
// those deleted because their retention passed since Open.
type Stats struct {
	Queued, Sent, Succeeded, Failed, Expired int
	Pruned                                   uint64
}

// Manager holds every task. Its methods are safe for concurrent use; Due and Result never block
// on the disk.
type Manager struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	notify Notifier // set by Attach before devices connect

	mu      sync.Mutex
	devices map[string]*device // by upper-cased identity
	dirty   map[string]*Task   // state changes not yet written, by key
	open    int                // tasks not in a final state
	held    map[State]int      // tasks held, by state
	pruned  uint64             // tasks deleted by retention since Open
	// final holds the tasks in a final state in the order they reached it (DoneAt, oldest
	// first, as the clock gave it), so the writer finds the ones past their retention without
	// looking at the others. Should the clock step back, a task finished before the step holds
	// the ones behind it until its own retention passed: a delay, never an early deletion.
	final []*Task

	wmu sync.Mutex // one flush at a time: a later state never loses to an earlier one on disk

	writeErrs throttle.Throttle
	stop      chan struct{}
	done      chan struct{}
}

type device struct {
	last  uint64  // highest task id given
	tasks []*Task // by id
	open  int     // tasks not in a final state
}

// The kinds of the task key space: one task ("task/<device>/<id>"), and the highest id given
// to a device ("last/<device>", a decimal), written when the device's highest stored task is
// deleted.
const (
	kind     = "task"
	kindLast = "last"
)

// key is the store key of a task: the device, then the id zero-padded so keys sort by id.
func key(dev string, id uint64) string { return fmt.Sprintf("%s/%020d", dev, id) }

// Open loads every stored task and starts the writer; Close stops it.
func Open(ctx context.Context, opts Options) (*Manager, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Tick <= 0 {
		opts.Tick = 100 * time.Millisecond
	}
	if opts.MaxTTL <= 0 {
		opts.MaxTTL = 30 * 24 * time.Hour
	}
	if opts.DefaultTTL <= 0 {
		opts.DefaultTTL = 24 * time.Hour
	}
	if opts.Retention <= 0 {
		opts.Retention = 168 * time.Hour
	}
	m := &Manager{
		opts: opts, log: opts.Logger.With("component", "tasks"), now: opts.Now,
		devices: make(map[string]*device), dirty: make(map[string]*Task), held: make(map[State]int),
		writeErrs: throttle.Throttle{Period: 10 * time.Second},
		stop:      make(chan struct{}), done: make(chan struct{}),
	}
	load := func(fn func(k, v []byte) error) error { return opts.Shared.Load(ctx, fn) }
	if opts.Shared == nil {
		load = opts.Backend.LoadTasks
	}
	err := load(func(k, v []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if dev, ok := strings.CutPrefix(string(k), kindLast+"/"); ok {
			last, err := strconv.ParseUint(string(v), 10, 64)
			if err != nil {
				return fmt.Errorf("last task id %q: %w", k, err)
			}
			d := m.device(dev)
			d.last = max(d.last, last)
			return nil
		}
		if !strings.HasPrefix(string(k), kind+"/") {
			return nil // a kind of a later version
		}
		t := new(Task)
		if err := json.Unmarshal(v, t); err != nil {
			return fmt.Errorf("task %q: %w", k, err)
		}
		d := m.device(t.Device)
		d.tasks = append(d.tasks, t) // keys sort by device, then id (the store's; sorted below for Shared's)
		d.last = max(d.last, t.ID)
		m.held[t.State]++
		if t.State.Done() {
			m.final = append(m.final, t)
		} else {
			m.open++
			d.open++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load tasks: %w", err)
	}
	if opts.Shared != nil { // a bucket lists its keys in the order they were last written
		for _, d := range m.devices {
			slices.SortFunc(d.tasks, func(a, b *Task) int { return cmpU(a.ID, b.ID) })
		}
	}
	slices.SortStableFunc(m.final, func(a, b *Task) int { return doneAt(a).Compare(doneAt(b)) })
	if opts.Shared != nil {
		opts.Shared.Follow(m.apply)
	}
	go m.run()
	return m, nil
}

// doneAt is when t reached its final state (its creation for a final task stored without one,
// which this version never writes).
func doneAt(t *Task) time.Time {
	if t.DoneAt != nil {
		return *t.DoneAt
	}
	return t.CreatedAt
}

// Attach sets who is told of new tasks. Call it before devices connect.
func (m *Manager) Attach(n Notifier) {
	m.mu.Lock()
	m.notify = n
	m.mu.Unlock()
}

// device returns the tasks of dev (upper-cased), made if missing; m.mu held or not yet shared.
func (m *Manager) device(dev string) *device {
	d := m.devices[dev]
	if d == nil {
		d = &device{}
		m.devices[dev] = d
	}
	return d
}

// Create stores a new task for device with payload (one JSON object) and ttl (0: the default),
// then tells the notifier. The task is durable when Create returns.
func (m *Manager) Create(ctx context.Context, dev string, payload []byte, ttl time.Duration) (Task, error) {
	if err := ctx.Err(); err != nil {
		return Task{}, err
	}
	if ttl == 0 {
		ttl = m.opts.DefaultTTL
	}
	if ttl < 0 || ttl > m.opts.MaxTTL {
		return Task{}, fmt.Errorf("ttl %s: want above 0 and at most %s: %w", ttl, m.opts.MaxTTL, ErrInvalid)
	}
	if !isObject(payload) {
		return Task{}, fmt.Errorf("payload: want one JSON object: %w", ErrInvalid)
	}
	if len(payload) > MaxPayload {
		return Task{}, fmt.Errorf("payload: %d bytes, want at most %d: %w", len(payload), MaxPayload, ErrInvalid)
	}
	dev = strings.ToUpper(dev)
	m.mu.Lock()
	d := m.device(dev)
	var id uint64
	if m.opts.Shared == nil {
		d.last++
		id = d.last
	} else { // the id comes from the counter every node shares
		after := d.last
		m.mu.Unlock()
		var err error
		if id, err = m.opts.Shared.NextID(ctx, dev, after); err != nil {
			return Task{}, fmt.Errorf("next task id of %s: %w", dev, err)
		}
		m.mu.Lock()
		d.last = max(d.last, id)
	}
	now := m.now().UTC()
	t := &Task{Device: dev, ID: id, State: Queued, Payload: slices.Clone(payload), CreatedAt: now, ExpiresAt: now.Add(ttl)}
	v, err := json.Marshal(t)
	m.mu.Unlock()
	if err != nil {
		return Task{}, fmt.Errorf("encode task: %w", err)
	}
	// An id whose write fails is not given again: ids only grow.
	if err := m.write(ctx, []store.RegistryOp{{Kind: kind, ID: key(dev, t.ID), Value: v}}); err != nil {
		return Task{}, fmt.Errorf("store task %d of %s: %w", t.ID, dev, err)
	}
	m.mu.Lock()
	// In cluster mode this node may have heard its own write already (apply): then it holds the
	// task, and maybe a later state of it.
	if held := d.find(t.ID); held != nil {
		t = held
	} else {
		m.insertLocked(d, t)
	}
	n, out := m.notify, *t
	m.mu.Unlock()
	if n != nil {
		n.CommandsReady(dev)
	}
	return out, nil
}

// write writes ops to the backend (the store, or what the cluster shares), durably when it
// returns.
func (m *Manager) write(ctx context.Context, ops []store.RegistryOp) error {
	if m.opts.Shared != nil {
		return m.opts.Shared.Write(ctx, ops)
	}
	return m.opts.Backend.WriteTasks(ops)
}

// insertLocked adds t, new to this node, to d's tasks in id order and to the counts.
func (m *Manager) insertLocked(d *device, t *Task) {
	i, _ := slices.BinarySearchFunc(d.tasks, t.ID, func(x *Task, id uint64) int { return cmpU(x.ID, id) })
	d.tasks = slices.Insert(d.tasks, i, t)
	d.last = max(d.last, t.ID)
	m.held[t.State]++
	if t.State.Done() {
		m.insertFinalLocked(t)
	} else {
		m.open++
		d.open++
	}
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// isObject reports whether b is one JSON object.
func isObject(b []byte) bool {
	var v map[string]json.RawMessage
	return json.Unmarshal(b, &v) == nil && v != nil
}

// Due calls write, under the manager's lock, with the id and payload of each task to write to
// device's connection, which got its WELCOME, and marks them sent: with resend (a new
// connection), every task not yet final; otherwise only the queued ones (the connection has the
// others already). Tasks past their ttl expire instead. Every due task of a device is written
// at once: commands are pipelined (see PROTOCOL.md). write must not block nor call back into m.
func (m *Manager) Due(dev string, resend bool, write func(task uint64, payload []byte)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.devices[strings.ToUpper(dev)]
	if d == nil {
		return
	}
	now := m.now().UTC()
	for _, t := range d.tasks {
		if t.State != Queued && (!resend || t.State != Sent) {
			continue
		}
		if !now.Before(t.ExpiresAt) {
			m.finishLocked(d, t, Expired, m.expiredAt(t, now))
			continue
		}
		m.setLocked(t, Sent)
		t.SentAt = &now
		t.Sends++
		m.dirtyLocked(t)
		write(t.ID, t.Payload)
	}
}

// Result completes the task of device with the device's RESULT: succeeded for code 0, failed
// otherwise, with data. A RESULT for a task that is final already (answered before, or
// expired) or unknown changes nothing.
func (m *Manager) Result(dev string, id uint64, code uint8, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.devices[strings.ToUpper(dev)]
	if d == nil {
		return
	}
	t := d.find(id)
	if t == nil || t.State.Done() {
		return
	}
	st := Succeeded
	if code != 0 {
		st = Failed
	}
	t.Code = &code
	if len(data) <= MaxResult {
		t.Result = slices.Clone(data)
	} else { // the routes get it whole (the RESULT frame's record); the task keeps a note
		t.Result = json.RawMessage(fmt.Sprintf(`{"truncated":true,"bytes":%d}`, len(data)))
	}
	m.finishLocked(d, t, st, m.now().UTC())
}

func (d *device) find(id uint64) *Task {
	i, ok := slices.BinarySearchFunc(d.tasks, id, func(x *Task, id uint64) int { return cmpU(x.ID, id) })
	if !ok {
		return nil
	}
	return d.tasks[i]
}

// finishLocked moves t, of d, to final state st.
func (m *Manager) finishLocked(d *device, t *Task, st State, now time.Time) {
	m.setLocked(t, st)
	t.DoneAt = &now
	m.open--
	d.open--
	if m.opts.Shared != nil { // an expiry's DoneAt is its ExpiresAt, maybe before the last one's
		m.insertFinalLocked(t)
	} else {
		m.final = append(m.final, t)
	}
	m.dirtyLocked(t)
}

// setLocked moves t to state st, keeping the counts by state.
func (m *Manager) setLocked(t *Task, st State) {
	m.held[t.State]--
	m.held[st]++
	t.State = st
}

func (m *Manager) dirtyLocked(t *Task) {
	k := key(t.Device, t.ID)
	m.dirty[k] = t
}

// Get returns task id of device.
func (m *Manager) Get(dev string, id uint64) (Task, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.devices[strings.ToUpper(dev)]
	if d == nil {
		return Task{}, false
	}
	t := d.find(id)
	if t == nil {
		return Task{}, false
	}
	return *t, true
}

// List returns up to limit tasks of device with ids above after, in id order, and whether more
// follow.
func (m *Manager) List(dev string, after uint64, limit int) ([]Task, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.devices[strings.ToUpper(dev)]
	if d == nil {
		return []Task{}, false
	}
	i, _ := slices.BinarySearchFunc(d.tasks, after+1, func(x *Task, id uint64) int { return cmpU(x.ID, id) })
	out := make([]Task, 0, min(limit, len(d.tasks)-i))
	for ; i < len(d.tasks) && len(out) < limit; i++ {
		out = append(out, *d.tasks[i])
	}
	return out, i < len(d.tasks)
}

// Unfinished is how many tasks are not in a final state.
func (m *Manager) Unfinished() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.open
}

// Stats returns the counts for metrics.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{Queued: m.held[Queued], Sent: m.held[Sent], Succeeded: m.held[Succeeded], Failed: m.held[Failed],
		Expired: m.held[Expired], Pruned: m.pruned}
}

// run is the writer: every Tick it expires tasks past their ttl, writes the state changes
// since the last tick and deletes the final tasks past their retention, until Close.
func (m *Manager) run() {
	defer close(m.done)
	t := time.NewTicker(m.opts.Tick)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			m.flush()
			return
		case <-t.C:
		}
		m.expire()
		m.flush()
		m.prune()
	}
}

// expire moves the tasks past their ttl to expired. It looks only at the devices with unfinished
// tasks.
func (m *Manager) expire() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.open == 0 {
		return
	}
	now := m.now().UTC()
	for _, d := range m.devices {
		if d.open == 0 {
			continue
		}
		for _, t := range d.tasks {
			if !t.State.Done() && !now.Before(t.ExpiresAt) {
				m.finishLocked(d, t, Expired, m.expiredAt(t, now))
			}
		}
	}
}

// A batch of task writes is one store transaction, which Badger bounds (the store's memtable of
// 1MiB takes ≈157KB and ≈1,600 entries in one): at most MaxBatch writes and maxBatchBytes of
// keys and values (each counted with batchOverhead more, Badger's own per entry and the store's
// prefix). One task larger than maxBatchBytes is written alone.
const (
	MaxBatch      = 1000
	maxBatchBytes = 96 << 10
	batchOverhead = 32
)

// opSize is what op counts against maxBatchBytes.
func opSize(op store.RegistryOp) int {
	return len(op.Kind) + 1 + len(op.ID) + len(op.Value) + batchOverhead
}

// flush writes the state changes not yet written. A batch the store refuses stays due for the
// next tick, unless a later change of the same task is due already.
func (m *Manager) flush() {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	for {
		m.mu.Lock()
		if len(m.dirty) == 0 {
			m.mu.Unlock()
			return
		}
		ops := make([]store.RegistryOp, 0, min(len(m.dirty), MaxBatch))
		size := 0
		for k, t := range m.dirty {
			v, err := json.Marshal(t)
			if err != nil { // a Task always encodes
				panic(fmt.Sprintf("tasks: encode %s: %v", k, err))
			}
			op := store.RegistryOp{Kind: kind, ID: k, Value: v}
			if len(ops) > 0 && size+opSize(op) > maxBatchBytes {
				break // the next batch's
			}
			ops = append(ops, op)
			size += opSize(op)
			delete(m.dirty, k)
			if len(ops) == MaxBatch {
				break
			}
		}
		m.mu.Unlock()
		if err := m.write(context.Background(), ops); err != nil {
			if held, ok := m.writeErrs.Allow(); ok {
				m.log.Warn("write task states; retried", "tasks", len(ops), "err", err, "errors_since_last_log", held)
			}
			m.mu.Lock()
			for _, op := range ops {
				id, _ := strconv.ParseUint(op.ID[strings.LastIndexByte(op.ID, '/')+1:], 10, 64)
				if d := m.devices[op.ID[:strings.LastIndexByte(op.ID, '/')]]; d != nil {
					if t := d.find(id); t != nil {
						m.dirtyLocked(t)
					}
				}
			}
			m.mu.Unlock()
			return
		}
	}
}

// prune deletes, from the store and then from memory, the tasks in a final state whose DoneAt
// is Retention ago or more, oldest first, one store transaction per batch. It runs after flush,
// under wmu, so no write of a task's state can follow its deletion; a final task whose state is
// not written yet (its flush failed) stops it until a later tick. On one node a final task never
// changes again, so the tasks of a batch stay as they were read while the batch is written
// without the manager's lock, and only prune takes tasks out of final. In cluster mode another
// node's write may still move a final task (apply) or delete it meanwhile: the batch's tasks
// still held are dropped, whatever they became (they were past their retention).
func (m *Manager) prune() {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	for {
		m.mu.Lock()
		cutoff := m.now().UTC().Add(-m.opts.Retention)
		var ops []store.RegistryOp
		var gone []*Task
		size, n := 0, 0
		lasts := map[string]bool{} // devices whose last id this batch writes
		for _, t := range m.final {
			if doneAt(t).After(cutoff) || m.dirty[key(t.Device, t.ID)] != nil {
				break
			}
			batch := []store.RegistryOp{{Kind: kind, ID: key(t.Device, t.ID)}}
			// Deleting the device's highest stored task would let a restart give its id again
			// (in cluster mode the shared counter keeps it).
			if d := m.devices[t.Device]; m.opts.Shared == nil && !lasts[t.Device] && d.tasks[len(d.tasks)-1] == t {
				batch = append(batch, store.RegistryOp{Kind: kindLast, ID: t.Device, Value: strconv.AppendUint(nil, d.last, 10)})
			}
			s := 0
			for _, op := range batch {
				s += opSize(op)
			}
			if len(ops) > 0 && (len(ops)+len(batch) > MaxBatch || size+s > maxBatchBytes) {
				break
			}
			if len(batch) > 1 {
				lasts[t.Device] = true
			}
			ops = append(ops, batch...)
			gone = append(gone, t)
			size += s
			n++
		}
		m.mu.Unlock()
		if n == 0 {
			return
		}
		if err := m.write(context.Background(), ops); err != nil {
			if held, ok := m.writeErrs.Allow(); ok {
				m.log.Warn("delete tasks past their retention; retried", "tasks", n, "err", err, "errors_since_last_log", held)
			}
			return
		}
		m.mu.Lock()
		m.dropLocked(gone)
		m.mu.Unlock()
	}
}

// dropLocked takes the tasks gone out of memory: the store deleted them. They are the first
// of m.final, unless another node's writes changed it meanwhile (cluster mode).
func (m *Manager) dropLocked(gone []*Task) {
	set := make(map[*Task]bool, len(gone))
	for _, t := range gone {
		set[t] = true
	}
	n := len(gone)
	if n > len(m.final) || !slices.Equal(m.final[:n], gone) {
		m.final = slices.DeleteFunc(m.final, func(t *Task) bool { return set[t] })
		n = 0
	}
	clear(m.final[:n]) // the backing array must not keep them
	m.final = shrink(m.final[n:])
	done := make(map[string]bool)
	for _, t := range gone {
		if done[t.Device] {
			continue
		}
		done[t.Device] = true
		d := m.devices[t.Device]
		d.tasks = shrink(slices.DeleteFunc(d.tasks, func(t *Task) bool {
			if !set[t] {
				return false
			}
			m.held[t.State]-- // final still: a final state only moves to another final one
			m.pruned++
			return true
		}))
		// A device left without tasks stays: its last id is still to be given after.
	}
}

// shrink returns s, copied to a smaller array when it holds a quarter of its capacity or less,
// so that memory follows what is pruned.
func shrink(s []*Task) []*Task {
	if cap(s) <= 64 || len(s) > cap(s)/4 {
		return s
	}
	if len(s) == 0 {
		return nil // s[:0:0], slices.Clone's answer, would still hold the array
	}
	return append(make([]*Task, 0, len(s)), s...)
}

// Flush writes every state change made so far before it returns (for tests and shutdown).
func (m *Manager) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.flush()
	m.mu.Lock()
	n := len(m.dirty)
	m.mu.Unlock()
	if n > 0 {
		return fmt.Errorf("flush tasks: %d state changes not written", n)
	}
	return nil
}

// Close stops the writer after a last flush. Call it after the device actors stopped and before
// the store closes.
func (m *Manager) Close() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
}
