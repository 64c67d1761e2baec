package control

import (
	"context"
	"errors"
	"fmt"

	"github.com/fleetrelay/fleetrelay/actors"
	"github.com/fleetrelay/fleetrelay/internal/config"
	"github.com/fleetrelay/fleetrelay/internal/registry"
)

// ReloadResult says what a Reload changed.
type ReloadResult struct {
	// Kept names the routes dropped from the file that still hold messages or dead letters:
	// they keep running with the settings they had (deliver or purge what they hold, or delete
	// them through the API with force, then reload again).
	Kept []string
}

// Reload makes routes and fleet the config file's (the file was read again): routes added or
// changed run with their new settings at once (a changed route keeps its queue, as an update
// through the API does), devices added, changed or dropped are applied to the actors and
// notified like the API's, and a stored resource that a dropped one shadowed comes back. A
// route dropped from the file is removed only if it holds nothing; otherwise it is kept (see
// ReloadResult). routes and fleet must have been validated (config.Parse) and the routes
// compiled; fleet tokens are hashed here.
func (c *Control) Reload(ctx context.Context, routes []config.Route, fleet []config.Device) (ReloadResult, error) {
	var res ReloadResult
	static, devs, err := staticOf(routes, fleet)
	if err != nil {
		return res, err
	}
	c.writeMu.Lock() // no API write checks the registry meanwhile
	defer c.writeMu.Unlock()
	declared := make(map[string]bool, len(static))
	for i := range static {
		declared[static[i].Name()] = true
	}
	for o := (registry.ListOptions{Limit: 1000}); ; {
		page, more := c.reg.ListRoutes(o)
		for i := range page {
			rt := &page[i]
			if rt.Source != registry.SourceConfig || declared[rt.Name()] {
				continue
			}
			h, err := c.sys.RemoveRoute(ctx, rt.Name(), false)
			switch {
			case errors.Is(err, actors.ErrRouteBusy):
				c.log.Warn("route dropped from the config file still holds messages: kept running",
					"route", rt.Name(), "backlog", h.Backlog, "dead_letters", h.DeadLetters)
				res.Kept = append(res.Kept, rt.Name())
				static = append(static, *rt)
			case err != nil && !errors.Is(err, actors.ErrNoRoute):
				return res, fmt.Errorf("route %q: %w", rt.Name(), err)
			}
		}
		if !more || len(page) == 0 {
			break
		}
		o.After = page[len(page)-1].Name()
	}
	if err := c.reg.ReplaceStatic(ctx, static, devs); err != nil {
		return res, err
	}
	return res, nil
}
