// Package control owns live apply: it keeps the actor system in step with the registry's routes
// and devices while the relay runs. At start it puts the config file's routes and fleet into the
// registry (read-only there), compiles and runs the routes stored through the API and hands the
// actors the stored devices' metadata; then it follows every change the registry commits
// (route.Compile → actors.System.PutRoute / RemoveRoute, SetDevice), and turns each write's
// device changes into notification messages for the notification routes, through the
// registry's outbox (notify.go). It also
// implements the writes of the API's route and device resources — decoding and checking a body
// as the config file's routes are checked, the rules on secrets, accounts and the config file's
// ownership, what a route holds before it goes — and the views the API shows of them. It knows
// no HTTP.
package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/codec/format"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/registry"
	"github.com/fleetrelay/fleetrelay/internal/route"
)

// RouteIDs names routes in the store (implemented by *store.Store).
type RouteIDs interface {
	RouteID(name string) (uint16, error)
}

// Options are what a Control is built with.
type Options struct {
	Registry *registry.Registry
	System   *actors.System
	Store    RouteIDs
	// Deps builds the API's routes (the relay's delivery clients, metrics and logger).
	Deps route.Deps
	// Routes and Fleet are the config file's (resolved): put into the registry as its own, read-only
	// through the API. The relay runs the enabled routes itself (actors.Options.Routes), as before.
	Routes []config.Route
	Fleet  []config.Device
	// SecretFields are the config's devices.secret_fields (validated): with the key_field of
	// every azure_iot_hub route, the custom fields that are secrets (secrets.go).
	SecretFields []string
	Logger       *slog.Logger
}

// Control applies the registry's routes and devices to the actor system. Its methods are safe
// for concurrent use; writes are serialised.
type Control struct {
	reg  *registry.Registry
	sys  *actors.System
	ids  RouteIDs
	deps route.Deps
	log  *slog.Logger

	secretCfg format.Secrets // devices.secret_fields (secrets.go)

	writeMu sync.Mutex // one write of a route or device at a time (check, then write)
	notices *notices   // notify.go

	mu      sync.Mutex
	status  map[string]RouteStatus // by route name
	applied map[string]bool        // the API's routes put into the actor system, by name
}

// RouteStatus is whether a route runs, and why not.
type RouteStatus struct {
	// Running: the route takes and delivers messages.
	Running bool `json:"running"`
	// Error is why the route does not run (it did not compile), or why its last change did not
	// apply (it runs with the settings before it).
	Error string `json:"error,omitempty"`
}

// New puts the config's routes and fleet into the registry, runs the stored routes and hands the
// stored devices to the actors, then follows the registry's changes. A stored route that no longer
// compiles (a TLS file gone) is logged and reported by its status; it does not fail New. Call it
// after the actor system is built and before the store starts.
func New(opts Options) (*Control, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Control{reg: opts.Registry, sys: opts.System, ids: opts.Store, deps: opts.Deps,
		log: log.With("component", "control"), status: map[string]RouteStatus{}, applied: map[string]bool{}}

	static, devs, err := staticOf(opts.Routes, opts.Fleet)
	if err != nil {
		return nil, err
	}
	for _, rc := range opts.Routes {
		c.status[rc.Name] = RouteStatus{Running: rc.IsEnabled()}
	}
	c.reg.SetStatic(static, devs)
	for _, f := range opts.SecretFields {
		c.secretCfg |= format.SecretOf(f)
	}
	c.updateSecrets()

	for o := (registry.ListOptions{Limit: 1000}); ; {
		page, more := c.reg.ListRoutes(o)
		for i := range page {
			if page[i].Source != registry.SourceConfig {
				c.applyRoute(&page[i])
			}
		}
		if !more || len(page) == 0 {
			break
		}
		o.After = page[len(page)-1].Name()
	}
	for o := (registry.ListOptions{Limit: 1000}); ; {
		page, more := c.reg.ListDevices(o)
		for i := range page {
			if page[i].Source != registry.SourceConfig {
				c.sys.SetDevice(page[i].ID, deviceMeta(&page[i]))
			}
		}
		if !more || len(page) == 0 {
			break
		}
		o.After = page[len(page)-1].ID
	}
	c.reg.Watch(c.apply)
	c.notices = &notices{c: c, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	c.reg.SetOutbox(c.notices) // notify.go
	return c, nil
}

// Start sends the notifications a crash left (stored with their device changes, not yet in the
// journal) and starts removing the ones the journal has. Call it once the store is started.
func (c *Control) Start() { c.notices.start() }

// Close stops what Start started. Call it before the store closes.
func (c *Control) Close() { c.notices.close() }

// staticOf is the config file's routes and fleet as the registry holds them.
func staticOf(routes []config.Route, fleet []config.Device) ([]registry.Route, []registry.Device, error) {
	static := make([]registry.Route, 0, len(routes))
	for _, rc := range routes {
		static = append(static, registry.Route{Spec: rc, Meta: registry.Meta{Source: registry.SourceConfig, Revision: 1}})
	}
	devs := make([]registry.Device, 0, len(fleet))
	for i, d := range fleet {
		h, err := FleetTokenHash(&d)
		if err != nil {
			return nil, nil, fmt.Errorf("fleet[%d].token: %w", i, err)
		}
		devs = append(devs, registry.Device{ID: strings.ToUpper(d.ID), IMEI: d.IMEI, ICCID: d.ICCID,
			Custom1: d.Custom1, Custom2: d.Custom2, Custom3: d.Custom3, Tags: d.Tags, Groups: d.Groups, Account: d.Account,
			TokenHash: h, Meta: registry.Meta{Source: registry.SourceConfig, Revision: 1}})
	}
	return static, devs, nil
}

// Registry is the registry c applies.
func (c *Control) Registry() *registry.Registry { return c.reg }

// apply is the registry's watcher: it runs on the writer's goroutine, in commit order.
func (c *Control) apply(ch registry.Change) {
	if ch.Kind == registry.Routes {
		c.updateSecrets() // before a new key field's route runs
	}
	switch {
	case ch.Kind == registry.Routes && ch.Deleted:
		c.removeRoute(ch.ID)
	case ch.Route != nil:
		c.applyRoute(ch.Route)
	case ch.Kind == registry.Devices && ch.Deleted:
		c.sys.SetDevice(ch.ID, nil)
	case ch.Device != nil:
		c.sys.SetDevice(ch.Device.ID, deviceMeta(ch.Device))
	}
}

// applyRoute compiles rt and puts it into the actor system (added, or updated in place: its
// queue and dead letters kept). If it does not compile, a running route keeps its settings
// and the status says why.
func (c *Control) applyRoute(rt *registry.Route) {
	name := rt.Name()
	spec := resolved(rt.Spec, &c.deps.Delivery)
	comp, err := route.Compile(spec, "", c.deps)
	if err == nil {
		var id uint16
		if id, err = c.ids.RouteID(name); err == nil {
			comp.Route.ID = id
			for _, w := range comp.Warnings {
				c.log.Warn("route TLS: "+strings.TrimPrefix(w, "."), "route", name)
			}
			c.sys.PutRoute(comp.Route)
			c.mu.Lock()
			c.applied[name] = true
			c.mu.Unlock()
			c.setStatus(name, RouteStatus{Running: spec.IsEnabled()})
			c.log.Info("route applied", "route", name, "revision", rt.Revision, "enabled", spec.IsEnabled())
			return
		}
	}
	_, running := c.sys.Holdings(name)
	c.setStatus(name, RouteStatus{Running: running, Error: strings.TrimPrefix(err.Error(), "invalid configuration: ")})
	c.log.Error("route not applied", "route", name, "revision", rt.Revision, "running", running, "err", err)
}

// removeRoute stops a deleted route. The API's delete has already removed it from the actors
// (refusing while it held messages, unless forced); a delete that arrives otherwise discards
// what the route holds, as the write that made it decided.
func (c *Control) removeRoute(name string) {
	c.mu.Lock()
	delete(c.status, name)
	delete(c.applied, name)
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := c.sys.RemoveRoute(ctx, name, true)
	switch {
	case err == nil:
		c.log.Info("route removed", "route", name, "discarded_backlog", h.Backlog, "discarded_dead_letters", h.DeadLetters)
	case !errors.Is(err, actors.ErrNoRoute):
		c.log.Error("route removal", "route", name, "err", err)
	}
}

func (c *Control) setStatus(name string, s RouteStatus) {
	c.mu.Lock()
	c.status[name] = s
	c.mu.Unlock()
}

// Applied returns the names of the API's routes the actor system runs (paused ones included),
// sorted.
func (c *Control) Applied() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.applied))
}

// Status is the named route's status.
func (c *Control) Status(name string) RouteStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status[name]
}

// resolved is spec with what it inherits from d filled in, sharing nothing that Resolve writes.
func resolved(spec config.Route, d *config.Delivery) config.Route {
	if spec.Retry != nil {
		r := *spec.Retry
		spec.Retry = &r
	}
	spec.Resolve(d)
	return spec
}

// deviceMeta is what the actors know of a device.
func deviceMeta(d *registry.Device) *actors.DeviceMeta {
	return &actors.DeviceMeta{IMEI: d.IMEI, ICCID: d.ICCID, Custom1: d.Custom1, Custom2: d.Custom2, Custom3: d.Custom3,
		Tags: d.Tags, Groups: d.Groups, Account: d.Account, TokenHash: d.TokenHash}
}

// RouteRef names a route for the dead-letter endpoints: its ID in the store and its account.
func (c *Control) RouteRef(name string) (id uint16, account string, ok bool) {
	rt, ok := c.reg.Route(name)
	if !ok {
		return 0, "", false
	}
	id, err := c.ids.RouteID(name)
	if err != nil {
		return 0, "", false
	}
	return id, rt.Spec.Account, true
}
