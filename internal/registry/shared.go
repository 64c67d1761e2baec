package registry

import (
	"context"
	"fmt"
	"time"
)

// Shared is a Backend that several relays write (cluster mode: internal/cluster): each node's
// registry keeps its own index and takes the others' transactions into it, in commit order.
//
// The backend orders every transaction in one log. A node's Write is staged over its index as it
// was after the last transaction it applied; the backend refuses it with ErrStale when another
// node committed since (optimistic concurrency on the log's position), and the registry then
// catches up through Sync and stages the write again. So a revision checked by a write that
// commits is the revision every node has, and ErrConflict holds across nodes.
type Shared interface {
	Backend
	// Sync calls apply with the ops of each transaction committed after the last one this node
	// applied or wrote, in commit order, until it has applied them all. The registry calls it
	// with its write lock held.
	Sync(ctx context.Context, apply func(ops []Op)) error
	// Follow registers notify, which the backend calls from a goroutine of its own whenever
	// other nodes may have committed (and now and then in any case), until it is closed. An
	// error notify returns is the backend's to log; it calls notify again later.
	Follow(notify func(ctx context.Context) error)
}

// syncTimeout bounds one catching up started by the backend's notification.
const syncTimeout = 30 * time.Second

// Follow starts taking other nodes' writes into the index and to the watchers, from the
// backend's goroutine. It does nothing unless the backend is Shared. Call it once, after the
// watchers that must see every change are registered.
func (r *Registry) Follow() {
	sb, ok := r.b.(Shared)
	if !ok {
		return
	}
	sb.Follow(func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, syncTimeout)
		defer cancel()
		r.wmu.Lock()
		defer r.wmu.Unlock()
		return r.syncLocked(ctx)
	})
}

// syncLocked applies the transactions other nodes committed; r.wmu is held.
func (r *Registry) syncLocked(ctx context.Context) error {
	sb, ok := r.b.(Shared)
	if !ok {
		return nil
	}
	if err := sb.Sync(ctx, r.applyRemote); err != nil {
		return fmt.Errorf("registry: take other nodes' writes: %w", err)
	}
	return nil
}

// applyRemote puts another node's transaction into the index and hands its changes to the
// watchers, as a write of this node would; r.wmu is held. Outbox entries are the writer's
// work, not this node's: they are skipped. An op that does not decode is skipped too (only a
// foreign writer of the log can make one). A resource the config file declares here stays
// declared: the stored one it hides is updated behind it (static.go).
func (r *Registry) applyRemote(ops []Op) {
	var changes []Change
	r.mu.Lock()
	for _, op := range ops {
		if op.Kind == outboxKind {
			continue
		}
		var v resource
		if op.Value != nil {
			var err error
			if v, err = decode(op.Kind, op.Value); err != nil || v.id() != op.ID {
				continue
			}
		} else if _, err := decode(op.Kind, []byte("{}")); err != nil {
			continue // not a kind of resource
		}
		key := kindID{op.Kind, op.ID}
		if r.static[key] {
			if v != nil {
				r.shadowed[key] = v
			} else {
				delete(r.shadowed, key)
			}
			continue
		}
		c := Change{Kind: op.Kind, ID: op.ID, Deleted: v == nil, At: time.Now().UTC().Round(0)}
		cur, exists := r.lookup(op.Kind, op.ID)
		if op.Kind == Devices && exists {
			c.Before = cur.(*Device).clone()
		}
		if v == nil {
			if !exists {
				continue
			}
			r.removeLocked(op.Kind, op.ID)
		} else {
			c.At = v.meta().UpdatedAt
			r.putLocked(v)
			c.set(v)
		}
		changes = append(changes, c)
	}
	watchers := r.watchers
	r.mu.Unlock()
	for _, c := range changes {
		for _, fn := range watchers {
			fn(cloneChange(c))
		}
	}
}

// cloneChange returns c with values of its own (each watcher gets its copy).
func cloneChange(c Change) Change {
	if c.Account != nil {
		c.Account = c.Account.clone()
	}
	if c.Key != nil {
		c.Key = c.Key.clone()
	}
	if c.Route != nil {
		c.Route = c.Route.clone()
	}
	if c.Device != nil {
		c.Device = c.Device.clone()
	}
	if c.Before != nil {
		c.Before = c.Before.clone()
	}
	return c
}
