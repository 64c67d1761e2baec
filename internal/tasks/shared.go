package tasks

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

// Shared is the backend of tasks that several relay nodes hold together (cluster mode;
// internal/cluster implements it on a JetStream key-value bucket). Its keys and values are the
// store's (Backend): "task/<device>/<id>" with the task's JSON, "last/<device>" with a device's
// highest id given.
type Shared interface {
	// Load calls fn with every task and device counter stored.
	Load(ctx context.Context, fn func(key, value []byte) error) error
	// Write writes ops (a nil Value deletes), replicated when it returns. Ops of kind "last"
	// are not needed: NextID's counter keeps every device's highest id.
	Write(ctx context.Context, ops []store.RegistryOp) error
	// NextID gives device a task id above after that no node gave it before, and never will.
	NextID(ctx context.Context, device string, after uint64) (uint64, error)
	// Follow calls apply, from one goroutine the backend owns, with every write made after
	// Load (this node's own too), in the order they were made, with a nil value for a
	// deletion, until the backend is closed. apply must not block.
	Follow(apply func(key, value []byte))
}

// expiredAt is the DoneAt of task t expiring at now: now on one node; in cluster mode its
// ExpiresAt, so that every node, each expiring the task on its own tick, gives it one DoneAt.
func (m *Manager) expiredAt(t *Task, now time.Time) time.Time {
	if m.opts.Shared != nil {
		return t.ExpiresAt
	}
	return now
}

// insertFinalLocked adds t, final, to m.final in DoneAt order.
func (m *Manager) insertFinalLocked(t *Task) {
	at := doneAt(t)
	i, _ := slices.BinarySearchFunc(m.final, at, func(x *Task, at time.Time) int {
		if doneAt(x).After(at) {
			return 1
		}
		return -1 // after those finished at the same time
	})
	m.final = slices.Insert(m.final, i, t)
}

// apply takes in a write of the shared backend: another node's (or this node's own, heard back).
//
// A task new to this node is added, and the notifier told if it is queued: if this node holds
// the device's connection, it is written to it at once. A task known here is merged
// (mergeLocked): every node ends with the same task whatever order it heard the writes in, and
// a node that holds more than the write it heard writes its own version back, so that the
// bucket ends with it too. A deleted task (retention) leaves memory.
func (m *Manager) apply(k, v []byte) {
	kindOf, rest, ok := strings.Cut(string(k), "/")
	switch {
	case !ok:
		return
	case kindOf == kindLast:
		if last, err := strconv.ParseUint(string(v), 10, 64); err == nil {
			m.mu.Lock()
			d := m.device(rest)
			d.last = max(d.last, last)
			m.mu.Unlock()
		}
		return
	case kindOf != kind:
		return
	case v == nil:
		i := strings.LastIndexByte(rest, '/')
		if id, err := strconv.ParseUint(rest[i+1:], 10, 64); i >= 0 && err == nil {
			m.mu.Lock()
			m.removeLocked(rest[:i], id)
			m.mu.Unlock()
		}
		return
	}
	in := new(Task)
	if err := json.Unmarshal(v, in); err != nil || in.Device == "" {
		if held, ok := m.writeErrs.Allow(); ok {
			m.log.Warn("another node's task not understood; skipped", "key", string(k), "err", err, "errors_since_last_log", held)
		}
		return
	}
	dev, queued := in.Device, in.State == Queued
	m.mu.Lock()
	d := m.device(dev)
	n := m.notify
	if t := d.find(in.ID); t != nil {
		m.mergeLocked(d, t, in)
		m.mu.Unlock()
		return
	}
	m.insertLocked(d, in)
	m.mu.Unlock()
	if n != nil && queued {
		n.CommandsReady(dev)
	}
}

// removeLocked takes task id of dev out of memory: another node deleted it, its retention
// passed.
func (m *Manager) removeLocked(dev string, id uint64) {
	d := m.devices[dev]
	if d == nil {
		return
	}
	t := d.find(id)
	if t == nil {
		return
	}
	d.tasks = shrink(slices.DeleteFunc(d.tasks, func(x *Task) bool { return x == t }))
	m.held[t.State]--
	delete(m.dirty, key(t.Device, t.ID))
	if t.State.Done() {
		m.final = shrink(slices.DeleteFunc(m.final, func(x *Task) bool { return x == t }))
		m.pruned++
	} else {
		m.open--
		d.open--
	}
}

// rank orders a task's states along its life: queued, sent, final.
func rank(s State) int {
	switch {
	case s == Queued:
		return 0
	case s == Sent:
		return 1
	}
	return 2
}

// ahead reports whether a's state is later than b's in the order every node agrees on: along
// the task's life (queued → sent → final); between two final states, the one reached first
// (DoneAt; a tie by the state's name) — the first end the task met, as on one node, where a
// final task never changes: a RESULT before the ttl beats the other nodes' expiry (whose
// DoneAt is the ExpiresAt), a RESULT after it loses to it.
func ahead(a, b *Task) bool {
	if ra, rb := rank(a.State), rank(b.State); ra != rb || ra < 2 {
		return ra > rb
	}
	if c := doneAt(a).Compare(doneAt(b)); c != 0 {
		return c < 0
	}
	return a.State < b.State
}

// later reports whether a was sent later than b (more sends, or the same number later).
func later(a, b *Task) bool {
	if a.Sends != b.Sends {
		return a.Sends > b.Sends
	}
	return a.SentAt != nil && (b.SentAt == nil || a.SentAt.After(*b.SentAt))
}

// mergeLocked folds in, another version of t (of d), into t: the state that is ahead, and the
// latest send. Each part only moves forward, so merging is order-free and every node converges
// on the same task. When t holds more than in, t is marked to be written: the bucket's last
// write is in, which is behind.
//
// Last writer wins in the bucket, and that is safe here because no node ever writes a task
// backwards: its version only moves forward, by its own changes (Due, Result, expiry, which
// move along queued → sent → final and never out of a final state) and by merges, and a node
// that hears a write behind what it holds writes its own again. So the bucket's last write is
// eventually the greatest version, whatever the interleaving.
func (m *Manager) mergeLocked(d *device, t, in *Task) {
	if ahead(in, t) {
		wasDone := t.State.Done()
		m.setLocked(t, in.State)
		t.DoneAt, t.Code, t.Result = in.DoneAt, in.Code, in.Result
		switch {
		case wasDone: // another final state, reached first: its place in final moves
			m.final = slices.DeleteFunc(m.final, func(x *Task) bool { return x == t })
			m.insertFinalLocked(t)
		case t.State.Done():
			m.open--
			d.open--
			m.insertFinalLocked(t)
		}
	}
	if later(in, t) {
		t.Sends, t.SentAt = in.Sends, in.SentAt
	}
	if ahead(t, in) || later(t, in) {
		m.dirtyLocked(t)
	}
}
