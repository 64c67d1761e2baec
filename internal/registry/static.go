package registry

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// SetStatic puts the resources the config file declares (Source config) into the index, never
// into the backend: they shadow a stored resource of the same ID while the relay runs with that
// config (the stored one comes back if a later config drops it, see ReplaceStatic). Their Meta
// is set here: Source config, Revision 1, the times now. Call it once, after Open, before
// anything reads the registry, the watchers and the outbox: it notifies nothing.
func (r *Registry) SetStatic(routes []Route, devices []Device) {
	_ = r.ReplaceStatic(context.Background(), routes, devices) // no outbox yet: cannot fail
}

// ReplaceStatic makes routes and devices the config file's resources (a reloaded config): new
// ones are added, changed ones updated (their next revision; CreatedAt kept), those no longer
// declared removed — or, where a stored resource of the same ID was shadowed, that one comes
// back. The changes go to the outbox (an entry written on its own: the resources themselves are
// never stored) and to the watchers, in this order: routes then devices, each as declared, then
// the removals. A resource declared as it already is changes nothing. It fails, changing
// nothing, only if the outbox entry cannot be written.
func (r *Registry) ReplaceStatic(ctx context.Context, routes []Route, devices []Device) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	tx := &writeTx{r: r, now: r.now()}
	declared := make(map[kindID]bool, len(routes)+len(devices))
	put := func(v resource) {
		key := kindID{v.kind(), v.id()}
		declared[key] = true
		m := v.meta()
		*m = Meta{CreatedAt: tx.now, UpdatedAt: tx.now, Revision: 1, Source: SourceConfig}
		cur, exists := r.lookup(key.kind, key.id)
		if exists && r.static[key] {
			if sameContent(cur, v) {
				return
			}
			m.CreatedAt, m.Revision = cur.meta().CreatedAt, cur.meta().Revision+1
		}
		tx.add(key.kind, key.id, v, nil)
	}
	for i := range routes {
		put(routes[i].clone())
	}
	for i := range devices {
		d := devices[i].clone()
		d.ID = strings.ToUpper(d.ID)
		put(d)
	}
	var gone []kindID
	for key := range r.static {
		if !declared[key] {
			gone = append(gone, key)
		}
	}
	slices.SortFunc(gone, func(a, b kindID) int { // routes before devices, by ID
		return cmp.Or(cmp.Compare(kindOrder(a.kind), kindOrder(b.kind)), strings.Compare(a.id, b.id))
	})
	for _, key := range gone {
		if old, ok := r.shadowed[key]; ok {
			tx.add(key.kind, key.id, old, nil)
		} else {
			tx.add(key.kind, key.id, nil, nil)
		}
	}
	if len(tx.writes) == 0 {
		return nil
	}
	entry := r.stageOutbox(ctx, tx)
	if entry.ID != "" {
		if err := r.b.Write(ctx, []Op{{Kind: outboxKind, ID: entry.ID, Value: entry.Value}}); err != nil {
			return fmt.Errorf("registry: config resources: write their outbox entry: %w", err)
		}
	}
	if r.static == nil {
		r.static, r.shadowed = make(map[kindID]bool), make(map[kindID]resource)
	}
	r.mu.Lock()
	for _, w := range tx.writes {
		key := kindID{w.kind, w.id}
		switch {
		case w.v == nil:
			r.removeLocked(w.kind, w.id)
			delete(r.static, key)
		case w.v.meta().Source != SourceConfig: // a shadowed stored resource back
			r.putLocked(w.v)
			delete(r.static, key)
			delete(r.shadowed, key)
		default:
			if cur, ok := r.lookup(w.kind, w.id); ok && !r.static[key] {
				r.shadowed[key] = cur
			}
			r.putLocked(w.v)
			r.static[key] = true
		}
	}
	watchers := r.watchers
	r.mu.Unlock()
	if entry.ID != "" {
		r.outbox.Committed(ctx, entry)
	}
	for _, w := range tx.writes {
		for _, fn := range watchers {
			fn(w.change(tx.now))
		}
	}
	return nil
}

// sameContent reports whether a and b hold the same resource, their Meta aside.
func sameContent(a, b resource) bool {
	ca, cb := a.copyRes(), b.copyRes()
	*ca.meta(), *cb.meta() = Meta{}, Meta{}
	ja, err1 := json.Marshal(ca)
	jb, err2 := json.Marshal(cb)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

func kindOrder(k Kind) int {
	if k == Routes {
		return 0
	}
	return 1
}
