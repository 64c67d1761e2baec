package registry

import (
	"github.com/google/btree"
)

// resource is what the index holds: *Account, *Key, *Route or *Device.
type resource interface {
	kind() Kind
	id() string
	account() string // "" for none (accounts: their own ID)
	meta() *Meta
	copyRes() resource
}

func (a *Account) kind() Kind        { return Accounts }
func (a *Account) id() string        { return a.ID }
func (a *Account) account() string   { return a.ID }
func (a *Account) meta() *Meta       { return &a.Meta }
func (a *Account) copyRes() resource { return a.clone() }

func (k *Key) kind() Kind        { return Keys }
func (k *Key) id() string        { return k.ID }
func (k *Key) account() string   { return k.Account }
func (k *Key) meta() *Meta       { return &k.Meta }
func (k *Key) copyRes() resource { return k.clone() }

func (r *Route) kind() Kind        { return Routes }
func (r *Route) id() string        { return r.Spec.Name }
func (r *Route) account() string   { return r.Spec.Account }
func (r *Route) meta() *Meta       { return &r.Meta }
func (r *Route) copyRes() resource { return r.clone() }

func (d *Device) kind() Kind        { return Devices }
func (d *Device) id() string        { return d.ID }
func (d *Device) account() string   { return d.Account }
func (d *Device) meta() *Meta       { return &d.Meta }
func (d *Device) copyRes() resource { return d.clone() }

// ptr is the pointer type of a resource type.
type ptr[T any] interface {
	*T
	resource
	clone() *T
	value() T // a copy, as clone, returned by value: no allocation of its own
}

// table is the index of one kind: by ID for lookups, ordered by ID for pages. Its values are
// never changed in place (see clone.go). It is guarded by the Registry's mu.
type table[T any, P ptr[T]] struct {
	byID  map[string]P
	order *btree.BTreeG[P]
}

func newTable[T any, P ptr[T]]() table[T, P] {
	return table[T, P]{
		byID:  make(map[string]P),
		order: btree.NewG(32, func(a, b P) bool { return a.id() < b.id() }),
	}
}

func (t *table[T, P]) get(id string) (P, bool) {
	v, ok := t.byID[id]
	return v, ok
}

func (t *table[T, P]) put(v P) {
	t.byID[v.id()] = v
	t.order.ReplaceOrInsert(v)
}

func (t *table[T, P]) delete(id string) {
	if v, ok := t.byID[id]; ok {
		delete(t.byID, id)
		t.order.Delete(v)
	}
}

// list returns copies of the values after o.After that pass o's filters, at most o.Limit, and
// whether more follow.
func (t *table[T, P]) list(o ListOptions) (page []T, more bool) {
	limit := o.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	var pivot T
	pv := P(&pivot)
	setID(pv, o.After)
	t.order.AscendGreaterOrEqual(pv, func(v P) bool {
		if v.id() == o.After {
			return true // After is exclusive
		}
		if o.Account != "" && v.account() != o.Account {
			return true
		}
		if o.Match != nil && !o.Match(v) {
			return true
		}
		if len(page) == limit {
			more = true
			return false
		}
		page = append(page, v.value())
		return true
	})
	return page, more
}

// DefaultLimit is the page size of a list whose ListOptions.Limit is 0.
const DefaultLimit = 100

// setID sets the identity of a pivot value for the ordered index.
func setID(v resource, id string) {
	switch v := v.(type) {
	case *Account:
		v.ID = id
	case *Key:
		v.ID = id
	case *Route:
		v.Spec.Name = id
	case *Device:
		v.ID = id
	}
}
