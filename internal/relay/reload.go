package relay

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	"github.com/fleetrelay/fleetrelay/internal/config"
)

// Reload applies a config file read again (LoadConfig): its routes and fleet replace the
// file's previous ones while the relay runs (control.Control.Reload: routes added, changed or
// dropped, devices likewise, notified like the API's changes). The new routes are compiled
// first: a route that does not compile fails the whole reload, which then changes nothing.
// Every other setting takes effect at the next restart only: restart names the sections that
// differ from the running ones (e.g. "devices", "delivery"), and kept the routes dropped from the
// file that still hold messages, which keep running. Reload is safe to call while the relay
// serves; reloads are serialised.
func (r *Relay) Reload(ctx context.Context, cfg *config.Config) (restart, kept []string, err error) {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	if _, err := Preflight(cfg); err != nil { // resolves cfg; compiles every enabled route
		return nil, nil, fmt.Errorf("reload: %w", err)
	}
	restart = changedSections(r.cfg, cfg)
	res, err := r.control.Reload(ctx, cfg.Routes, cfg.Fleet)
	if err != nil {
		return restart, nil, fmt.Errorf("reload: %w", err)
	}
	r.cfg.Routes, r.cfg.Fleet = cfg.Routes, cfg.Fleet
	r.log.Info("config reloaded", "routes", len(cfg.Routes), "fleet", len(cfg.Fleet), "kept_routes", res.Kept,
		"restart_needed_for", restart)
	return restart, res.Kept, nil
}

// changedSections names the top-level settings of b that differ from a's, routes and fleet
// aside (by their YAML names).
func changedSections(a, b *config.Config) []string {
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	var out []string
	for i := range va.NumField() {
		name, _, _ := strings.Cut(va.Type().Field(i).Tag.Get("yaml"), ",")
		if name == "routes" || name == "fleet" {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, name)
		}
	}
	return out
}
