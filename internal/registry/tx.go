package registry

import (
	"fmt"
	"strings"
	"time"
)

type writeMode int

const (
	modeCreate writeMode = iota // must not exist
	modeUpdate                  // must exist
	modeApply                   // either; a revision given means "exists at it"
)

type kindID struct {
	kind Kind
	id   string
}

// staged is one write of a transaction.
type staged struct {
	kind Kind
	id   string
	v    resource // the new value, owned by the index once committed; nil: deleted
	out  func()   // writes the stored value back into the caller's, after the commit
	was  *Device  // a device's value before the write (the index's, never changed); nil: none
}

func (s *staged) change(at time.Time) Change {
	c := Change{Kind: s.kind, ID: s.id, Deleted: s.v == nil, At: at}
	if s.was != nil {
		c.Before = s.was.clone()
	}
	c.set(s.v)
	return c
}

// set points c at a copy of v, the resource's new value (nil: none).
func (c *Change) set(v resource) {
	switch v := v.(type) {
	case *Account:
		c.Account = v.clone()
	case *Key:
		c.Key = v.clone()
	case *Route:
		c.Route = v.clone()
	case *Device:
		c.Device = v.clone()
	}
}

// writeTx stages the writes of one transaction over the index, which does not change meanwhile
// (the registry's write lock is held).
type writeTx struct {
	r      *Registry
	now    time.Time
	writes []staged
	seen   map[kindID]resource // what the transaction wrote so far: nil when it deleted it
	hashes map[[32]byte]string // key hashes the transaction took ("": freed)
}

func (tx *writeTx) current(kind Kind, id string) (resource, bool) {
	if v, ok := tx.seen[kindID{kind, id}]; ok {
		return v, v != nil
	}
	return tx.r.lookup(kind, id)
}

// hashOwner returns the ID of the key holding h, seen through the transaction.
func (tx *writeTx) hashOwner(h [32]byte) string {
	if id, ok := tx.hashes[h]; ok {
		return id
	}
	if k, ok := tx.r.byHash[h]; ok {
		return k.ID
	}
	return ""
}

func (tx *writeTx) add(kind Kind, id string, v resource, out func()) {
	if tx.seen == nil {
		tx.seen = make(map[kindID]resource)
	}
	if old, ok := tx.current(kind, id); ok && kind == Keys {
		tx.setHash(old.(*Key).Hash, "")
	}
	if k, ok := v.(*Key); ok {
		tx.setHash(k.Hash, k.ID)
	}
	st := staged{kind: kind, id: id, v: v, out: out}
	if old, ok := tx.current(kind, id); ok && kind == Devices {
		st.was = old.(*Device)
	}
	tx.seen[kindID{kind, id}] = v
	tx.writes = append(tx.writes, st)
}

func (tx *writeTx) setHash(h [32]byte, id string) {
	if h == ([32]byte{}) {
		return
	}
	if tx.hashes == nil {
		tx.hashes = make(map[[32]byte]string)
	}
	tx.hashes[h] = id
}

// own copies the caller's value into one the index may own, with its identity normalised, and
// returns with it the function that writes the stored value back.
func own(v any) (res resource, out func(), err error) {
	switch v := v.(type) {
	case *Account:
		res, out = ownOf(v)
	case *Key:
		res, out = ownOf(v)
	case *Route:
		res, out = ownOf(v)
	case *Device:
		res, out = ownOf(v)
		if res != nil {
			d := res.(*Device)
			d.ID = strings.ToUpper(d.ID)
		}
	}
	if res == nil {
		return nil, nil, fmt.Errorf("%T is not a resource: %w", v, ErrInvalid)
	}
	return res, out, nil
}

func ownOf[T any, P ptr[T]](v P) (resource, func()) {
	if v == nil {
		return nil, nil
	}
	c := P(v.clone())
	return c, func() { *v = *c.clone() }
}

// put stages the creation or replacement of v (see Create, Update, Apply).
func (tx *writeTx) put(v any, mode writeMode, rev uint64) error {
	res, out, err := own(v)
	if err != nil {
		return err
	}
	kind, id, m := res.kind(), res.id(), res.meta()
	if id == "" {
		return fmt.Errorf("%s without an ID: %w", strings.TrimSuffix(string(kind), "s"), ErrInvalid)
	}
	if mode == modeApply {
		rev = m.Revision
	}
	cur, exists := tx.current(kind, id)
	switch {
	case exists && mode == modeCreate:
		return fmt.Errorf("%s %q: %w", kind, id, ErrExists)
	case exists && cur.meta().Source == SourceConfig:
		return fmt.Errorf("%s %q: %w", kind, id, ErrStatic)
	case !exists && (mode == modeUpdate || rev != 0):
		return fmt.Errorf("%s %q: %w", kind, id, ErrNotFound)
	case exists && rev != 0 && rev != cur.meta().Revision:
		return fmt.Errorf("%s %q at revision %d, not %d: %w", kind, id, cur.meta().Revision, rev, ErrConflict)
	case !exists && m.Source == SourceConfig:
		return fmt.Errorf("%s %q: config-file resources are never stored: %w", kind, id, ErrStatic)
	}
	if k, ok := res.(*Key); ok && k.Hash != ([32]byte{}) {
		if owner := tx.hashOwner(k.Hash); owner != "" && owner != id {
			return fmt.Errorf("key %q: its hash is key %q's: %w", id, owner, ErrExists)
		}
	}
	if exists {
		cm := cur.meta()
		m.CreatedAt, m.Source, m.Revision = cm.CreatedAt, cm.Source, cm.Revision+1
	} else {
		m.CreatedAt, m.Revision = tx.now, 1
		if m.Source == "" {
			m.Source = SourceAPI
		}
	}
	m.UpdatedAt = tx.now
	tx.add(kind, id, res, out)
	return nil
}

// delete stages the deletion of kind/id.
func (tx *writeTx) delete(kind Kind, id string) error {
	switch kind {
	case Devices:
		id = strings.ToUpper(id)
	case Accounts, Keys, Routes:
	default:
		return fmt.Errorf("delete %q of unknown kind %q: %w", id, kind, ErrInvalid)
	}
	cur, exists := tx.current(kind, id)
	switch {
	case !exists:
		return fmt.Errorf("%s %q: %w", kind, id, ErrNotFound)
	case cur.meta().Source == SourceConfig:
		return fmt.Errorf("%s %q: %w", kind, id, ErrStatic)
	}
	tx.add(kind, id, nil, nil)
	return nil
}
