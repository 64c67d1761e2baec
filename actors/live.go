package actors

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/fleetrelay/fleetrelay/codec/format"
)

// Live changes: routes and device metadata change while frames flow. The routing table is an
// immutable snapshot (routeTable) replaced whole under System.routesMu, and device metadata a
// sync.Map: the per-frame path (routesFor, meta, OnCommit) reads both without a lock.

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
// caller (the store's RouteID of r.Name) and must not change for a name; r is the system's from
// now on. A route added again after RemoveRoute with discard starts empty. It waits only for a
// RemoveRoute in progress; after Stop it does nothing.
//
// An update cancels the route's batches in flight (their messages go back to the front of their
// lanes, as after a shutdown), waits for them to end, then moves every queued message to its
// lane under the new settings and sends on with them.
func (s *System) PutRoute(r *Route) {
	if r.Format == nil {
		r.Format, _ = format.Lookup(format.NameEnvelope, format.Options{})
	}
	s.routesMu.Lock()
	defer s.routesMu.Unlock()
	if s.stopped {
		return
	}
	t := s.table.Load()
	routes := slices.Clone(t.routes)
	if old := t.byName[r.Name]; old != nil {
		routes[slices.Index(routes, old)] = &routeRef{r: r, pid: old.pid}
		s.table.Store(newTable(routes))
		s.root.Send(old.pid, &updateMsg{r: r})
		s.log.Info("route updated", "route", r.Name, "paused", r.Paused)
		return
	}
	s.opts.Journal.ReviveRoute(r.ID) // before any frame can carry its ID again
	routes = append(routes, s.spawnRoute(r))
	s.table.Store(newTable(routes))
	s.log.Info("route added", "route", r.Name, "paused", r.Paused)
}

// RemoveRoute stops and removes the named route. Without discard it fails with ErrRouteBusy
// (and the counts) if the route holds a backlog or dead letters, leaving it running; with
// discard it removes them from the store and returns how many it discarded.
//
// Once the route is out of the routing table, its batches in flight are cancelled (their
// messages are discarded, not sent again), its actor stops, and the store discards what it
// holds for it (store.Store.DiscardRoute): frames routed to it just before it left the table
// are discarded as they commit. Everything discarded is counted in
// fleetrelay_route_discarded_messages_total and logged; without discard that is only such
// late frames. ctx bounds the checks made before the route leaves the table; from then on the
// removal completes, which takes as long as its cancelled deliveries take to return.
func (s *System) RemoveRoute(ctx context.Context, name string, discard bool) (RouteHoldings, error) {
	s.routesMu.Lock()
	defer s.routesMu.Unlock()
	t := s.table.Load()
	ref := t.byName[name]
	if ref == nil || s.stopped {
		return RouteHoldings{}, fmt.Errorf("route %q: %w", name, ErrNoRoute)
	}
	if !discard {
		h, err := s.holdings(ref.r.ID)
		if err != nil {
			return h, fmt.Errorf("remove route %q: %w", name, err)
		}
		if h.Backlog > 0 || h.DeadLetters > 0 {
			return h, fmt.Errorf("remove route %q: %w (%d messages, %d dead letters)", name, ErrRouteBusy,
				h.Backlog, h.DeadLetters)
		}
	}
	if err := ctx.Err(); err != nil {
		return RouteHoldings{}, fmt.Errorf("remove route %q: %w", name, err)
	}
	s.table.Store(newTable(slices.DeleteFunc(slices.Clone(t.routes), func(x *routeRef) bool { return x == ref })))

	// Its actor cancels what is in flight and answers once nothing is (dead-letter writes
	// included, so none lands after the discard below).
	done := make(chan struct{})
	s.root.Send(ref.pid, &removeQuery{done: done})
	<-done
	_ = s.root.StopFuture(ref.pid).Wait()

	rm := s.opts.Metrics.route(name)
	rm.setQueued(0) // it holds nothing any more
	log := s.log.With("route", name)
	late := func(n int) {
		rm.discardedN(n)
		log.Warn("messages of a removed route discarded as they were stored", "messages", n)
	}
	records, dead, err := s.opts.Journal.DiscardRoute(ref.r.ID, late)
	rm.discardedN(records + dead)
	h := RouteHoldings{Backlog: records, DeadLetters: dead}
	if err != nil {
		log.Error("route removed; discarding what it held failed", "messages", records, "dead_letters", dead, "err", err)
		return h, fmt.Errorf("remove route %q: %w", name, err)
	}
	if records+dead > 0 {
		log.Warn("route removed; what it held was discarded", "messages", records, "dead_letters", dead)
	} else {
		log.Info("route removed")
	}
	return h, nil
}

// Holdings is what the named route holds in the store; ok is false if the system does not run it.
// Messages being replayed from the dead-letter list count in the backlog.
func (s *System) Holdings(name string) (h RouteHoldings, ok bool) {
	ref := s.table.Load().byName[name]
	if ref == nil {
		return h, false
	}
	h, err := s.holdings(ref.r.ID)
	if err != nil {
		s.log.Error("read route holdings", "route", name, "err", err)
	}
	return h, true
}

func (s *System) holdings(route uint16) (RouteHoldings, error) {
	j := s.opts.Journal
	replays, err := j.ReplayRecords(route)
	return RouteHoldings{Backlog: j.Backlog(route) + replays, DeadLetters: j.DeadLetterCount(route)}, err
}

// SetDevice sets the metadata of device id (case-insensitive), nil removing it. It applies to
// frames stored from the moment it returns (routing, and the identity fields a device does not
// send itself) and to every message rendered from then on (custom fields, tags, groups,
// account). Safe for concurrent use; never blocks. m must not be modified afterwards.
func (s *System) SetDevice(id string, m *DeviceMeta) {
	if m == nil {
		up := strings.ToUpper(id)
		s.fleet.Delete(up)
		s.mu.Lock()
		delete(s.gone, up) // only devices with metadata are remembered once gone
		s.mu.Unlock()
		return
	}
	s.fleet.Store(strings.ToUpper(id), m)
}

// SetSecrets sets which custom fields of every device's metadata are secrets: every message
// rendered from the moment it returns carries the set (format.Message.Secret), and the formats
// render those fields as empty, while the route's URL and headers ([CUSTOM1]) and its
// per-device auth still read them. Safe for concurrent use; never blocks.
func (s *System) SetSecrets(f format.Secrets) { s.secrets.Store(uint32(f)) }

// Secrets returns the set SetSecrets set.
func (s *System) Secrets() format.Secrets { return format.Secrets(s.secrets.Load()) }

// DeviceState is a device's live state.
type DeviceState struct {
	Connected bool
	Remote    netip.AddrPort // the TCP peer, last UDP source or NDJSON peer; invalid if never seen
	Transport string         // what Remote was seen on: TransportTCP, TransportUDP or TransportNDJSON
	LastSeen  time.Time      // the last frame received from it (zero: none since start)
	LastSeq   uint64         // the highest seq stored
}

// Device returns the live state of device id (case-insensitive). Connected means a TCP
// connection, or a UDP source heard from within the device idle time. Safe for concurrent use.
func (s *System) Device(id string) DeviceState {
	up := strings.ToUpper(id)
	s.mu.RLock()
	e := s.folded[up]
	g, gone := s.gone[up]
	s.mu.RUnlock()
	var st DeviceState
	var seen int64
	switch {
	case e != nil:
		st.Connected = e.connected.Load()
		if p := e.remote.Load(); p != nil {
			st.Remote, st.Transport = p.addr, p.transport
		}
		seen = e.lastSeen.Load()
		st.LastSeq = s.opts.Journal.LastSeq(e.id)
	case gone:
		st.Remote, st.Transport, seen = g.remote.addr, g.remote.transport, g.lastSeen
		st.LastSeq = s.opts.Journal.LastSeq(g.id)
	default:
		st.LastSeq = max(s.opts.Journal.LastSeq(id), s.opts.Journal.LastSeq(up))
	}
	if seen != 0 {
		st.LastSeen = time.Unix(0, seen)
	}
	return st
}
