package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Registry is the in-memory index of every resource over a Backend. Reads never touch the
// backend; writes go to the backend first and to the index once it has them. It is safe for
// concurrent use; the values it returns are copies the caller may keep and change.
//
// Writes are serialised: each one checks the index, writes the backend, updates the index and
// calls the watchers before the next one starts, so the backend, the index and the watchers
// see the same order. A write the backend refuses changes nothing. Reads take a shared lock
// only for a map lookup (or an ordered walk) and copy outside it.
type Registry struct {
	// Now is the clock of Meta's times (nil: time.Now). Set it before the first write.
	Now func() time.Time

	b   Backend
	wmu sync.Mutex // serialises writes; held through the backend write and the watchers

	mu       sync.RWMutex // guards what follows; changed only by a writer holding wmu
	accounts table[Account, *Account]
	keys     table[Key, *Key]
	routes   table[Route, *Route]
	devices  table[Device, *Device]
	byHash   map[[32]byte]*Key
	watchers []func(Change)

	outbox    Outbox        // outbox.go; guarded by wmu
	pending   []OutboxEntry // the entries stored at Open and not removed since; guarded by wmu
	outboxSeq atomic.Uint64 // the last outbox entry ID (nextOutboxID)

	static   map[kindID]bool     // the config file's resources (static.go); guarded by wmu
	shadowed map[kindID]resource // stored resources a static one hides (static.go); guarded by wmu
}

// Open loads every resource from b.
func Open(ctx context.Context, b Backend) (*Registry, error) {
	if b == nil {
		return nil, fmt.Errorf("open registry: no backend: %w", ErrInvalid)
	}
	r := &Registry{
		b:        b,
		accounts: newTable[Account](),
		keys:     newTable[Key](),
		routes:   newTable[Route](),
		devices:  newTable[Device](),
		byHash:   make(map[[32]byte]*Key),
	}
	err := b.Load(ctx, func(kind Kind, id string, value []byte) error {
		if kind == outboxKind {
			r.pending = append(r.pending, OutboxEntry{ID: id, Value: value})
			return nil
		}
		v, err := decode(kind, value)
		if err != nil {
			return fmt.Errorf("%s %q: %w", kind, id, err)
		}
		if v.id() != id {
			return fmt.Errorf("%s %q: holds %q: %w", kind, id, v.id(), ErrInvalid)
		}
		r.putLocked(v) // nothing else has r yet
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	slices.SortFunc(r.pending, func(a, b OutboxEntry) int { return strings.Compare(a.ID, b.ID) })
	r.seedOutbox()
	return r, nil
}

func decode(kind Kind, value []byte) (resource, error) {
	var v resource
	switch kind {
	case Accounts:
		v = new(Account)
	case Keys:
		v = new(Key)
	case Routes:
		v = new(Route)
	case Devices:
		v = new(Device)
	default:
		return nil, fmt.Errorf("unknown kind: %w", ErrInvalid)
	}
	if err := json.Unmarshal(value, v); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return v, nil
}

// get returns a copy of t's id; the copy is made outside the lock (values never change).
func get[T any, P ptr[T]](r *Registry, t *table[T, P], id string) (T, bool) {
	r.mu.RLock()
	v, ok := t.get(id)
	r.mu.RUnlock()
	if !ok {
		var zero T
		return zero, false
	}
	return v.value(), true
}

// Watch registers fn, called with every committed change in commit order, from the goroutine
// that wrote it, after the write is in the index (another node's changes, on a Shared backend:
// from the goroutine that took them in, see Shared). fn must not call the registry's writes (it
// runs while the writer holds the registry's write lock); it may read the registry. The
// Change's value is fn's own copy.
func (r *Registry) Watch(fn func(Change)) {
	r.mu.Lock()
	r.watchers = append(r.watchers, fn)
	r.mu.Unlock()
}

// Account returns the account id.
func (r *Registry) Account(id string) (Account, bool) {
	return get(r, &r.accounts, id)
}

// ListAccounts returns a page of accounts by ID; o.Account selects that one account.
func (r *Registry) ListAccounts(o ListOptions) (page []Account, more bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.accounts.list(o)
}

// Key returns the key id.
func (r *Registry) Key(id string) (Key, bool) {
	return get(r, &r.keys, id)
}

// KeyByHash returns the key whose Hash is h, expired or not (the caller checks ExpiresAt). A
// key with a zero Hash is never found by it.
func (r *Registry) KeyByHash(h [32]byte) (Key, bool) {
	if h == ([32]byte{}) {
		return Key{}, false
	}
	r.mu.RLock()
	k, ok := r.byHash[h]
	r.mu.RUnlock()
	if !ok {
		return Key{}, false
	}
	return k.value(), true
}

// ListKeys returns a page of keys by ID.
func (r *Registry) ListKeys(o ListOptions) (page []Key, more bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.keys.list(o)
}

// Route returns the route name (names are case-sensitive).
func (r *Registry) Route(name string) (Route, bool) {
	return get(r, &r.routes, name)
}

// ListRoutes returns a page of routes by name.
func (r *Registry) ListRoutes(o ListOptions) (page []Route, more bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.routes.list(o)
}

// Device returns the device id, matched case-insensitively. It costs a map lookup under a
// shared lock and the copy of the device's tags and groups.
func (r *Registry) Device(id string) (Device, bool) {
	id = strings.ToUpper(id) // returns id itself when it has no lower case
	return get(r, &r.devices, id)
}

// ListDevices returns a page of devices by ID (upper case); o.After is matched
// case-insensitively.
func (r *Registry) ListDevices(o ListOptions) (page []Device, more bool) {
	o.After = strings.ToUpper(o.After)
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.devices.list(o)
}

// Create stores a new resource (*Account, *Key, *Route or *Device; its Meta is set here:
// CreatedAt, UpdatedAt, Revision 1, Source SourceAPI unless set); ErrExists if its ID is taken
// (by a stored or a static resource), or if a *Key's Hash is another key's. A device's ID is
// stored upper case. On success v holds what was stored. A Source of SourceConfig is refused
// with ErrStatic: config-file resources are never stored (see SetStatic).
func (r *Registry) Create(ctx context.Context, v any) error {
	return r.write(ctx, func(tx *writeTx) error { return tx.put(v, modeCreate, 0) })
}

// Update replaces a resource: ErrNotFound if it does not exist, ErrConflict if rev is not 0 and
// not its current revision, ErrStatic if the config file declares it. It sets UpdatedAt and the
// next revision; CreatedAt and Source stay (v's own Meta is ignored). On success v holds what
// was stored.
func (r *Registry) Update(ctx context.Context, v any, rev uint64) error {
	return r.write(ctx, func(tx *writeTx) error { return tx.put(v, modeUpdate, rev) })
}

// Delete removes a resource: ErrNotFound if it does not exist, ErrStatic if the config file
// declares it.
func (r *Registry) Delete(ctx context.Context, kind Kind, id string) error {
	return r.write(ctx, func(tx *writeTx) error { return tx.delete(kind, id) })
}

// Apply writes several creates, updates and deletes in one backend transaction (e.g. a key
// rotation: a new key and the old one's expiry): all of them or, on any error, none. Each
// change is *Account, *Key, *Route or *Device to put (created or replaced), or Deletion. A put
// whose Meta.Revision is 0 creates the resource or replaces it whatever its revision; one with
// a revision replaces it only at that revision (ErrConflict; ErrNotFound if it is gone). Meta
// is set as Create and Update set it, and written back into each put value. The changes apply
// in order: a later one sees the earlier ones, and the watchers get them in that order. The
// backend bounds a transaction: the store's takes a few hundred small resources (Badger's
// transaction limit); a larger Apply fails whole.
func (r *Registry) Apply(ctx context.Context, changes ...any) error {
	return r.write(ctx, func(tx *writeTx) error {
		for i, c := range changes {
			var err error
			switch c := c.(type) {
			case Deletion:
				err = tx.delete(c.Kind, c.ID)
			case *Deletion:
				err = tx.delete(c.Kind, c.ID)
			default:
				err = tx.put(c, modeApply, 0)
			}
			if err != nil {
				return fmt.Errorf("change %d: %w", i, err)
			}
		}
		return nil
	})
}

// Deletion is a delete in Apply.
type Deletion struct {
	Kind Kind
	ID   string
}

func (r *Registry) now() time.Time {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	return now().UTC().Round(0) // as it comes back from the backend: no monotonic reading, UTC
}

// putLocked puts v, which the index now owns, into the index; r.mu is held.
func (r *Registry) putLocked(v resource) {
	switch v := v.(type) {
	case *Account:
		r.accounts.put(v)
	case *Key:
		if old, ok := r.keys.get(v.ID); ok && r.byHash[old.Hash] == old {
			delete(r.byHash, old.Hash)
		}
		r.keys.put(v)
		if v.Hash != ([32]byte{}) {
			r.byHash[v.Hash] = v
		}
	case *Route:
		r.routes.put(v)
	case *Device:
		r.devices.put(v)
	}
}

// removeLocked removes kind/id from the index; r.mu is held.
func (r *Registry) removeLocked(kind Kind, id string) {
	switch kind {
	case Accounts:
		r.accounts.delete(id)
	case Keys:
		if old, ok := r.keys.get(id); ok && r.byHash[old.Hash] == old {
			delete(r.byHash, old.Hash)
		}
		r.keys.delete(id)
	case Routes:
		r.routes.delete(id)
	case Devices:
		r.devices.delete(id)
	}
}

// lookup returns kind/id from the index; the caller holds r.mu or r.wmu.
func (r *Registry) lookup(kind Kind, id string) (resource, bool) {
	var (
		v  resource
		ok bool
	)
	switch kind {
	case Accounts:
		v, ok = r.accounts.get(id)
	case Keys:
		v, ok = r.keys.get(id)
	case Routes:
		v, ok = r.routes.get(id)
	case Devices:
		v, ok = r.devices.get(id)
	}
	return v, ok
}

// write runs stage under the write lock, then commits what it staged: backend, index,
// watchers.
func (r *Registry) write(ctx context.Context, stage func(tx *writeTx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("registry write: %w", err)
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	for attempt := 1; ; attempt++ {
		err := r.writeOnce(ctx, stage)
		if !errors.Is(err, ErrStale) {
			return err
		}
		// Another node committed first: take its writes into the index (and to the watchers),
		// then stage again over it — a revision that moved now fails as ErrConflict.
		if attempt == maxStaleRetries {
			return fmt.Errorf("registry write: %d attempts, another node always first: %w", attempt, err)
		}
		if err := r.syncLocked(ctx); err != nil {
			return fmt.Errorf("registry write: %w", err)
		}
		// A write another node made may be refused-for before it can be read (JetStream checks
		// the expected sequence against what it is replicating, not only what it stored): from
		// the second attempt on, wait a little, longer each time, before staging again.
		if attempt > 1 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("registry write: %w", ctx.Err())
			case <-time.After(min(staleBackoff<<min(attempt-2, 6), maxStaleBackoff)):
			}
		}
	}
}

// maxStaleRetries bounds the attempts of one write against a Shared backend that other nodes
// keep writing first; staleBackoff, doubled per attempt up to maxStaleBackoff, spaces them.
const (
	maxStaleRetries = 100
	staleBackoff    = 2 * time.Millisecond
	maxStaleBackoff = 100 * time.Millisecond
)

// writeOnce stages and commits one attempt of a write; r.wmu is held.
func (r *Registry) writeOnce(ctx context.Context, stage func(tx *writeTx) error) error {
	tx := &writeTx{r: r, now: r.now()}
	if err := stage(tx); err != nil {
		return err
	}
	if len(tx.writes) == 0 {
		return nil
	}
	ops := make([]Op, len(tx.writes), len(tx.writes)+1)
	for i, w := range tx.writes {
		ops[i] = Op{Kind: w.kind, ID: w.id}
		if w.v != nil {
			data, err := json.Marshal(w.v)
			if err != nil {
				return fmt.Errorf("registry: encode %s %q: %w", w.kind, w.id, err)
			}
			ops[i].Value = data
		}
	}
	entry := r.stageOutbox(ctx, tx)
	if entry.ID != "" {
		ops = append(ops, Op{Kind: outboxKind, ID: entry.ID, Value: entry.Value})
	}
	if err := r.b.Write(ctx, ops); err != nil {
		if errors.Is(err, ErrStale) {
			return err
		}
		if len(tx.writes) == 1 {
			return fmt.Errorf("registry: write %s %q: %w", ops[0].Kind, ops[0].ID, err)
		}
		return fmt.Errorf("registry: write %d resources: %w", len(tx.writes), err)
	}
	r.mu.Lock()
	for _, w := range tx.writes {
		if w.v != nil {
			r.putLocked(w.v)
		} else {
			r.removeLocked(w.kind, w.id)
		}
	}
	watchers := r.watchers // appended to only: the first len stay as they are
	r.mu.Unlock()
	if entry.ID != "" {
		r.outbox.Committed(ctx, entry)
	}
	for _, w := range tx.writes {
		if w.out != nil {
			w.out() // the caller's value gets what was stored
		}
		for _, fn := range watchers {
			fn(w.change(tx.now))
		}
	}
	return nil
}
