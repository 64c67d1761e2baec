package actors

import (
	"strings"

	"github.com/fleetrelay/fleetrelay/codec/fields"
	"github.com/fleetrelay/fleetrelay/internal/store"
)

// DeviceMeta is what the relay knows about a device beyond what the device says itself (config
// fleet, or the API). Read-only once handed to the System: SetDevice replaces it whole.
type DeviceMeta struct {
	IMEI, ICCID               string // used when the device does not send its own
	Custom1, Custom2, Custom3 string
	Tags, Groups              []string
	Account                   string
	// TokenHash is the TokenHash of the device's token; zero: it has none.
	TokenHash [32]byte
}

// Filter selects the devices a route takes. A nil *Filter matches every device; otherwise a
// device matches if its IMEI is listed, or it has one of the tags, or is in one of the groups.
type Filter struct {
	IMEIs, Tags, Groups map[string]bool
}

// NewFilter returns the filter of the given lists, or nil if they are all empty.
func NewFilter(imeis, tags, groups []string) *Filter {
	if len(imeis)+len(tags)+len(groups) == 0 {
		return nil
	}
	set := func(l []string) map[string]bool {
		m := make(map[string]bool, len(l))
		for _, s := range l {
			m[s] = true
		}
		return m
	}
	return &Filter{IMEIs: set(imeis), Tags: set(tags), Groups: set(groups)}
}

// Match reports whether a device with this IMEI and metadata (nil: none) passes f.
func (f *Filter) Match(imei string, m *DeviceMeta) bool {
	if f == nil {
		return true
	}
	if imei != "" && f.IMEIs[imei] {
		return true
	}
	if m == nil {
		return false
	}
	for _, t := range m.Tags {
		if f.Tags[t] {
			return true
		}
	}
	for _, g := range m.Groups {
		if f.Groups[g] {
			return true
		}
	}
	return false
}

// meta returns the metadata of device id (case-insensitive), or nil. It takes no lock, and
// allocates nothing for an identity without lower-case letters.
func (s *System) meta(id string) *DeviceMeta {
	if m, ok := s.fleet.Load(strings.ToUpper(id)); ok {
		return m.(*DeviceMeta)
	}
	return nil
}

// routesFor returns the IDs of the routes that take a frame of a device with this IMEI and
// metadata (nil: none): the routes that are not paused, whose account (if any) is the device's,
// and whose filter it passes. The result may be shared: it must not be modified.
func (s *System) routesFor(imei string, m *DeviceMeta) []uint16 {
	t := s.table.Load()
	if !t.filtered {
		return t.allIDs
	}
	var ids []uint16
	for _, ref := range t.routes {
		if ref.r.takes(imei, m) {
			ids = append(ids, ref.r.ID)
		}
	}
	return ids
}

// takes reports whether r takes new frames of a device with this IMEI and metadata (nil: none).
func (r *Route) takes(imei string, m *DeviceMeta) bool {
	if r.Paused || r.Notifications {
		return false
	}
	if r.Account != "" && (m == nil || m.Account != r.Account) {
		return false
	}
	return r.Filter.Match(imei, m)
}

// values are the dynamic fields of a stored frame's device: its identity as stored, and the
// custom fields of its metadata.
func (s *System) values(f *store.Frame) fields.Values {
	if f.Notice {
		return fields.Values{} // no device's: its Device is an account (notify.go)
	}
	v := fields.Values{Serial: f.Serial, IMEI: f.IMEI, ICCID: f.ICCID}
	if m := s.meta(f.Device); m != nil {
		v.Custom1, v.Custom2, v.Custom3 = m.Custom1, m.Custom2, m.Custom3
	}
	return v
}
