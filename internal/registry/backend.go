package registry

import (
	"context"
	"fmt"
	"strings"

	"github.com/fleetrelay/fleetrelay/internal/store"
)

// NewStoreBackend returns the one-node backend: the store's registry key space in Badger
// (g/<kind>/<id>, see internal/store), holding each resource as the registry encodes it (JSON).
// Every Write is one Badger transaction, durable when it returns. st must be open; the store
// need not be started, so the registry can be opened before the relay takes data.
func NewStoreBackend(st *store.Store) Backend { return storeBackend{st} }

type storeBackend struct{ st *store.Store }

var _ Backend = storeBackend{}

func (b storeBackend) Load(ctx context.Context, fn func(kind Kind, id string, value []byte) error) error {
	return b.st.LoadRegistry(func(key, value []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		kind, id, ok := strings.Cut(string(key), "/")
		if !ok {
			return fmt.Errorf("registry key %q: no kind: %w", key, ErrInvalid)
		}
		return fn(Kind(kind), id, value)
	})
}

func (b storeBackend) Write(ctx context.Context, ops []Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sops := make([]store.RegistryOp, len(ops))
	for i, op := range ops {
		sops[i] = store.RegistryOp{Kind: string(op.Kind), ID: op.ID, Value: op.Value}
	}
	return b.st.WriteRegistry(sops)
}
