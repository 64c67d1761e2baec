package actors

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// ErrRouteBusy is returned by RemoveRoute without discard when the route still holds messages
// or dead letters.
var ErrRouteBusy = errors.New("route still holds messages or dead letters")

// ErrNoRoute is returned for a route name the system does not run.
var ErrNoRoute = errors.New("no such route")

// RouteHoldings is what a route holds in the store: messages not yet delivered (or dead-lettered)
// and messages in its dead-letter list.
type RouteHoldings struct {
	Backlog     int `json:"backlog"`
	DeadLetters int `json:"dead_letters"`
}

// PutRoute adds a route (a name the system does not run) or updates one, without a restart:
// an updated route keeps its queue and dead letters; its batches in flight finish or are retried
// under the new settings, and each device's messages keep their order. Its routing (Filter,
// Account, Paused) applies to frames stored from the moment PutRoute returns. r.ID is set by the
// caller (the store's RouteID of r.Name) and must not change for a name. Never blocks.
func (s *System) PutRoute(r *Route) { panic("actors: not implemented") }

// RemoveRoute stops and removes the named route. Without discard it fails with ErrRouteBusy
// (and the counts) if the route holds a backlog or dead letters, leaving it running; with
// discard it removes them from the store and returns how many it discarded.
func (s *System) RemoveRoute(ctx context.Context, name string, discard bool) (RouteHoldings, error) {
	panic("actors: not implemented")
}

// Holdings is what the named route holds in the store; ok is false if the system does not run it.
func (s *System) Holdings(name string) (h RouteHoldings, ok bool) { panic("actors: not implemented") }

// SetDevice sets the metadata of device id (case-insensitive), nil removing it. It applies to
// frames stored from the moment it returns. Safe for concurrent use; never blocks.
func (s *System) SetDevice(id string, m *DeviceMeta) { panic("actors: not implemented") }

// DeviceState is a device's live state.
type DeviceState struct {
	Connected bool
	Remote    netip.AddrPort // the TCP peer or last UDP source; invalid if never seen
	LastSeen  time.Time      // the last frame received from it (zero: none since start)
	LastSeq   uint64         // the highest seq stored
}

// Device returns the live state of device id (case-insensitive).
func (s *System) Device(id string) DeviceState { panic("actors: not implemented") }
