package registry

import (
	"context"
	"errors"
)

// Errors of the registry's writes.
var (
	ErrNotFound = errors.New("registry: not found")
	ErrExists   = errors.New("registry: already exists")
	ErrConflict = errors.New("registry: revision conflict")
)

// Registry is the in-memory index of every resource over a Backend. Reads never touch the
// backend; writes go to the backend first and to the index once it has them. It is safe for
// concurrent use; the values it returns are copies the caller may keep and change.
type Registry struct{}

// Open loads every resource from b.
func Open(ctx context.Context, b Backend) (*Registry, error) { panic("registry: not implemented") }

// Watch registers fn, called with every committed change in commit order, from the goroutine
// that wrote it, after the write is in the index. fn must not call the registry's writes.
func (r *Registry) Watch(fn func(Change)) { panic("registry: not implemented") }

// Accounts.
func (r *Registry) Account(id string) (Account, bool) { panic("registry: not implemented") }
func (r *Registry) ListAccounts(o ListOptions) (page []Account, more bool) {
	panic("registry: not implemented")
}

// Keys.
func (r *Registry) Key(id string) (Key, bool)        { panic("registry: not implemented") }
func (r *Registry) KeyByHash(h [32]byte) (Key, bool) { panic("registry: not implemented") }
func (r *Registry) ListKeys(o ListOptions) (page []Key, more bool) {
	panic("registry: not implemented")
}

// Routes.
func (r *Registry) Route(name string) (Route, bool) { panic("registry: not implemented") }
func (r *Registry) ListRoutes(o ListOptions) (page []Route, more bool) {
	panic("registry: not implemented")
}

// Devices. ids are matched case-insensitively.
func (r *Registry) Device(id string) (Device, bool) { panic("registry: not implemented") }
func (r *Registry) ListDevices(o ListOptions) (page []Device, more bool) {
	panic("registry: not implemented")
}

// Create stores a new resource (*Account, *Key, *Route or *Device; its Meta is set here:
// CreatedAt, UpdatedAt, Revision 1); ErrExists if its ID is taken.
func (r *Registry) Create(ctx context.Context, v any) error { panic("registry: not implemented") }

// Update replaces a resource: ErrNotFound if it does not exist, ErrConflict if rev is not 0 and
// not its current revision. It sets UpdatedAt and the next revision; CreatedAt and Source stay.
func (r *Registry) Update(ctx context.Context, v any, rev uint64) error {
	panic("registry: not implemented")
}

// Delete removes a resource: ErrNotFound if it does not exist.
func (r *Registry) Delete(ctx context.Context, kind Kind, id string) error {
	panic("registry: not implemented")
}

// Apply writes several creates, updates and deletes in one backend transaction (e.g. a key
// rotation: a new key and the old one's expiry). Each change is *Account, *Key, *Route or
// *Device to put (created or replaced), or Deletion.
func (r *Registry) Apply(ctx context.Context, changes ...any) error {
	panic("registry: not implemented")
}

// Deletion is a delete in Apply.
type Deletion struct {
	Kind Kind
	ID   string
}

// SetStatic puts the resources the config file declares (Source config) into the index, never
// into the backend: they shadow a stored resource of the same ID while the relay runs with that
// config. Call it once, after Open, before anything reads the registry.
func (r *Registry) SetStatic(routes []Route, devices []Device) { panic("registry: not implemented") }
