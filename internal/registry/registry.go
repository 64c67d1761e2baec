// Package registry owns the control plane's resources — accounts, API keys, routes and devices —
// as the relay knows them while it runs: an in-memory index over a Backend that persists them.
// On one node the backend is the store's registry key space in Badger (NewStoreBackend); a later
// backend keeps them in a distributed store for several nodes, behind the same small interface.
//
// The registry checks nothing but identity and revisions: what a resource may hold (a route's
// settings, a key's rights) is checked by its callers before they write it.
//
// A backend holds each resource as its JSON encoding (the json tags below; a route's spec with
// config.Route's Go field names, secrets as config.Secret's encoded value, so a stored route
// keeps its secrets: the config types must not get JSON methods that drop or redact anything).
package registry

import (
	"context"
	"time"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

// Kind names a resource type; it is also the resource's path segment in the API.
type Kind string

// Resource kinds.
const (
	Accounts Kind = "accounts"
	Keys     Kind = "keys"
	Routes   Kind = "routes"
	Devices  Kind = "devices"
)

// Source says who owns a resource: the API (it may be changed through it) or the config file (it
// is read-only through the API).
type Source string

// Sources.
const (
	SourceAPI    Source = "api"
	SourceConfig Source = "config"
)

// Meta is what every resource carries.
type Meta struct {
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Revision counts the resource's writes (1 at creation): a write with a stale revision fails
	// with ErrConflict (optimistic concurrency, If-Match in the API).
	Revision uint64 `json:"revision"`
	Source   Source `json:"source"`
}

// Account is a tenant: keys, routes and devices may belong to one.
type Account struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Meta
}

// Key is an API key. The key itself is never stored: Hash is its SHA-256.
type Key struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Account string   `json:"account,omitempty"` // "" for a global key
	Rights  []string `json:"rights"`            // "resource:action", wildcards allowed
	Preset  string   `json:"preset,omitempty"`  // the preset the rights came from, if any
	// Hash is stored with the key (the backend's JSON needs it to authenticate after a restart);
	// API responses must not show it.
	Hash [32]byte `json:"hash"`
	// ExpiresAt ends the key's validity (zero: never). Rotation sets it on the old key.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Bootstrap marks the super key of admin.bootstrap_key or <data_dir>/admin.key: not listed
	// as a resource one can delete.
	Bootstrap bool `json:"bootstrap,omitempty"`
	Meta
}

// Route is a route created through the API (or, with Source config, one of the config file's).
// Spec holds the route's settings as the config file would, secrets included as values.
type Route struct {
	Spec config.Route `json:"spec"`
	Meta
}

// Name is the route's identity.
func (r *Route) Name() string { return r.Spec.Name }

// Device is one device's metadata. ID is upper case (identities are case-insensitive).
type Device struct {
	ID      string   `json:"id"`
	IMEI    string   `json:"imei,omitempty"`
	ICCID   string   `json:"iccid,omitempty"`
	Custom1 string   `json:"custom1,omitempty"`
	Custom2 string   `json:"custom2,omitempty"`
	Custom3 string   `json:"custom3,omitempty"`
	Tags    []string `json:"tags,omitempty"`
	Groups  []string `json:"groups,omitempty"`
	Account string   `json:"account,omitempty"`
	// TokenHash is the SHA-256 of the device's token (zero: it has none). The token itself is
	// never stored; API responses must not show the hash either.
	TokenHash [32]byte `json:"token_hash,omitzero"`
	Meta
}

// Op is one write of a Backend transaction: Value nil deletes the key.
type Op struct {
	Kind  Kind
	ID    string
	Value []byte
}

// Backend persists the registry's resources. Write applies its ops atomically and durably before
// it returns. Implementations are safe for concurrent use.
type Backend interface {
	// Load calls fn for every stored resource and outbox entry (kind "outbox"), in any order.
	Load(ctx context.Context, fn func(kind Kind, id string, value []byte) error) error
	Write(ctx context.Context, ops []Op) error
}

// Change is one committed change, handed to the watchers in commit order. Exactly one of the
// resource pointers is set (the new value), or none with Deleted (then Kind and ID say what).
type Change struct {
	Kind    Kind
	ID      string
	Deleted bool
	Account *Account
	Key     *Key
	Route   *Route
	Device  *Device
	// Before is the device as it was before the change (Kind Devices; nil: it was created).
	Before *Device
	// At is the time of the write (the UpdatedAt it set; for a deletion, when it was deleted).
	At time.Time
}

// ListOptions select a page of a list: resources with an ID after After (the opaque cursor of
// the previous page, decoded by the caller), at most Limit of them (0: 100), those of Account
// only when it is set (an account: that one; a key, route or device: those that belong to it),
// and only those Match accepts when it is set. Match is called with the index's own value
// (*Account, *Key, *Route or *Device) under the registry's read lock: it must neither keep nor
// change it, nor call the registry's writes.
type ListOptions struct {
	After   string
	Limit   int
	Account string
	Match   func(any) bool
}
