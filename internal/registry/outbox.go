package registry

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// The outbox holds work that must follow a write — a notification of its device changes — in
// the write's own backend transaction, so that a crash cannot keep the change and lose the
// work: an entry stays stored until its worker removes it (RemoveOutbox), and the entries a
// crash left are handed back by PendingOutbox after Open. The work is therefore done at least
// once. Entries are not resources: the API never sees them.

// outboxKind is the backend kind of outbox entries.
const outboxKind Kind = "outbox"

// IsResource tells a backend kind of resources (accounts, keys, routes, devices) from the
// outbox's entries, which are one node's own work.
func IsResource(k Kind) bool { return k != outboxKind }

// Outbox is the work that follows writes (see SetOutbox).
type Outbox interface {
	// Stage is called for each write, under the registry's write lock, before the backend
	// write, with the write's context and its changes (with Before and At set; Outbox empty).
	// A non-nil value is stored as an outbox entry in the same transaction. It must not call
	// the registry's writes.
	Stage(ctx context.Context, changes []Change) []byte
	// Committed is called once the write with the entry Stage returned is in the backend and the
	// index, before the watchers, on the writer's goroutine, with the write's context.
	Committed(ctx context.Context, e OutboxEntry)
}

// OutboxEntry is one stored outbox entry. IDs order the entries as they were written.
type OutboxEntry struct {
	ID    string
	Value []byte
}

// SetOutbox registers o. Call it once, before the first write.
func (r *Registry) SetOutbox(o Outbox) {
	r.wmu.Lock()
	r.outbox = o
	r.wmu.Unlock()
}

// PendingOutbox returns the outbox entries that were stored when the registry was opened (those
// the previous run did not remove), in the order they were written.
func (r *Registry) PendingOutbox() []OutboxEntry {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return append([]OutboxEntry(nil), r.pending...)
}

// WriteOutbox stores an entry on its own (work that follows a change the backend does not hold,
// such as the config file's) and returns it.
func (r *Registry) WriteOutbox(ctx context.Context, value []byte) (OutboxEntry, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	e := OutboxEntry{ID: r.nextOutboxID(), Value: value}
	if err := r.b.Write(ctx, []Op{{Kind: outboxKind, ID: e.ID, Value: value}}); err != nil {
		return OutboxEntry{}, fmt.Errorf("registry: write outbox entry: %w", err)
	}
	return e, nil
}

// RemoveOutbox deletes the entries ids (done with). It does not take the write lock: entries
// are written once and removed once.
func (r *Registry) RemoveOutbox(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	ops := make([]Op, len(ids))
	for i, id := range ids {
		ops[i] = Op{Kind: outboxKind, ID: id}
	}
	if err := r.b.Write(ctx, ops); err != nil {
		return fmt.Errorf("registry: remove %d outbox entries: %w", len(ids), err)
	}
	r.wmu.Lock()
	if len(r.pending) > 0 { // forget the removed ones of those found at Open
		done := make(map[string]bool, len(ids))
		for _, id := range ids {
			done[id] = true
		}
		kept := r.pending[:0]
		for _, e := range r.pending {
			if !done[e.ID] {
				kept = append(kept, e)
			}
		}
		r.pending = kept
	}
	r.wmu.Unlock()
	return nil
}

// stageOutbox asks the outbox for the entry of tx's writes; its ID is "" when there is none
// (no outbox, or nothing to stage). r.wmu is held.
func (r *Registry) stageOutbox(ctx context.Context, tx *writeTx) OutboxEntry {
	if r.outbox == nil {
		return OutboxEntry{}
	}
	changes := make([]Change, len(tx.writes))
	for i := range tx.writes {
		changes[i] = tx.writes[i].change(tx.now)
	}
	v := r.outbox.Stage(ctx, changes)
	if v == nil {
		return OutboxEntry{}
	}
	return OutboxEntry{ID: r.nextOutboxID(), Value: v}
}

// outboxIDWidth is the width of an entry's ID: a counter in fixed-width hex, so that the
// backend's key order is the write order.
const outboxIDWidth = 16

// nextOutboxID returns the next entry ID: after every ID stored, and after every ID this
// process wrote. r.wmu is held.
func (r *Registry) nextOutboxID() string {
	n := r.outboxSeq.Add(1)
	s := strconv.FormatUint(n, 16)
	for len(s) < outboxIDWidth {
		s = "0" + s
	}
	return s
}

// seedOutbox sets the counter past the IDs loaded and past the clock (so that IDs stay ordered
// across runs even if every entry was removed).
func (r *Registry) seedOutbox() {
	seq := uint64(time.Now().UnixNano())
	for _, e := range r.pending {
		if n, err := strconv.ParseUint(e.ID, 16, 64); err == nil && n >= seq {
			seq = n + 1
		}
	}
	r.outboxSeq.Store(seq)
}
