// Package tasks owns the relay's commands to devices: durable tasks, each with an id unique per
// device across restarts, a state (queued, sent, succeeded, failed, expired), its timestamps,
// the device's result data and a time to live. Tasks are kept in memory and persisted in the
// store's task key space (store.WriteTasks): a new task is written before Create returns, so an
// answered POST survives a crash; its later state changes are written behind, in batches, by one
// writer goroutine, so that the device actors, which report sends and results, never wait for
// the disk. A state change lost in a crash is harmless: the task comes back as sent or queued,
// is sent again when its device connects, and the device, which treats a task id it already
// executed as done, answers its RESULT again.
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
	Backend Backend
	Logger  *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Tick is how often the writer flushes state changes and tasks past their ttl expire
	// (default 100ms).
	Tick time.Duration
	// MaxTTL bounds a task's ttl (default 30 days); DefaultTTL is the ttl of a task created
	// without one (default 24h).
	MaxTTL, DefaultTTL time.Duration
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

const kind = "task"

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
	m := &Manager{
		opts: opts, log: opts.Logger.With("component", "tasks"), now: opts.Now,
		devices: make(map[string]*device), dirty: make(map[string]*Task),
		writeErrs: throttle.Throttle{Period: 10 * time.Second},
		stop:      make(chan struct{}), done: make(chan struct{}),
	}
	err := opts.Backend.LoadTasks(func(k, v []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !strings.HasPrefix(string(k), kind+"/") {
			return nil // a kind of a later version
		}
		t := new(Task)
		if err := json.Unmarshal(v, t); err != nil {
			return fmt.Errorf("task %q: %w", k, err)
		}
		d := m.device(t.Device)
		d.tasks = append(d.tasks, t) // keys sort by device, then id
		d.last = max(d.last, t.ID)
		if !t.State.Done() {
			m.open++
			d.open++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load tasks: %w", err)
	}
	go m.run()
	return m, nil
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
	dev = strings.ToUpper(dev)
	now := m.now().UTC()
	m.mu.Lock()
	d := m.device(dev)
	d.last++
	t := &Task{Device: dev, ID: d.last, State: Queued, Payload: slices.Clone(payload), CreatedAt: now, ExpiresAt: now.Add(ttl)}
	v, err := json.Marshal(t)
	m.mu.Unlock()
	if err != nil {
		return Task{}, fmt.Errorf("encode task: %w", err)
	}
	// An id whose write fails is not given again: ids only grow.
	if err := m.opts.Backend.WriteTasks([]store.RegistryOp{{Kind: kind, ID: key(dev, t.ID), Value: v}}); err != nil {
		return Task{}, fmt.Errorf("store task %d of %s: %w", t.ID, dev, err)
	}
	m.mu.Lock()
	i, _ := slices.BinarySearchFunc(d.tasks, t.ID, func(x *Task, id uint64) int { return cmpU(x.ID, id) })
	d.tasks = slices.Insert(d.tasks, i, t)
	m.open++
	d.open++
	n, out := m.notify, *t
	m.mu.Unlock()
	if n != nil {
		n.CommandsReady(dev)
	}
	return out, nil
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
			m.finishLocked(d, t, Expired, now)
			continue
		}
		t.State, t.SentAt = Sent, &now
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
	t.Code, t.Result = &code, slices.Clone(data)
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
	t.State, t.DoneAt = st, &now
	m.open--
	d.open--
	m.dirtyLocked(t)
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

// run is the writer: every Tick it expires tasks past their ttl and writes the state changes
// since the last tick, until Close.
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
				m.finishLocked(d, t, Expired, now)
			}
		}
	}
}

// maxBatch is the most task writes in one store transaction, well below what Badger takes.
const maxBatch = 1000

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
		ops := make([]store.RegistryOp, 0, min(len(m.dirty), maxBatch))
		for k, t := range m.dirty {
			v, err := json.Marshal(t)
			if err != nil { // a Task always encodes
				panic(fmt.Sprintf("tasks: encode %s: %v", k, err))
			}
			ops = append(ops, store.RegistryOp{Kind: kind, ID: k, Value: v})
			delete(m.dirty, k)
			if len(ops) == maxBatch {
				break
			}
		}
		m.mu.Unlock()
		if err := m.opts.Backend.WriteTasks(ops); err != nil {
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
