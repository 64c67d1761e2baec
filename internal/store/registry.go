package store

import (
	"fmt"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
)

// The control plane's resources (internal/registry: accounts, API keys, routes and devices)
// live in a key space of their own:
//
//	g/<kind>/<id>   one resource; the value is the registry's encoding, which the store does
//	                not interpret
//
// The registry reads them all once at start (LoadRegistry) and writes them in small
// transactions (WriteRegistry), each as durable when it returns as an acknowledged frame: on
// disk for a crash of the process, fsynced for a power loss with Options.Sync — a resource
// written through the API does not come back older after a crash the data would survive.
var prefixRegistry = []byte("g/")

// RegistryOp is one write of WriteRegistry: it sets Kind/ID to Value, or deletes it when Value
// is nil. Kind must be non-empty without '/'; ID must be non-empty.
type RegistryOp struct {
	Kind  string
	ID    string
	Value []byte
}

// LoadRegistry calls fn for every registry key, in key order, with the key without its
// prefix ("<kind>/<id>") and the value; both are valid only during the call. It stops at fn's
// first error and returns it (wrapped). It works on an opened store, started or not; ErrClosed after Close.
func (s *Store) LoadRegistry(fn func(key, value []byte) error) error {
	return s.loadSpace(prefixRegistry, "registry", fn)
}

func (s *Store) loadSpace(prefix []byte, what string, fn func(key, value []byte) error) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.dbClosed {
		return ErrClosed
	}
	err := s.db.View(func(txn *badger.Txn) error {
		return scan(txn, prefix, func(k, v []byte) error {
			return fn(k[len(prefix):], v)
		})
	})
	if err != nil {
		return fmt.Errorf("load %s: %w", what, err)
	}
	return nil
}

// WriteRegistry applies ops in one Badger transaction: all of them or none (a transaction
// larger than Badger takes — about 15% of its memtable, see badgerOptions — fails whole). When
// it returns the transaction is in Badger's log: it survives a crash of the process, and with
// Options.Sync (Badger's SyncWrites) a power loss, the promise an acknowledged frame has. An
// fsync of its own per write would make every device update wait for the disk and compete with
// the group commits of the data path for it (in the device-churn benchmark, 1,000 device
// updates a second asked under full ingest load were answered at ≈460 a second with an fsync
// each, at 1,010 without). Like the other writes of
// delivery state it may use free space down to the store's reserve (ErrDiskFull below it). It
// returns ErrClosed after Close. Safe for concurrent use; it works before Start.
func (s *Store) WriteRegistry(ops []RegistryOp) error {
	return s.writeSpace(prefixRegistry, "registry", ops)
}

func (s *Store) writeSpace(prefix []byte, what string, ops []RegistryOp) error {
	if len(ops) == 0 {
		return nil
	}
	var n int64
	for _, op := range ops {
		if op.Kind == "" || strings.IndexByte(op.Kind, '/') >= 0 || op.ID == "" {
			return fmt.Errorf("write %s: key %q/%q: kind must be non-empty without '/', id non-empty", what, op.Kind, op.ID)
		}
		n += int64(len(prefix) + len(op.Kind) + 1 + len(op.ID) + len(op.Value))
	}
	if err := s.diskRoom(n, false); err != nil { // disk.go
		return fmt.Errorf("write %s: %w", what, err)
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.dbClosed {
		return ErrClosed
	}
	defer s.badgerWrite()() // badgerrace.go
	err := s.db.Update(func(txn *badger.Txn) error {
		for _, op := range ops {
			key := spaceKey(prefix, op.Kind, op.ID)
			var err error
			if op.Value == nil {
				err = txn.Delete(key)
			} else {
				err = txn.Set(key, op.Value) // read by the commit below, before we return
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write %s (%d keys): %w", what, len(ops), err)
	}
	return nil
}

func spaceKey(prefix []byte, kind, id string) []byte {
	k := make([]byte, 0, len(prefix)+len(kind)+1+len(id))
	k = append(append(append(append(k, prefix...), kind...), '/'), id...)
	return k
}
