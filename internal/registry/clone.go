package registry

import (
	"reflect"
	"slices"
)

// The index holds each resource as an immutable value: a write puts a new one in, nothing
// changes one in place. What goes in and what comes out is copied, slices and all, so the
// callers' values never share memory with the index.

func (a *Account) value() Account { return *a }

func (k *Key) value() Key {
	c := *k
	c.Rights = slices.Clone(k.Rights)
	return c
}

func (d *Device) value() Device {
	c := *d
	c.Tags = slices.Clone(d.Tags)
	c.Groups = slices.Clone(d.Groups)
	return c
}

func (a *Account) clone() *Account { c := a.value(); return &c }
func (k *Key) clone() *Key         { c := k.value(); return &c }
func (d *Device) clone() *Device   { c := d.value(); return &c }
func (r *Route) clone() *Route     { c := r.value(); return &c }

// value copies a route with deepCopy: a route's spec is a tree of pointers, slices and maps
// (auth, signing, retry, headers) that grows with every feature, and a copy written out by hand
// would silently share whatever field it forgot. Routes are read rarely (API requests, the
// control plane's apply), so reflection's cost does not matter.
func (r *Route) value() Route {
	c := *r
	deepCopy(reflect.ValueOf(&c.Spec).Elem(), reflect.ValueOf(&r.Spec).Elem())
	return c
}

// deepCopy sets dst, settable, to a copy of src that shares no pointer, slice or map with it.
// Unexported struct fields are copied as they are (shallow); the config types have none.
func deepCopy(dst, src reflect.Value) {
	switch src.Kind() {
	case reflect.Pointer:
		if src.IsNil() {
			dst.SetZero()
			return
		}
		p := reflect.New(src.Type().Elem())
		deepCopy(p.Elem(), src.Elem())
		dst.Set(p)
	case reflect.Slice:
		if src.IsNil() {
			dst.SetZero()
			return
		}
		s := reflect.MakeSlice(src.Type(), src.Len(), src.Len())
		for i := range src.Len() {
			deepCopy(s.Index(i), src.Index(i))
		}
		dst.Set(s)
	case reflect.Map:
		if src.IsNil() {
			dst.SetZero()
			return
		}
		m := reflect.MakeMapWithSize(src.Type(), src.Len())
		it := src.MapRange()
		for it.Next() {
			k := reflect.New(src.Type().Key()).Elem()
			deepCopy(k, it.Key())
			v := reflect.New(src.Type().Elem()).Elem()
			deepCopy(v, it.Value())
			m.SetMapIndex(k, v)
		}
		dst.Set(m)
	case reflect.Struct:
		dst.Set(src)
		for i := range src.NumField() {
			if dst.Field(i).CanSet() {
				deepCopy(dst.Field(i), src.Field(i))
			}
		}
	case reflect.Array:
		for i := range src.Len() {
			deepCopy(dst.Index(i), src.Index(i))
		}
	default: // scalars, strings (immutable), interfaces (none in the config types), funcs, chans
		dst.Set(src)
	}
}
